"""Fault commands, `restore`, `watch` and `measure`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cli.common import check_output_files, config_from, number_in, print_json
from halab import fault_kinds
from halab.atomic import write_atomic
from halab.errors import UsageError
from halab.lab.config import MAX_RATE, MIN_RATE
from halab.live.engine import LabEngine

# The commands that take a node and nothing else of their own, from the fault registry (netem has
# its number flags; netem-clear is `netem --clear`).
SIMPLE = {k.name: k.label for k in fault_kinds.KINDS
          if k.command and not any(p.type == "number" for p in k.params)}
NETEM = fault_kinds.kind("netem")


def _number_flags(p: argparse.ArgumentParser, kind: fault_kinds.FaultKind, *, defaults: bool) -> None:
    """One flag per number parameter of ``kind``, with the registry's range (and default)."""
    for q in kind.params:
        if q.type == "number":
            p.add_argument(q.flag, type=number_in(q.lo, q.hi), default=q.default if defaults else None,
                           help=f"{q.help}" + (f" (default {q.default:g})" if defaults else ""))


def register(sub) -> None:
    for name, text in SIMPLE.items():
        p = sub.add_parser(name, help=text, description=text)
        if fault_kinds.kind(name).on_host:
            p.add_argument("node", metavar="host", help="host name from lab.yaml hosts:, e.g. rack2")
        else:
            p.add_argument("node", help="node name, e.g. api-2")
        if name.endswith("-service"):
            p.add_argument("--service", help=fault_kinds.kind(name).param("service").help)
        if name == "revive":
            how = p.add_mutually_exclusive_group()
            how.add_argument("--warm", dest="warm", action="store_true", default=None,
                             help="from the `ready` checkpoint in seconds (api and haproxy nodes only)")
            how.add_argument("--cold", dest="warm", action="store_false",
                             help="a boot (default for db and mq; lab.yaml `revive:` sets the rest)")
            p.add_argument("--from", dest="checkpoint", default="ready", metavar="NAME",
                           help="the checkpoint a warm revive comes from (default: ready)")
        p.set_defaults(func=_simple, action=name)
    p = sub.add_parser("netem", help=NETEM.label)
    p.add_argument("node")
    _number_flags(p, NETEM, defaults=True)
    p.add_argument("--clear", action="store_true", help="remove the netem qdisc")
    p.set_defaults(func=_netem)
    p = sub.add_parser("restore", help="undo every active fault of the lab")
    p.set_defaults(func=_restore)
    p = sub.add_parser("watch", help="live text view: nodes, traffic, events (Ctrl-C to stop)")
    p.add_argument("--rate", type=number_in(MIN_RATE, MAX_RATE),
                   help="also send traffic at this many operations/s")
    p.add_argument("--seconds", type=number_in(0.1, 86400), help="stop after this long")
    p.set_defaults(func=_watch)
    p = sub.add_parser("measure", help="measure one failover: traffic, steady state, fault, recovery")
    p.add_argument("--fault", required=True, choices=fault_kinds.MEASURABLE)
    p.add_argument("--node", required=True, help="the node (the host, for host-cut and host-kill)")
    p.add_argument("--rate", type=number_in(MIN_RATE, MAX_RATE),
                   help="operations/s (default: traffic.rate from lab.yaml)")
    p.add_argument("--settle", type=number_in(0, 3600), default=3.0,
                   help="seconds between detection and undo")
    p.add_argument("--no-revive", action="store_true", help="leave the fault in place")
    p.add_argument("--service", help="with --fault stop-service: "
                   + fault_kinds.kind("stop-service").param("service").help)
    _number_flags(p, NETEM, defaults=False)
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--timeline", metavar="FILE", help="write the timeline as JSON Lines")
    p.set_defaults(func=_measure)


def measure_params(args: argparse.Namespace) -> dict[str, object]:
    """The fault's own parameters from `measure`'s flags: a netem without any gets the netem
    command's default delay; flags of another fault are refused rather than ignored."""
    kind = fault_kinds.kind(args.fault)
    given = {q.name: getattr(args, q.name) for q in (*NETEM.params, fault_kinds.kind("stop-service").param(
        "service")) if getattr(args, q.name, None) is not None}
    extra = sorted(set(given) - {q.name for q in kind.params})
    if extra:
        raise UsageError(f"measure --fault {args.fault} takes no "
                         + ", ".join(fault_kinds.Param(n, "string").flag for n in extra))
    if kind is NETEM and not given.get("delay_ms") and not given.get("loss_pct"):
        given["delay_ms"] = NETEM.param("delay_ms").default
    return given


