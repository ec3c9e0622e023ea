"""`lab.py config show|check`."""

from __future__ import annotations

import argparse
import sys

import yaml

from cli.common import config_from
from halab.errors import ConfigError
from halab.lab.config import load_config


def register(sub) -> None:
    p = sub.add_parser("config", help="show or check the lab definition",
                       description="Show the effective lab definition or validate a file.")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = csub.add_parser("show", help="print the effective config (defaults filled in) and the nodes")
    show.set_defaults(func=_show)
    check = csub.add_parser("check", help="validate a lab.yaml; exit 2 with file:line: field: message")
    check.add_argument("file", nargs="?", help="file to check (default: the effective config file)")
    check.set_defaults(func=_check)


def _show(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    data = cfg.to_dict()
    data["vip"] = cfg.vip
    data["nodes"] = [
        {"name": n.name, "role": n.role, "ip": n.ip, "mac": n.mac, "memory_mib": n.memory_mib,
         "vcpus": n.vcpus, "domain": cfg.domain_name(n), **({"host": n.host} if n.host else {})}
        for n in cfg.nodes()
    ]
    if cfg.hosts:  # the hosts as plain values (the ssh target as one string)
        data["hosts"] = {h.name: {"uri": h.uri, "underlay": h.underlay,
                                  **({"ssh": str(h.ssh)} if h.ssh else {})} for h in cfg.hosts}
    print(f"# source: {cfg.source}")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    target = args.file or getattr(args, "config", None)
    try:
        cfg = load_config(target)
    except ConfigError as exc:
        # Bare `file:line: field: message` lines, as compilers print them: editors and grep jump to them.
        for line in exc.errors:
            print(line, file=sys.stderr)
        n = len(exc.errors)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return exc.exit_code
    spread = f", over {len(cfg.hosts)} hosts" if cfg.hosts else ""
    print(f"{cfg.source}: ok ({len(cfg.nodes())} nodes, profile {cfg.profile}{spread})")
    return 0
