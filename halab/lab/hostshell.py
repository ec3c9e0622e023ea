"""The few commands halab runs on a lab's hosts (the tunnel's `ip` and `bridge`), and nothing else.

On the machine halab runs on they run directly; on a remote host through the user's own ssh to the
``ssh:`` target lab.yaml names (or the one a ``qemu+ssh`` URI already names). The argv is always
halab's own — device names from the lab's hash, addresses lab.yaml validated — so nothing in a lab
file can make halab run a program: lab.yaml picks *where*, never *what*.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from halab.errors import HalabError
from halab.lab.config import HostSpec

# The only programs halab runs on a host.
PROGRAMS = ("ip", "bridge")
TIMEOUT_S = 30.0


class HostCommandError(HalabError):
    """A command on a host failed; the message names the host, the command and its error."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def argv_for(host: HostSpec, argv: list[str]) -> list[str]:
    """What actually runs here for ``argv`` on ``host``."""
    if not argv or argv[0] not in PROGRAMS:
        raise ValueError(f"halab runs only {', '.join(PROGRAMS)} on a host (got {argv[:1]})")
    return list(argv) if host.ssh is None else host.ssh.argv(argv)


def run(host: HostSpec, argv: list[str], check: bool = True, timeout_s: float = TIMEOUT_S) -> Result:
    """Run one of halab's host commands on ``host``. With ``check`` a failure raises
    HostCommandError naming the host; otherwise the result says what happened."""
    full = argv_for(host, argv)
    where = "this machine" if host.ssh is None else str(host.ssh)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HostCommandError(f"host {host.name!r}: {full[0]} is not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise HostCommandError(f"host {host.name!r} ({where}): `{' '.join(argv)}` did not finish within "
                               f"{timeout_s:.0f} s") from None
    res = Result(proc.returncode, proc.stdout, proc.stderr.strip())
    if check and res.returncode != 0:
        if host.ssh is not None and res.returncode == 255:
            raise HostCommandError(f"host {host.name!r}: cannot reach it over {where}: "
                                   f"{res.stderr.splitlines()[-1] if res.stderr else 'ssh failed'}")
        raise HostCommandError(f"host {host.name!r} ({where}): `{' '.join(argv)}` failed (rc "
                               f"{res.returncode}): {res.stderr or res.stdout.strip() or 'no output'}")
    return res
