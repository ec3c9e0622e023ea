"""The halab Textual app and the ``make_app()`` factory shared by the CLI and the tests."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

from textual import work
from textual.app import App
from textual.worker import get_current_worker

from halab.errors import HalabError
from halab.live.session import LabSession, LabSnapshot
from tui.messages import (
    ActionDone,
    ActionFailed,
    SessionFailed,
    SessionReady,
    SnapshotFailed,
    SnapshotReady,
    UpFailed,
    UpFinished,
    UpStep,
)
from tui.screens.dashboard import DashboardScreen, ViewerDashboard
from tui.screens.nolab import NoLabScreen
from tui.settings import TuiSettings

MIN_GAP_S = 0.05  # a flood of changes refreshes at most 20 times a second

SessionFactory = Callable[[], LabSession]


def _describe(exc: BaseException) -> str:
    """A HalabError's message is for the user as is; anything else keeps its traceback."""
    if isinstance(exc, HalabError):
        return str(exc)
    return "".join(traceback.format_exception(exc)).rstrip()


class HalabApp(App[None]):
    CSS_PATH = "halab.tcss"
    TITLE = "halab"
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, session_factory: SessionFactory, settings: TuiSettings | None = None,
                 read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only  # a viewer: renders the lab, never acts on it
        self.session_factory = session_factory
        self.settings = settings or TuiSettings()
        self.session: LabSession | None = None
        self.snapshot: LabSnapshot | None = None
        self.snapshots_applied = 0
        self.applied_ticket = 0
        self._ticket = 0
        self._wake = threading.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._nolab: NoLabScreen | None = None
        self._up_running = False
        self.exit_note = ""
        self.feed: Any = None  # halab.live.feed.FeedServer while this TUI publishes
        self._asked_two_apis: tuple[str, int] | None = None  # the story step already asked

    # ---- start -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.settings.theme:
            self.theme = self.settings.theme
        self.push_screen(ViewerDashboard() if self.read_only else DashboardScreen())
        self._open_session()

    @work(thread=True, exclusive=True, group="session", exit_on_error=False)
    def _open_session(self) -> None:
        try:
            session = self.session_factory()
        except Exception as exc:
            self.post_message(SessionFailed(_describe(exc)))
        else:
            self.post_message(SessionReady(session))

    def on_session_ready(self, msg: SessionReady) -> None:
        self.session = msg.session
        self._unsubscribe = self.session.subscribe(self._on_change)
        self._refresh_loop()
        if self.settings.publish and not self.read_only:
            self._publish()

    def _publish(self) -> None:
        """Share this TUI's snapshots with browser viewers (``./lab.py serve`` attaches to them):
        the viewers see exactly what the presenter sees, and add nothing to the lab."""
        from halab.live.feed import FeedServer, feed_paths, load_or_create_token

        name = getattr(getattr(self.session, "cfg", None), "name", "lab")
        try:
            sock, token_file = feed_paths(name)
            self.feed = FeedServer(lambda: self.snapshot, sock, load_or_create_token(token_file)).start()
        except HalabError as exc:
            self.notify(str(exc), title="not published", severity="error", timeout=15)
            return
        self.notify("Published for browser viewers: run ./lab.py serve", timeout=5)

    def on_session_failed(self, msg: SessionFailed) -> None:
        self.notify(msg.error, title="cannot open the lab", severity="error", timeout=30)
        self.exit_note = f"error: {msg.error}"

    # ---- the refresh loop: one thread, woken by changes, polling at refresh_hz ----------------
    def _on_change(self, _change: Any) -> None:
        """Called on the session's threads: only wakes the loop (never touches widgets)."""
        self._wake.set()

    def request_refresh(self) -> int:
        """Ask for a fresh snapshot soon; returns a ticket that ``applied_ticket`` reaches once a
        snapshot taken after this call is on screen."""
        self._ticket += 1
        self._wake.set()
        return self._ticket

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def _refresh_loop(self) -> None:
        worker = get_current_worker()
        period = 1.0 / max(0.2, self.settings.refresh_hz)
        session = self.session
        assert session is not None
        while not worker.is_cancelled:
            self._wake.clear()
            ticket = self._ticket
            started = time.monotonic()
            try:
                snap = session.snapshot()
            except Exception as exc:
                self.post_message(SnapshotFailed(_describe(exc)))
            else:
                self.post_message(SnapshotReady(snap, ticket))
            if not self.settings.live:
                self._wake.wait()
            else:  # period from the start of this snapshot, not after it: 5 Hz stays 5 Hz
                self._wake.wait(max(0.0, started + period - time.monotonic()))
            rest = MIN_GAP_S - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)

    def on_snapshot_ready(self, msg: SnapshotReady) -> None:
        snap = msg.snapshot
        self.snapshot = snap
        self.snapshots_applied += 1
        if self.feed is not None:
            self.feed.notify()  # viewers get it now, not at the feed's next poll
        self.applied_ticket = max(self.applied_ticket, msg.ticket)
        no_lab = not snap.exists and all(n.state == "missing" for n in snap.nodes)
        if no_lab and self._nolab is None and not self.read_only:
            self._nolab = NoLabScreen(snap, snap.profile)
            self.push_screen(self._nolab)
        elif not no_lab and self._nolab is not None and not self._up_running:
            self._close_nolab()
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                screen.show_snapshot(snap)
        self._ask_two_apis(snap)

    def _ask_two_apis(self, snap: LabSnapshot) -> None:
        """A story step with ``show: servers``: the presenter (never a viewer or a replay, whose
        timeline already has the answer) reads one server in both API views, once per step."""
        story = snap.story
        step = story.step if story is not None else None
        if step is None or step.show != "servers" or self.read_only or self.session is None \
                or getattr(self.session, "read_only", False):
            return
        key = (story.title, story.current)
        if key == self._asked_two_apis:
            return
        self._asked_two_apis = key
        self.run_worker(partial(self._two_apis, self.session), name="two APIs", group="two-apis",
                        thread=True, exit_on_error=False)

    def _two_apis(self, session: Any) -> None:
        from tui import two_apis

        where = two_apis.target(session)
        lines = (two_apis.ask(*where) if where is not None
                 else [two_apis.PREFIX + "this lab has no API to ask (the demo lab runs no VMs)"])
        for line in lines:
            session.record_event(line)
        self._wake.set()

    def on_snapshot_failed(self, msg: SnapshotFailed) -> None:
        self.notify(msg.error, title="cannot read the lab", severity="error", timeout=10)

    def _close_nolab(self) -> None:
        if self._nolab is not None and self._nolab in self.screen_stack:
            if self.screen is self._nolab:
                self.pop_screen()
            else:
                self._nolab.dismiss()
        self._nolab = None

    # ---- actions: blocking calls in workers, results as messages -------------------------------
    def perform(self, action: str, node: str | None = None, **params: Any) -> None:
        """Run ``session.<action>(node, **params)`` in a worker thread. Actions on one node are
        serialised by their worker group; different nodes proceed in parallel."""
        if self.read_only:
            self.notify("This is a viewer: it cannot change the lab.", severity="warning", timeout=3)
            return
        self.run_worker(
            partial(self._perform, action, node, params), name=f"{action} {node or ''}".strip(),
            group=f"action-{node or 'lab'}", thread=True, exclusive=True, exit_on_error=False,
        )

    def _perform(self, action: str, node: str | None, params: dict[str, Any]) -> None:
        started = time.monotonic()
        try:
            if self.session is None:
                raise HalabError("the lab is not open yet")
            fn = getattr(self.session, action)
            result = fn(node, **params) if node is not None else fn(**params)
        except Exception as exc:
            self.post_message(ActionFailed(action, node, _describe(exc)))
            self._wake.set()
        else:
            self.post_message(ActionDone(result, time.monotonic() - started))
            # The effect, on screen now: a snapshot from this thread (it coalesces with the loop's).
            try:
                self.post_message(SnapshotReady(self.session.snapshot(), self._ticket))
            except Exception:
                self._wake.set()  # the loop will report the failure with its next snapshot

    def on_action_done(self, msg: ActionDone) -> None:
        r = msg.result
        self.notify(r.message, timeout=3)
        for problem in r.problems:
            self.notify(problem, severity="warning", timeout=10)

    def on_action_failed(self, msg: ActionFailed) -> None:
        what = f"{msg.action.replace('_', ' ')} {msg.node or ''}".strip()
        self.notify(msg.error, title=f"{what} failed", severity="error", timeout=10)
        if self.session is not None:
            self.session.record_event(f"{what} failed: {msg.error.splitlines()[-1]}", kind="error")

    # ---- up ------------------------------------------------------------------------------------
    def bring_up(self, profile: str) -> None:
        self._up_running = True
        self._up(profile)

    @work(thread=True, exclusive=True, group="up", exit_on_error=False)
    def _up(self, profile: str) -> None:
        try:
            assert self.session is not None
            result = self.session.up(profile, lambda p: self.post_message(UpStep(p)))
        except Exception as exc:
            self.post_message(UpFailed(_describe(exc)))
        else:
            self.post_message(UpFinished(result))
        finally:
            self._wake.set()

    def on_up_step(self, msg: UpStep) -> None:
        if self._nolab is not None:
            self._nolab.show_progress(msg.progress)

    def on_up_finished(self, _msg: UpFinished) -> None:
        self._up_running = False
        self.notify("The lab is up.", timeout=5)
        self._close_nolab()
        self.request_refresh()

    def on_up_failed(self, msg: UpFailed) -> None:
        self._up_running = False
        if self._nolab is not None:
            self._nolab.show_failure(msg.error)

    # ---- end -----------------------------------------------------------------------------------

    def action_quit(self) -> None:
        snap = self.snapshot
        if snap is not None and snap.exists:
            self.exit_note = (f"The lab {snap.lab!r} keeps running (VIP {snap.vip}). "
                              "Bring it down with: ./lab.py down")
        elif self._up_running:
            self.exit_note = "`up` was interrupted; run ./lab.py up (or the TUI) again to converge."
        self.exit()

    def on_unmount(self) -> None:
        self._wake.set()
        if self.feed is not None:
            self.feed.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.session is not None:
            self.session.close()


def make_app(session_factory: SessionFactory, settings: TuiSettings | None = None,
             read_only: bool = False) -> HalabApp:
    """The one way to build the app (CLI, browser viewers and tests)."""
    return HalabApp(session_factory, settings, read_only)
