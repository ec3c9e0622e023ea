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


def main() -> int:
    from halab.errors import HalabError
    from halab.live.feed import FeedClient, ViewerSession
    from tui import TuiSettings, make_app

    sock, token = os.environ.get(FEED_SOCKET_ENV), os.environ.get(FEED_TOKEN_ENV)
    if not sock or not token:
        print(f"error: a viewer needs {FEED_SOCKET_ENV} and {FEED_TOKEN_ENV} (./lab.py serve sets them)",
              file=sys.stderr)
        return 2

    def factory() -> ViewerSession:
        try:
            return ViewerSession(FeedClient(Path(sock), token))
        except HalabError:
            raise
        except OSError as exc:
            raise HalabError(f"cannot attach to the presenter: {exc}") from None

    app = make_app(factory, TuiSettings(refresh_hz=5.0), read_only=True)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
