"""The `lab.py` command line: argument parsing and printing over the halab core.

Each command group lives in its own module with `register(subparsers)`; handlers return an exit
status. Errors from the core are HalabError subclasses and become one clear message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from halab.errors import ConfigError, HalabError

COMMAND_MODULES = (
    "cli.config_cmd",
    "cli.doctor_cmd",
    "cli.image_cmd",
    "cli.lab_cmd",
    "cli.warm_cmd",
    "cli.fault_cmd",
    "cli.scenario_cmd",
    "cli.tui_cmd",
    "cli.serve_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab.py",
        description="halab: build a real HA OpenStack-style control plane as libvirt VMs, break it, "
        "and measure failover. With no command, opens the TUI.",
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="lab definition (default: $HALAB_CONFIG, else ./lab.yaml, else built-in)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. a script's `kill`): unwinds like Ctrl-C, so the same clean-up runs (faults a
    scenario applied are undone, its preset restored, traffic stopped, Terraform interrupted)."""


def _on_sigterm(_sig: int, _frame: object) -> None:
    raise Terminated()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args([*argv, "tui"])
    if args.command != "tui":  # Textual has its own signal handling
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except HalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; state kept. Run the same command again to converge.", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        return 0
