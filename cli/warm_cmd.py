"""`lab.py checkpoint save|list|delete`, `reset`, `stop`, `start`: warm labs."""

from __future__ import annotations

import argparse
import time

from cli.common import config_from, print_json
from halab.lab import checkpoint as warm


def register(sub) -> None:
    p = sub.add_parser("checkpoint", help="save, list or delete whole-lab checkpoints",
                       description="A checkpoint is one consistent cut of the whole lab (every node's "
                       "memory and disk) that `reset` returns to in seconds.")
    csub = p.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)
    s = csub.add_parser("save", help="pause every node, save memory and disk, resume (default name: ready)")
    s.add_argument("name", nargs="?", default=warm.READY)
    s.set_defaults(func=_save)
    s = csub.add_parser("list", help="the lab's checkpoints: name, when, size, definition")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_list)
    s = csub.add_parser("delete", help="remove one checkpoint")
    s.add_argument("name")
    s.set_defaults(func=_delete)
    p = sub.add_parser("reset", help="return the whole lab to a checkpoint (default: ready) in seconds",
                       description="Every node restored paused, all resumed together, guest clocks "
                       "stepped, halab's fault records made to match. What was written after the "
                       "checkpoint is gone.")
    p.add_argument("name", nargs="?", default=warm.READY)
    p.add_argument("--json", action="store_true", help="print the timings as JSON")
    p.set_defaults(func=_reset)
    p = sub.add_parser("stop", help="save the whole lab to disk and free its CPU and memory")
    p.set_defaults(func=_stop)
    p = sub.add_parser("start", help="bring a stopped lab back from disk in seconds")
    p.add_argument("--json", action="store_true", help="print the timings as JSON")
    p.set_defaults(func=_start)


def _printer(step: warm.Step) -> None:
    print(f"[{step.elapsed_s:6.1f}s] {step.phase:<8} {step.message}", flush=True)


def _save(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    info = warm.save_checkpoint(cfg, args.name, progress=_printer)
    print(f"checkpoint {info.name!r} of lab {cfg.name}: {len(info.nodes)} nodes, "
          f"{info.size_bytes / 1e9:.2f} GB, " + ", ".join(f"{k} {v:.1f}s" for k, v in info.seconds.items()))
    return 0


def _list(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    current = warm.definition_fingerprint(cfg)
    rows = warm.list_checkpoints(cfg)
    if args.json:
        print_json([{**c.to_dict(), "size_bytes": c.size_bytes, "matches_definition": c.definition == current}
                    for c in rows])
        return 0
    if not rows:
        print(f"lab {cfg.name} has no checkpoints (`./lab.py checkpoint save` makes one)")
        return 0
    print(f"{'name':<16} {'taken':<19} {'size':>8}  definition")
    for c in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created))
        fits = "this one" if c.definition == current else "another (refused by reset)"
        print(f"{c.name:<16} {when:<19} {c.size_bytes / 1e9:>6.2f}GB  {c.definition} ({fits})")
    return 0


def _delete(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    freed = warm.delete_checkpoint(cfg, args.name)
    print(f"checkpoint {args.name!r} deleted ({freed / 1e9:.2f} GB freed)")
    return 0


def _restored(res: warm.RestoreResult, what: str, as_json: bool) -> int:
    if as_json:
        print_json(res.__dict__)
    else:
        offs = max((abs(v) for v in res.clock_offsets_s.values()), default=0.0)
        print(f"{what}: {len(res.nodes)} nodes in {res.seconds.get('total', 0):.1f}s ("
              + ", ".join(f"{k} {v:.1f}s" for k, v in res.seconds.items() if k != "total")
              + f"); guest clocks within {offs:.2f}s of the host")
    for p in res.problems:
        print(f"warning: not healthy yet: {p}")
    return 0 if res.healthy else 1


def _reset(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    res = warm.reset(cfg, args.name, progress=None if args.json else _printer)
    return _restored(res, f"lab {cfg.name} reset to {args.name!r}", args.json)


def _stop(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    secs = warm.stop_lab(cfg, progress=_printer)
    print(f"lab {cfg.name} stopped: saved to disk, CPU and memory freed ("
          + ", ".join(f"{k} {v:.1f}s" for k, v in secs.items()) + "); ./lab.py start brings it back")
    return 0


def _start(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    res = warm.start_lab(cfg, progress=None if args.json else _printer)
    return _restored(res, f"lab {cfg.name} started", args.json)
