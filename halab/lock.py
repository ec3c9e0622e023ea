"""One writer per lab: a lock file in the lab's state directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from halab.errors import HalabError


class LabBusy(HalabError):
    """Another lab.py run is changing this lab."""


class LabLock:
    def __init__(self, state_dir: Path, lab_name: str):
        self.path = Path(state_dir) / "lock"
        self.lab_name = lab_name
        self._fd: int | None = None

    def __enter__(self) -> LabLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LabBusy(
                f"lab {self.lab_name!r} is being changed by another lab.py run (pid {holder}); "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
