"""A node presenting a host key halab did not give it is "host key mismatch", never "unreachable"."""

from __future__ import annotations

from halab.errors import HalabError
from halab.lab.lifecycle import HOST_KEY_MISMATCH, ssh_state
from halab.lab.ssh import HostKeyMismatch, SSHUnavailable


class _Result:
    rc = 0


class _SSH:
    """Stands in for NodeSSH: raises what the real one raises for each case."""

    def __init__(self, exc: HalabError | None):
        self.exc = exc
        self.connect_timeout = 10.0

    def run(self, ip: str, command: str, timeout: float = 0) -> _Result:
        if self.exc is not None:
            raise self.exc
        return _Result()


def test_ssh_state_names_host_key_mismatch() -> None:
    assert ssh_state(_SSH(HostKeyMismatch("10.0.0.1: refusing to connect")), "10.0.0.1") == (
        False, HOST_KEY_MISMATCH)
    assert ssh_state(_SSH(SSHUnavailable("no route")), "10.0.0.1") == (False, "unreachable")
    assert ssh_state(_SSH(None), "10.0.0.1") == (True, "ok")


def test_session_view_shows_host_key_mismatch_as_health() -> None:
    from halab.lab.config import parse_config
    from halab.live.session import HOST_KEY_MISMATCH as VIEW_STATE
    from halab.live.session import LabSession

    cfg = parse_config("name: t\nlibvirt_uri: test:///default\n", "lab.yaml", host_mem_mib=1 << 20)
    session = LabSession.open(cfg)
    session.record_probe("api-1", health="ok", host_key_mismatch=True)
    view = {n.name: n for n in session.snapshot().nodes}
    session.close()
    assert view["api-1"].health == VIEW_STATE == HOST_KEY_MISMATCH
