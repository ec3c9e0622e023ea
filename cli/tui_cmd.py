"""`./lab.py tui` (and `./lab.py` with no command): the Textual interface on the lab from `-c`."""

from __future__ import annotations

import argparse

from cli.common import config_from


def register(sub) -> None:
    p = sub.add_parser("tui", help="open the Textual interface (the default command)",
                       description="Watch the lab live and break it with a key. Quitting leaves the "
                       "lab running.")
    p.add_argument("--no-confirm", action="store_true",
                   help="act on destructive keys at once (demos); same as confirm_destructive: false")
    p.add_argument("--settings", metavar="FILE",
                   help="TUI settings YAML (default: $HALAB_TUI_SETTINGS, else ~/.config/halab/tui.yaml)")
    p.add_argument("--theme", help="a Textual theme, e.g. textual-light for projectors")
    p.add_argument("--demo", action="store_true",
                   help="no VMs: a lab on libvirt's test:///default driver with recorded traffic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Textual is imported here only, so other commands start fast and work without a terminal.
    from tui import make_app
    from tui.settings import load_settings

    settings = load_settings(getattr(args, "settings", None)).with_overrides(
        confirm_destructive=False if getattr(args, "no_confirm", False) else None,
        theme=getattr(args, "theme", None),
    )
    if getattr(args, "demo", False):
        from tui.demo import demo_session

        factory = demo_session
    else:
        cfg = config_from(args)  # config errors are reported before the screen takes over

        def factory():
            from halab.session import LabSession

            return LabSession(cfg)

    app = make_app(factory, settings)
    app.run()
    if app.exit_note:
        print(app.exit_note)
    return 0
