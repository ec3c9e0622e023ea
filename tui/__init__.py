"""The Textual interface: watch the lab live and break it with a key.

It renders a ``halab.live.session.LabSession``'s snapshots and sends it commands; blocking calls run in
worker threads and come back as messages. ``make_app()`` is shared by the CLI and the tests.
"""

from tui.app import HalabApp, make_app
from tui.settings import TuiSettings

__all__ = ["HalabApp", "TuiSettings", "make_app"]
