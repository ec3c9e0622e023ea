"""A browser viewer's process (textual-serve starts one per browser connection): the dashboard,
read-only, on the presenter's published snapshots. It opens no lab session of its own, so it adds
no probes and no traffic. The feed's socket and token come in the environment, never on the
command line (other users can read a command line; not another user's environment)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

FEED_SOCKET_ENV = "HALAB_FEED_SOCKET"
FEED_TOKEN_ENV = "HALAB_FEED_TOKEN"
STATS_ENV = "HALAB_VIEWER_STATS"  # a directory: each viewer writes its update counts there (bench)


def write_stats(directory: Path, app, box: dict) -> None:
    """Every half second, this viewer's counts as ``<pid>.json`` in ``directory`` (atomically), so
    a benchmark outside the browser can tell each viewer's update rate. Only when asked for."""
    import json
    import threading
    import time

    from halab.atomic import write_atomic

    def loop() -> None:
        path = directory / f"{os.getpid()}.json"
        while True:
            session = box.get("session")
            row = {"pid": os.getpid(), "at": time.monotonic(),
                   "received": session.client.received if session else 0,
                   "fresh_on_screen": session.fresh if session else 0,
                   "refreshes": app.snapshots_applied}
            write_atomic(path, json.dumps(row))
            time.sleep(0.5)

    threading.Thread(target=loop, name="viewer-stats", daemon=True).start()


def main() -> int:
    from halab.errors import HalabError
    from halab.live.feed import FeedClient, ViewerSession
    from tui import TuiSettings, make_app

    sock, token = os.environ.get(FEED_SOCKET_ENV), os.environ.get(FEED_TOKEN_ENV)
    if not sock or not token:
        print(f"error: a viewer needs {FEED_SOCKET_ENV} and {FEED_TOKEN_ENV} (./lab.py serve sets them)",
              file=sys.stderr)
        return 2

    box: dict = {}

    def factory() -> ViewerSession:
        try:
            box["session"] = ViewerSession(FeedClient(Path(sock), token))
            return box["session"]
        except HalabError:
            raise
        except OSError as exc:
            raise HalabError(f"cannot attach to the presenter: {exc}") from None

    app = make_app(factory, TuiSettings(refresh_hz=5.0), read_only=True)
    if os.environ.get(STATS_ENV):
        write_stats(Path(os.environ[STATS_ENV]), app, box)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
