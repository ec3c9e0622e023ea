"""One writer per lab: a lock file in the lab's state directory.

The lock is an ``flock`` held by one process; inside that process it is re-entrant (any thread):
a scenario holds it for its whole run, and the faults and the `reset:` step it runs take it again
without deadlocking. Another process is refused at once with who holds it (never waits silently).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from halab.errors import HalabError


class LabBusy(HalabError):
    """Another lab.py run is changing this lab."""


_registry_lock = threading.Lock()
_held: dict[str, list[int]] = {}  # resolved lock path -> [fd, depth] held by this process


def _describe(pid_text: str) -> str:
    """``pid 123: lab.py up`` from the pid in the lock file and that process's command line."""
    try:
        argv = Path(f"/proc/{int(pid_text)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return f"pid {pid_text or 'unknown'}"
    words = [a.decode(errors="replace") for a in argv if a]
    for i, w in enumerate(words):
        if w.endswith("lab.py"):
            return f"pid {pid_text}: lab.py {' '.join(words[i + 1:i + 3])}".rstrip()
    return f"pid {pid_text}"


class LabLock:
    def __init__(self, state_dir: Path, lab_name: str):
        self.path = Path(state_dir) / "lock"
        self.lab_name = lab_name
        self._key = ""

    def __enter__(self) -> LabLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = str(self.path.resolve())
        with _registry_lock:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                raise LabBusy(
                    f"lab {self.lab_name!r} is being changed by another lab.py run ({_describe(holder)}); "
                    "wait for it to finish, then try again"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            _held[key] = [fd, 1]
            self._key = key
        return self

    def __exit__(self, *exc: object) -> None:
        with _registry_lock:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
