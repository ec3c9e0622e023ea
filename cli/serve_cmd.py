"""`./lab.py serve`: browser viewers of the one live lab (textual-serve), read-only."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from cli.common import config_from


def register(sub) -> None:
    p = sub.add_parser("serve", help="show the lab to browser viewers (read-only, one shared live lab)",
                       description="Serve the dashboard to web browsers. Every viewer attaches to the one "
                       "presenter (a `./lab.py tui --publish`, or this process): ten viewers add no probes "
                       "and no traffic. Viewers cannot change the lab.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--viewers", choices=("read-only",), default="read-only",
                   help="what viewers may do (read-only: look, choose their layout; nothing else)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="serve the recorded demo lab (no VMs)")
    src.add_argument("--replay", metavar="FILE", help="serve a recorded run (NAME.timeline.jsonl)")
    p.add_argument("--speed", type=float, default=1.0, metavar="N", help="replay speed (default 1)")
    p.add_argument("--step", action="store_true", help="replay: stop at the first step")
    p.set_defaults(func=run)


def exposure_warning(host: str, port: int) -> str | None:
    """What listening on ``host`` opens up, said before it does: None for a loopback address."""
    if host.lower() == "localhost":
        return None
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        addr = None
    if addr is not None and addr.is_loopback:
        return None
    if addr is not None and addr.is_unspecified:
        who = f"anyone who can reach any address of this machine on port {port}"
    else:
        who = f"anyone who can reach {host} on port {port}"
    return (f"warning: serve listens on {host}, not on loopback: {who} can open a viewer. The token in "
            "the viewer link is the only guard, and it crosses the network in clear (plain HTTP): share "
            "the link only with the room, stop serve after the demo. Viewers stay read-only.")


def run(args: argparse.Namespace) -> int:
    from halab.errors import UsageError

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535 (got {args.port})")
    from tui.serve import port_free

    port_free(args.host, args.port)  # a bad host or a busy port: said before anything starts
    warning = exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    if args.replay:
        from cli.tui_cmd import replay_factory
        from halab.live.replay import lab_of, read_recording

        factory = replay_factory(args.replay, args.speed, args.step)
        lab = "replay-" + lab_of(read_recording(args.replay)).name
    elif args.demo:
        from tui.demo import demo_session

        factory, lab = demo_session, "demo"
    else:
        cfg = config_from(args)

        def factory():
            from halab.live.session import LabSession

            return LabSession.open(cfg)

        lab = cfg.name
    from tui.serve import run_serve

    return run_serve(lab, factory, host=args.host, port=args.port)
