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
    p.add_argument("--replay", metavar="FILE",
                   help="play a recorded run back (DIR/NAME.timeline.jsonl from `scenario run --report "
                   "DIR`), story included: no lab, no libvirt")
    p.add_argument("--speed", type=float, default=1.0, metavar="N",
                   help="replay speed: recorded seconds per second (default 1; e.g. 4)")
    p.add_argument("--step", action="store_true",
                   help="replay step by step: stop at each step until space (a plays on)")
    p.add_argument("--projector", action="store_true",
                   help="start in the projector layout (fewer, larger panels; v toggles)")
    p.add_argument("--publish", action="store_true",
                   help="share this TUI's live snapshots with browser viewers (`./lab.py serve` attaches)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Textual is imported here only, so other commands start fast and work without a terminal.
    from tui import make_app
    from tui.settings import load_settings

    settings = load_settings(getattr(args, "settings", None)).with_overrides(
        confirm_destructive=False if getattr(args, "no_confirm", False) else None,
        theme=getattr(args, "theme", None),
        projector=True if getattr(args, "projector", False) else None,
        publish=True if getattr(args, "publish", False) else None,
    )
    if getattr(args, "replay", None):
        factory = replay_factory(args.replay, args.speed, args.step)
    elif getattr(args, "demo", False):
        from tui.demo import demo_session

        factory = demo_session
    else:
        cfg = config_from(args)  # config errors are reported before the screen takes over

        def factory():
            from halab.live.session import LabSession

            return LabSession.open(cfg)

    app = make_app(factory, settings)
    app.run()
    if app.exit_note:
        print(app.exit_note)
    return 0


def replay_factory(path: str, speed: float, step: bool):
    """Read the recording before the screen takes over, so a bad file is a located error."""
    from halab.errors import UsageError
    from halab.live.replay import ReplaySession, read_recording

    if not 0.1 <= speed <= 1000:
        raise UsageError(f"--speed must be between 0.1 and 1000 (got {speed:g})")
    rec = read_recording(path)
    return lambda: ReplaySession(rec, speed=speed, step=step)
