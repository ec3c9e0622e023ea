"""`./lab.py serve`: the dashboard in web browsers through textual-serve, every viewer attached to
the one presenter's live snapshots (``halab.live.feed``), read-only.

textual-serve starts one app process per browser connection; each runs ``tui.viewer``, which reads
the presenter's feed instead of opening the lab. If a presenter's TUI already publishes this lab
(``./lab.py tui --publish``) the viewers attach to it; otherwise this process becomes the presenter
(a headless one: it takes the snapshots, the viewers render them). Viewer URLs carry a per-run
token: a wrong one gets a refusal page. The HTTP access log is off, so the token is not logged.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from textual_serve.server import Server

from halab.errors import UsageError
from halab.live.feed import FeedServer, feed_alive, feed_paths, fixed_rate, load_or_create_token
from tui.viewer import FEED_SOCKET_ENV, FEED_TOKEN_ENV

COOKIE = "halab_viewer"

REFUSED_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>halab: not a viewer link</title>
<style>body{font:18px/1.5 system-ui,sans-serif;margin:4em auto;max-width:36em}</style></head><body>
<h1>This viewer link is wrong or out of date</h1>
<p>Ask the presenter for the current link: <code>./lab.py serve</code> prints it when it starts, with
a token that changes on every run.</p></body></html>
"""


def port_free(host: str, port: int) -> None:
    """Refuse a bad --host or a port in use before anything starts (so nothing is left running)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError):
        raise UsageError(f"--host {host}: not an address, nor a name this machine can resolve") from None
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"--host {host}: not an address of this machine "
                                 "(cannot listen on it)") from None
            in_use = exc.errno == errno.EADDRINUSE
            hint = "choose another with --port" if in_use else "check --host and --port"
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc} ({hint})") from None


class ViewerServer(Server):
    """textual-serve's server with a per-run viewer token and no access log."""

    def __init__(self, command: str, *, token: str, host: str, port: int, title: str) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self._viewer_token = token
        self.viewers_started = 0

    def _allowed(self, request: web.Request) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), self._viewer_token.encode())

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()

        @web.middleware
        async def check_token(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
            if request.path.startswith("/static/"):
                return await handler(request)  # textual's own JS and CSS: nothing of the lab
            if not self._allowed(request):
                return web.Response(status=403, text=REFUSED_PAGE, content_type="text/html")
            response = await handler(request)
            if "token" in request.query and isinstance(response, web.Response):
                response.set_cookie(COOKIE, self._viewer_token, httponly=True, samesite="Strict")
            if request.path == "/ws":
                self.viewers_started += 1
            return response

        app.middlewares.append(check_token)
        return app

    async def on_startup(self, app: web.Application) -> None:
        """textual-serve prints a logo and the command; the CLI prints the viewer URL instead."""

    def serve(self, debug: bool = False) -> None:
        import asyncio
        import signal

        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, self.request_exit)
            loop.add_signal_handler(signal.SIGTERM, self.request_exit)
        web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False, loop=loop,
                    print=lambda *_a: None, access_log=None)


class HeadlessPresenter:
    """A presenter without a terminal UI: takes the session's snapshots on a fixed 5 Hz schedule
    (the TUI's rate) and publishes each one as soon as it is taken. One engine, one set of probes,
    however many viewers."""

    def __init__(self, session: Any, hz: float = 5.0):
        self.session = session
        self.period = 1.0 / hz
        self.latest = None
        self.taken = 0  # snapshots taken since start (the presenter's updates)
        self.error: str | None = None
        self.on_snapshot: Callable[[], None] = lambda: None  # the feed's notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presenter", daemon=True)

    def start(self) -> HeadlessPresenter:
        self.latest = self.session.snapshot()  # a broken lab says so before anyone connects
        self._thread.start()
        return self

    def _tick(self) -> None:
        try:
            self.latest = self.session.snapshot()
        except Exception as exc:  # keep publishing the last good view; say why once
            self.error = str(exc)
            return
        self.taken += 1
        self.on_snapshot()

    def _run(self) -> None:
        fixed_rate(self._stop, self.period, self._tick)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.session.close()


def run_serve(lab: str, session_factory: Callable[[], Any] | None, *, host: str, port: int,
              out: Callable[[str], None] = print, state_dir: Path | None = None) -> int:
    """Serve viewers of ``lab``: attach to its publishing presenter, or be one (``session_factory``)."""
    port_free(host, port)
    sock, token_file = feed_paths(lab, state_dir)
    presenter: HeadlessPresenter | None = None
    feed: FeedServer | None = None
    try:
        token = load_or_create_token(token_file)
        if feed_alive(sock):
            out(f"serve: viewers attach to the presenter already publishing lab {lab!r}")
        elif session_factory is None:
            raise UsageError(f"no presenter publishes lab {lab!r}; run ./lab.py tui --publish first")
        else:
            presenter = HeadlessPresenter(session_factory()).start()
            feed = FeedServer(lambda: presenter.latest, sock, token).start()
            presenter.on_snapshot = feed.notify
            out(f"serve: this process presents lab {lab!r} (one set of probes for every viewer)")
        viewer_token = secrets.token_urlsafe(16)
        os.environ[FEED_SOCKET_ENV] = str(sock)
        os.environ[FEED_TOKEN_ENV] = token  # inherited by each viewer process, never on a command line
        server = ViewerServer(f"{sys.executable} -m tui.viewer", token=viewer_token, host=host, port=port,
                              title=f"halab {lab}")
        shown = f"[{host}]" if ":" in host else host
        out(f"serve: viewers open http://{shown}:{port}/?token={viewer_token}  (read-only; Ctrl+C stops)")
        try:
            server.serve()
        except OSError as exc:  # the port was taken between the check and the listen
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        os.environ.pop(FEED_TOKEN_ENV, None)
        if feed is not None:
            feed.stop()
        if presenter is not None:
            presenter.stop()
    return 0
