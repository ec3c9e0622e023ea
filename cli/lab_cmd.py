"""`lab.py up|down|plan|heal|status`."""

from __future__ import annotations

import argparse
import sys
import threading

from cli.common import config_from, print_json
from halab.lab import lifecycle


def register(sub) -> None:
    p = sub.add_parser("up", help="build the lab (image, seeds, terraform apply, wait for cloud-init)",
                       description="Build or converge the lab. Re-running on a healthy lab changes nothing.")
    p.add_argument("--json", metavar="FILE", help="also write the summary (nodes, phases) as JSON")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="do not take the `ready` checkpoint when the lab is first ready")
    p.add_argument("--no-wait", action="store_true",
                   help="stop after terraform apply: nodes started, not waited for (no checkpoint)")
    p.set_defaults(func=_up)
    p = sub.add_parser("down", help="destroy everything the lab owns (idempotent)",
                       description="Destroy the lab's domains, volumes, seeds, network, pool and state.")
    p.set_defaults(func=_down)
    p = sub.add_parser("plan", help="show drift between the lab definition and libvirt (terraform plan)")
    p.set_defaults(func=_plan)
    p = sub.add_parser("heal", help="repair drift (terraform apply) and wait until every node is ready")
    p.set_defaults(func=_heal)
    p = sub.add_parser("rebuild", help="replace one node (fresh disk and boot); the other nodes are kept",
                       description="Destroy and create again one node's domain, disk and seed, then wait "
                       "until it is ready. For a node whose role setup keeps failing, or that was "
                       "replaced on purpose.")
    p.add_argument("node", help="the node, e.g. mq-1")
    p.set_defaults(func=_rebuild)
    p = sub.add_parser("status", help="the VIP and each node: role, IP, libvirt state, reachable")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-ssh", action="store_true", help="skip the SSH reachability check")
    p.set_defaults(func=_status)


def _printer(prog: lifecycle.Progress) -> None:
    where = f"{prog.node}: " if prog.node and not prog.message.startswith(prog.node) else ""
    phase = "" if prog.message.startswith(prog.phase) else prog.phase  # "boot wave 1 done in …"
    print(f"[{prog.elapsed_s:6.1f}s] {phase:<9} {where}{prog.message}", flush=True)


def _run_interruptible(fn, *args):
    """Run a lifecycle command; the first Ctrl-C asks Terraform to stop gracefully (state kept)."""
    cancel = threading.Event()
    try:
        return fn(*args, progress=_printer, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise


def _summary(res: lifecycle.UpResult) -> None:
    print()
    print(f"lab {res.lab}: {len(res.nodes)} nodes, VIP {res.vip}, accelerator {res.accel}, "
          f"{res.terraform_changes} terraform change(s)")
    for n in res.nodes:
        where = f"{n.host:<12} " if n.host else ""
        print(f"  {n.name:<10} {n.role:<8} {where}{n.ip:<15} {n.state}")
    print("phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in res.phases_s.items()))


def _up(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    cancel = threading.Event()
    try:
        res = lifecycle.up(cfg, progress=_printer, cancel=cancel,
                           checkpoint=False if args.no_checkpoint else None, wait=not args.no_wait)
    except KeyboardInterrupt:
        cancel.set()
        raise
    _summary(res)
    if args.json:
        import json

        from halab.atomic import write_atomic

        write_atomic(args.json, json.dumps(res.to_dict(), indent=2) + "\n", 0o644)
    return 0


def _heal(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    _summary(_run_interruptible(lifecycle.heal, cfg))
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    _summary(_run_interruptible(lifecycle.rebuild, cfg, args.node))
    return 0


def _down(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    phases = _run_interruptible(lifecycle.down, cfg)
    print(f"lab {cfg.name} is down (" + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()) + ")")
    return 0


def _plan(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    plan = _run_interruptible(lifecycle.plan, cfg)
    for d in plan.drift:
        print(f"drift: {d.address} changed outside Terraform ({d.action})")
    for c in plan.changes:
        reason = f" ({c.reason})" if c.reason else ""
        print(f"will {c.action}: {c.address}{reason}")
    if not plan.has_changes:
        print("no changes: the lab matches its definition")
        return 0
    print("run ./lab.py heal to apply", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if not lifecycle.lab_exists(cfg):
        if args.json:
            print_json({"lab": cfg.name, "up": False, "nodes": []})
        else:
            print(f"lab {cfg.name} is not up (./lab.py up builds it)")
        return 1
    nodes = lifecycle.node_statuses(cfg, check_ssh=not args.no_ssh)
    roles = None
    stopped = bool(nodes) and all(n.state == "saved" for n in nodes)
    if not args.no_ssh and not stopped:
        from halab.lab.ssh import HostKeyMismatch
        from halab.live.engine import LabEngine
        from halab.live.status import role_health

        try:
            with LabEngine.open(cfg) as live:
                roles = role_health(live)
        except HostKeyMismatch as exc:  # said per node above; role health needs trusted nodes
            roles = {"error": str(exc)}
    if args.json:
        print_json({"lab": cfg.name, "up": True, "stopped": stopped, "vip": cfg.vip,
                    "nodes": [n.to_dict() for n in nodes], "roles": roles})
        return 0
    print(f"lab {cfg.name}  VIP {cfg.vip}" + ("  STOPPED (saved to disk; ./lab.py start brings it back)"
                                            if stopped else ""))
    for n in nodes:
        reach = n.ssh if n.ssh == lifecycle.HOST_KEY_MISMATCH else (
            {True: "reachable", False: "unreachable", None: "-"}[n.reachable])
        where = f"{n.host:<12} " if n.host else ""
        print(f"  {n.name:<10} {n.role:<8} {where}{n.ip:<15} {n.state:<9} {reach}")
    if any(n.ssh == lifecycle.HOST_KEY_MISMATCH for n in nodes):
        print("host key mismatch: the node presented a host key halab did not give it (possible man in "
              "the middle); halab will not talk to it. `./lab.py rebuild NODE` if it was replaced on purpose")
    if roles is not None and "error" in roles:
        print(f"roles: not checked ({roles['error']})")
    elif roles is not None:
        _print_roles(roles)
    return 0


def _print_roles(roles: dict) -> None:
    def join(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    print("roles:")
    for balancer, backends in roles["haproxy"].items():
        print(f"  haproxy {balancer}: {join(backends)}")
    if "vip_holders" in roles:
        print(f"  VIP held by: {', '.join(roles['vip_holders']) or 'nobody'}")
    print(f"  api health: {join(roles['api'])}")
    if "services_summary" in roles:
        print(f"  services: {roles['services_summary']}")
    if "quorum_queues" in roles:
        q = roles["quorum_queues"]
        if "error" in q:
            print(f"  quorum queues: unknown ({q['error']})")
        else:
            print("  quorum queues: " + ("; ".join(f"{name} on {', '.join(m)} ({len(m)})"
                                                  for name, m in q["queues"].items()) or "none declared yet"))
    ages = {n: (f"{a:.1f}s" if a is not None else "never") for n, a in roles["heartbeat_age_s"].items()}
    print(f"  heartbeat age: {join(ages)}")
    if roles.get("galera"):
        g = roles["galera"]
        print(f"  galera: size {g['size'] if g['size'] is not None else '?'}; {join(g['nodes'])}")
    if roles.get("rabbitmq"):
        r = roles["rabbitmq"]
        parts = r.get("partitions")
        part = "" if parts is None else ("; partitions: " + (join(parts) if any(parts.values()) else "none"))
        print(f"  rabbitmq: {join(r['members'])}{part}" + (f" ({r['error']})" if r.get("error") else ""))
