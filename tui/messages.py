"""Messages workers send back to the app. Snapshots coalesce: a newer one replaces a queued older
one, so a flood of changes never backs up the event loop."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from halab.live.session import ActionResult, LabSnapshot, UpProgress


class SnapshotReady(Message):
    def __init__(self, snapshot: LabSnapshot, ticket: int) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.ticket = ticket

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class SnapshotFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotFailed)


class SessionReady(Message):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session


class SessionFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ActionDone(Message):
    def __init__(self, result: ActionResult, elapsed_s: float) -> None:
        super().__init__()
        self.result = result
        self.elapsed_s = elapsed_s


class ActionFailed(Message):
    def __init__(self, action: str, node: str | None, error: str) -> None:
        super().__init__()
        self.action = action
        self.node = node
        self.error = error


class UpStep(Message):
    def __init__(self, progress: UpProgress) -> None:
        super().__init__()
        self.progress = progress


class UpFinished(Message):
    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class UpFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
