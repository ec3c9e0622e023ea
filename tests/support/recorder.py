"""Host and guest command runners for tests: they succeed like the demo's, and remember each
command, so a test can check what a key press asked the host or a node to do."""

from __future__ import annotations

from collections.abc import Sequence


class Recorder:
    """Host (tc) and guest (SSH) command runners that succeed and remember what they were asked."""

    def __init__(self) -> None:
        self.host: list[list[str]] = []
        self.ssh: list[tuple[str, str]] = []

    def host_run(self, argv: Sequence[str]) -> tuple[int, str, str]:
        self.host.append(list(argv))
        return 0, "", ""

    def ssh_run(self, node: str, command: str) -> tuple[int, str, str]:
        self.ssh.append((node, command))
        return 0, "", ""
