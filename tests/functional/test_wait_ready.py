"""`up`'s wait for the nodes converges instead of failing forever: a failed role setup is run again
(it is idempotent). libvirt is test:///default; SSH is a stand-in that answers as a node whose setup
failed once and then passed."""

from __future__ import annotations

import libvirt
import pytest

from halab.errors import HalabError
from halab.lab import lifecycle
from halab.lab.config import parse_config
from halab.lab.virt import ownership_xml

CFG = parse_config("name: wr\nlibvirt_uri: test:///default\nroles: {api: {count: 1}}\n", "lab.yaml",
                   host_mem_mib=1 << 20)
FAILED = "NOT-READY\nstep=wait for the AMQP port\nexit=1\nHALAB-FAILED\nHALAB-STEP halab: wait\n{}\n"


class _Res:
    def __init__(self, stdout: str):
        self.rc, self.stdout, self.stderr = 0, stdout, ""


class NodeSetup:
    """Every node ready, except ``bad``, whose setup fails ``fails`` times until run again."""

    def __init__(self, bad: str, fails: int):
        self.bad, self.fails, self.reruns = bad, fails, 0
        self.key_file, self.known_hosts = "k", "kh"

    def run(self, ip: str, command: str, timeout: float = 0) -> _Res:
        if command == lifecycle.RERUN_SETUP:
            self.reruns += 1
            return _Res("")
        if ip == self.bad and self.reruns < self.fails:
            return _Res(FAILED)
        return _Res("instance-id=x\n")

    def close(self) -> None:
        pass


@pytest.fixture
def lab(monkeypatch):
    c = libvirt.open("test:///default")
    for n in CFG.nodes():
        xml = (f"<domain type='test'><name>{CFG.domain_name(n)}</name><memory>65536</memory><vcpu>1</vcpu>"
               f"<os><type arch='x86_64'>hvm</type></os><metadata>{ownership_xml(CFG.name, n.name, n.role)}"
               "</metadata></domain>")
        c.defineXML(xml).create()
    monkeypatch.setattr(lifecycle.time, "sleep", lambda s: None)
    yield c
    for d in c.listAllDomains(0):
        if d.name().startswith("wr-"):
            d.destroy()
            d.undefine()
    c.close()


def test_a_failed_role_setup_is_run_again_and_the_node_becomes_ready(lab, monkeypatch) -> None:
    mq = CFG.node("mq-1")
    ssh = NodeSetup(mq.ip, fails=1)
    monkeypatch.setattr(lifecycle, "lab_ssh", lambda cfg: ssh)
    lines: list[str] = []
    ready = lifecycle.wait_ready(CFG, lifecycle._Clock(lambda p: lines.append(p.message)), stall_s=60)
    assert set(ready) == {n.name for n in CFG.nodes()}
    assert ssh.reruns == 1
    assert any("mq-1: role setup failed (step=wait for the AMQP port exit=1); running it again (1/2)" in ln
               for ln in lines)


def test_a_setup_that_keeps_failing_gives_up_naming_rebuild(lab, monkeypatch) -> None:
    ssh = NodeSetup(CFG.node("mq-1").ip, fails=99)
    monkeypatch.setattr(lifecycle, "lab_ssh", lambda cfg: ssh)
    with pytest.raises(HalabError, match=r"mq-1: role setup failed 3 times.*lab.py rebuild mq-1"):
        lifecycle.wait_ready(CFG, lifecycle._Clock(None), stall_s=60)
    assert ssh.reruns == lifecycle.SETUP_RERUNS