def _check_target(cfg, action: str, target: str) -> None:
    """A host fault names a host of lab.yaml's ``hosts:``; every other fault a node."""
    if fault_kinds.kind(action).on_host:
        if not cfg.hosts:
            raise UsageError(f"lab {cfg.name!r} runs on one host: {action} needs lab.yaml hosts:")
        cfg.host(target)
    else:
        cfg.node(target)


def _simple(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    _check_target(cfg, args.action, args.node)  # clear error for an unknown host or node first
    params = {"service": args.service} if getattr(args, "service", None) else {}
    if args.action == "revive":
        params = {"warm": args.warm, "checkpoint": args.checkpoint}
    with LabEngine.open(cfg) as live:
        ev = live.apply(args.action, args.node, **params)
    print(ev.message)
    return 0


def _netem(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    cfg.node(args.node)
    with LabEngine.open(cfg) as live:
        if args.clear:
            ev = live.apply("netem-clear", args.node)
        else:
            ev = live.faults.netem(args.node, delay_ms=args.delay_ms, jitter_ms=args.jitter_ms,
                                   loss_pct=args.loss_pct)
    print(ev.message)
    return 0


def _restore(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    with LabEngine.open(cfg) as live:
        events, problems = live.restore()
    for ev in events:
        print(ev.message)
    for p in problems:
        print(f"could not undo: {p}", file=sys.stderr)
    if not events and not problems:
        print("no active faults")
    return 1 if problems else 0


def _watch(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    end = time.monotonic() + args.seconds if args.seconds else None
    with LabEngine.open(cfg) as live:
        # Connect first: the probes swallow a connection error each second, so a libvirt that is
        # down would otherwise look like a quiet lab (nothing printed, exit 0).
        live.virt.states()
        live.timeline.subscribe(lambda item: _print_item(item))
        live.start_observing()
        if args.rate:
            live.start_traffic(args.rate)
        try:
            while end is None or time.monotonic() < end:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("\nstopped watching; the lab keeps running")
    return 0


def _print_item(item) -> None:
    from halab.observe.timeline import Event, TrafficBucket

    if isinstance(item, Event):
        stamp = time.strftime("%H:%M:%S", time.localtime(item.at)) + f".{int(item.at * 1000) % 1000:03d}"
        print(f"{stamp} {item.kind:<7} {item.message}", flush=True)
    elif isinstance(item, TrafficBucket):
        stamp = time.strftime("%H:%M:%S", time.localtime(item.second))
        shares = " ".join(f"{n}:{c}" for n, c in sorted(item.by_node.items()))
        p = item.point()
        print(f"{stamp} traffic reads {p.reads_ok}/{p.reads_ok + p.reads_err} "
              f"writes {p.writes_ok}/{p.writes_ok + p.writes_err} "
              f"pages {p.pages_ok}/{p.pages_ok + p.pages_err} "
              f"p50 {p.p50_ms:.0f}ms p99 {p.p99_ms:.0f}ms  {shares}", flush=True)


def _measure(args: argparse.Namespace) -> int:
    from halab.chaos.experiments import MeasurePlan, run_measurement

    check_output_files(args, "json", "timeline")
    params = measure_params(args)
    cfg = config_from(args)
    _check_target(cfg, args.fault, args.node)
    with LabEngine.open(cfg) as live:
        live.start_observing()
        plan = MeasurePlan(rate=args.rate or cfg.traffic.rate, settle_s=args.settle,
                           revive=not args.no_revive)
        result = run_measurement(live.handles(), args.fault, args.node, plan, fault_params=params,
                                 progress=lambda msg: print(f"measure: {msg}", flush=True))
        if args.timeline:
            live.timeline.write_jsonl(args.timeline)
    print(result.summary)
    if args.json:
        write_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n", 0o644)
    else:
        print_json(result.to_dict())
    return 0
