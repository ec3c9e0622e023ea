"""The presenter's live snapshots, shared with viewers over a local socket.

One process owns the lab (its probes, traffic and timeline: the presenter's TUI, or `./lab.py
serve`). It publishes each snapshot it takes on a Unix socket; browser viewers' processes attach
and render those snapshots, so ten viewers add no probes and no traffic. The socket is 0600 in the
lab's 0700 state directory and a viewer must first send the lab's feed token (a 0600 file, never
printed). The protocol has no commands: anything a viewer sends after its hello is refused and
counted, so a viewer cannot act on the lab through the feed.

Wire format: JSON Lines. Viewer → publisher: ``{"hello": 1, "token": "..."}``. Publisher →
viewer: ``{"snapshot": {...}}`` per snapshot, ``{"error": "..."}`` before closing, or
``{"refused": "..."}`` for anything else a viewer sends.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from halab.chaos.story import StoryView
from halab.errors import HalabError, UsageError
from halab.live.session import (
    ActionResult,
    Change,
    EventView,
    FailoverView,
    LabSnapshot,
    NodeView,
    TrafficPoint,
    TrafficState,
)
from halab.paths import lab_state_dir

FEED_SOCKET = "feed.sock"
FEED_TOKEN = "feed.token"
HELLO_TIMEOUT_S = 3.0
MAX_LINE = 4 << 20  # a snapshot line is ~100 KB; anything near this is not one


class ViewerReadOnly(UsageError):
    """A viewer asked the lab to do something."""


# ---- snapshots as JSON ----------------------------------------------------------------------------


def snapshot_to_dict(s: LabSnapshot) -> dict[str, Any]:
    return asdict(s)


def snapshot_from_dict(d: dict[str, Any]) -> LabSnapshot:
    """The inverse of ``snapshot_to_dict``; a malformed one raises HalabError (never KeyError)."""
    try:
        fo = d.get("failover")
        story = d.get("story")
        return LabSnapshot(
            lab=str(d["lab"]), profile=str(d["profile"]), vip=str(d["vip"]),
            libvirt_uri=str(d["libvirt_uri"]), taken_at=float(d["taken_at"]), exists=bool(d["exists"]),
            nodes=tuple(NodeView(**{**n, "faults": tuple(n.get("faults", ()))}) for n in d["nodes"]),
            series=tuple(TrafficPoint(**p) for p in d["series"]),
            events=tuple(EventView(**e) for e in d["events"]),
            failover=FailoverView(**fo) if fo else None,
            traffic=TrafficState(**d["traffic"]), problems=tuple(d.get("problems", ())),
            expected_detection_s=d.get("expected_detection_s"),
            story=StoryView.from_dict(story) if story else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HalabError(f"the presenter sent a snapshot this viewer cannot read ({exc!r})") from None


# ---- where the feed lives -------------------------------------------------------------------------


def feed_paths(lab: str, state_dir: Path | None = None) -> tuple[Path, Path]:
    d = state_dir or lab_state_dir(lab)
    return d / FEED_SOCKET, d / FEED_TOKEN


def load_or_create_token(path: Path) -> str:
    """The lab's feed token (0600). Made once per lab; readable only by its owner."""
    from halab.lab.secrets import write_private

    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 32:
            return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


# ---- publisher ------------------------------------------------------------------------------------


def fixed_rate(stop: threading.Event, period: float, tick: Callable[[], None],
               wake: threading.Event | None = None) -> None:
    """Call ``tick`` on a fixed schedule (every ``period`` from the start, not ``period`` after each
    call ends: a 0.1 s snapshot followed by a 0.2 s sleep is 3.3 a second, not 5). A tick that
    overruns skips the ticks it missed instead of bursting to catch up. ``wake`` (set by another
    thread) runs a tick at once; the schedule goes on from there. Returns when ``stop`` is set."""
    clock = time.monotonic
    due = clock() + period
    while not stop.is_set():
        delay = due - clock()
        if wake is not None:
            woken = wake.wait(max(0.0, delay))
            if woken:
                wake.clear()
        else:
            woken = False
            if stop.wait(max(0.0, delay)):
                return
        if stop.is_set():
            return
        tick()
        if not woken:
            due += period
            now = clock()
            if due <= now:  # overran: the next tick is the next one still ahead
                due += period * (int((now - due) / period) + 1)


class _Viewer:
    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.lock = threading.Lock()
        self.alive = True

    def send(self, line: bytes) -> None:
        with self.lock:
            if not self.alive:
                return
            try:
                self.conn.sendall(line)
            except OSError:
                self.alive = False


class FeedServer:
    """Publishes ``source()`` (the presenter's newest snapshot) to every attached viewer, taken once
    per period however many viewers there are."""

    def __init__(self, source: Callable[[], LabSnapshot | None], sock_path: Path, token: str,
                 hz: float = 5.0):
        self.source = source
        self.path = Path(sock_path)
        self._token = token
        self.period = 1.0 / max(0.5, hz)
        self._viewers: list[_Viewer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._fresh = threading.Event()
        self.published = 0  # snapshots sent (once per period, to all viewers at once)
        self.refused = 0  # lines viewers sent after their hello: all refused
        self.rejected = 0  # connections with a wrong token

    @property
    def viewers(self) -> int:
        with self._lock:
            return sum(v.alive for v in self._viewers)

    def start(self) -> FeedServer:
        if feed_alive(self.path):
            raise UsageError(f"another presenter already publishes this lab ({self.path}); "
                             "attach to it (`./lab.py serve`) or quit it first")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a presenter that died
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is 0600 from its first moment
        try:
            s.bind(str(self.path))
        except OSError as exc:
            s.close()
            raise HalabError(f"cannot publish the lab on {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(16)
        s.settimeout(0.2)
        self._sock = s
        for target in (self._accept, self._publish):
            t = threading.Thread(target=target, name=f"feed-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._fresh.set()
        for t in self._threads:
            t.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._lock:
            for v in self._viewers:
                with contextlib.suppress(OSError):
                    v.conn.close()
            self._viewers.clear()

    close = stop

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._greet, args=(conn,), daemon=True).start()

    def _greet(self, conn: socket.socket) -> None:
        conn.settimeout(HELLO_TIMEOUT_S)
        reader = conn.makefile("rb")
        try:
            hello = json.loads(reader.readline(65536) or b"{}")
        except (OSError, ValueError):
            hello = {}
        token = str(hello.get("token", "")) if isinstance(hello, dict) else ""
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            self.rejected += 1
            with contextlib.suppress(OSError):
                conn.sendall(b'{"error": "wrong feed token"}\n')
                conn.close()
            return
        conn.settimeout(None)
        viewer = _Viewer(conn)
        with self._lock:
            self._viewers.append(viewer)
        snap = self.source()
        if snap is not None:
            viewer.send(_line(snap))
        # Whatever a viewer sends from now on is refused: the feed has no commands.
        try:
            while not self._stop.is_set():
                line = reader.readline(MAX_LINE)
                if not line:
                    break
                self.refused += 1
                viewer.send(b'{"refused": "viewers are read-only: the lab takes no commands from them"}\n')
        except OSError:
            pass
        viewer.alive = False
        with contextlib.suppress(OSError):
            conn.close()

    def notify(self) -> None:
        """The presenter has a new snapshot: publish it now (without this the feed still polls
        ``source`` on its own fixed schedule, and may see a snapshot up to a period late)."""
        self._fresh.set()

    def _publish(self) -> None:
        last: list[LabSnapshot | None] = [None]

        def tick() -> None:
            snap = self.source()
            if snap is None or snap is last[0]:
                return
            last[0] = snap
            line = _line(snap)  # encoded once for every viewer
            with self._lock:
                self._viewers = [v for v in self._viewers if v.alive]
                viewers = list(self._viewers)
            for v in viewers:
                v.send(line)
            self.published += 1

        fixed_rate(self._stop, self.period, tick, wake=self._fresh)


def _line(snap: LabSnapshot) -> bytes:
    return (json.dumps({"snapshot": snapshot_to_dict(snap)}, default=str) + "\n").encode()


def feed_alive(path: Path) -> bool:
    """Does a presenter listen on ``path``? (A stale file from a dead one does not count.)"""
    if not Path(path).exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


# ---- viewer ---------------------------------------------------------------------------------------


class FeedClient:
    """A viewer's end: keeps the newest snapshot the presenter sent."""

    def __init__(self, sock_path: Path, token: str, timeout_s: float = 10.0):
        self.path = Path(sock_path)
        self._latest: LabSnapshot | None = None
        self._error: str | None = None
        self._cond = threading.Condition()
        self._subs: list[Callable[[Change], None]] = []
        self.received = 0  # snapshots the presenter sent this viewer
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout_s)
        try:
            s.connect(str(self.path))
            s.sendall((json.dumps({"hello": 1, "token": token}) + "\n").encode())
        except OSError as exc:
            s.close()
            raise HalabError(f"no presenter publishes the lab on {self.path} ({exc.strerror or exc}); "
                             "start `./lab.py tui --publish` or `./lab.py serve`") from None
        s.settimeout(None)
        self._sock = s
        self._thread = threading.Thread(target=self._read, name="feed-client", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        reader = self._sock.makefile("rb")
        try:
            for raw in reader:
                msg = json.loads(raw)
                if "snapshot" in msg:
                    snap = snapshot_from_dict(msg["snapshot"])
                    with self._cond:
                        self._latest = snap
                        self.received += 1
                        self._cond.notify_all()
                    for cb in list(self._subs):
                        cb(Change("snapshot", time.time()))
                elif "error" in msg:
                    self._fail(f"the presenter refused this viewer: {msg['error']}")
                    return
        except (OSError, ValueError, HalabError) as exc:
            self._fail(f"the feed broke: {exc}")
            return
        self._fail("the presenter has stopped publishing the lab")

    def _fail(self, why: str) -> None:
        with self._cond:
            self._error = self._error or why
            self._cond.notify_all()
        for cb in list(self._subs):
            cb(Change("snapshot", time.time()))

    def subscribe(self, cb: Callable[[Change], None]) -> Callable[[], None]:
        self._subs.append(cb)
        return lambda: self._subs.remove(cb) if cb in self._subs else None

    def latest(self, wait_s: float = 10.0) -> LabSnapshot:
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self._error is not None, wait_s)
            if self._error is not None and self._latest is None:
                raise HalabError(self._error)
            if self._latest is None:
                raise HalabError(f"the presenter sent no snapshot within {wait_s:g} s")
            return self._latest

    @property
    def error(self) -> str | None:
        return self._error

    def send_raw(self, line: str) -> None:
        """Only for tests: what a misbehaving viewer might send (the presenter refuses it)."""
        self._sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class ViewerSession:
    """What a viewer's TUI talks to instead of a LabSession: the presenter's snapshots, and a
    refusal for every action (the viewer has no lab of its own to act on)."""

    read_only = True

    def __init__(self, client: FeedClient):
        self.client = client
        self.refused: list[str] = []
        self.fresh = 0  # distinct presenter snapshots handed to the viewer's screen
        self._last: LabSnapshot | None = None

    def subscribe(self, cb: Callable[[Change], None]) -> Callable[[], None]:
        return self.client.subscribe(cb)

    def snapshot(self) -> LabSnapshot:
        snap = self.client.latest()
        if snap is not self._last:
            self._last = snap
            self.fresh += 1
        if self.client.error:
            return _with_problem(snap, self.client.error)
        return snap

    def scenarios(self) -> list[Path]:
        return []

    def record_event(self, text: str, **_kw: Any) -> None:
        """A viewer's own notes stay with it: it writes nothing to the presenter's timeline."""

    def close(self) -> None:
        self.client.close()

    def __getattr__(self, name: str) -> Callable[..., ActionResult]:
        if name.startswith("_"):
            raise AttributeError(name)

        def refuse(*_a: Any, **_kw: Any) -> ActionResult:
            self.refused.append(name)
            raise ViewerReadOnly(f"{name.replace('_', ' ')}: viewers are read-only; the presenter "
                                 "drives the lab")

        return refuse


def _with_problem(snap: LabSnapshot, problem: str) -> LabSnapshot:
    from dataclasses import replace

    return replace(snap, problems=(*snap.problems, problem))
