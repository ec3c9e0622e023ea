"""What each node's role services are doing, read over SSH: running, starting, restarting, failed —
and whether the node's role setup failed (and at which step).

"unreachable" alone hides the two states a user can act on: a service systemd keeps restarting
(RabbitMQ on a starved vCPU) and a role setup that gave up (`./lab.py up` re-runs it). One SSH
command per node: `systemctl show` of the role's units and the setup markers of cloud-init/common.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from halab.lab.cloudinit import role_services
from halab.lab.config import LabConfig

Run = Callable[[str, str], tuple[int, str, str]]
PROPERTIES = ("Id", "ActiveState", "SubState", "Result", "NRestarts")
SETUP_FAILED = "/var/lib/halab/failed"
SETUP_READY = "/var/lib/halab/ready"
_MARK = "--halab-setup--"


@dataclass(frozen=True)
class ServiceState:
    unit: str
    state: str  # running | starting | restarting | failed | stopped | unknown
    active: str  # systemd's ActiveState/SubState, as systemd says it
    restarts: int

    @property
    def healthy(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class NodeServices:
    node: str
    services: tuple[ServiceState, ...]
    setup: str  # ready | failed | running (not finished yet) | unknown
    setup_failed_step: str | None = None

    @property
    def healthy(self) -> bool:
        return self.setup == "ready" and all(s.healthy for s in self.services)

    def to_dict(self) -> dict:
        return {"services": {s.unit: {"state": s.state, "active": s.active, "restarts": s.restarts}
                             for s in self.services},
                "setup": self.setup, "setup_failed_step": self.setup_failed_step}


def classify(active: str, sub: str, result: str) -> str:
    """systemd's states in the words a user acts on. `activating/auto-restart` is a service that
    died and waits to be started again; a oneshot that ran (`active/exited`) counts as running."""
    if active == "active":
        return "running"
    if active == "activating" and sub == "auto-restart":
        return "restarting"
    if active in ("activating", "reloading"):
        return "starting"
    if active == "failed" or (active == "inactive" and result not in ("", "success")):
        return "failed"
    if active in ("inactive", "deactivating"):
        return "stopped"
    return "unknown"


def command(units: list[str]) -> str:
    """The one shell command per node: unit properties, then the setup markers."""
    quoted = " ".join(shlex.quote(u) for u in units)
    return (f"systemctl show --property={','.join(PROPERTIES)} {quoted}; echo {_MARK}; "
            f"if [ -f {SETUP_FAILED} ]; then echo failed; cat {SETUP_FAILED}; "
            f"elif [ -f {SETUP_READY} ]; then echo ready; else echo running; fi")


def parse(node: str, units: list[str], text: str) -> NodeServices:
    """`command`'s output. Unknown or missing fields read as unknown, never as healthy."""
    show, _, setup_text = text.partition(_MARK)
    blocks: dict[str, dict[str, str]] = {}
    for block in show.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            blocks[props["Id"]] = props
    states = []
    for unit in units:
        p = blocks.get(unit) or blocks.get(f"{unit}.service") or {}
        active, sub = p.get("ActiveState", "?"), p.get("SubState", "?")
        try:
            restarts = int(p.get("NRestarts", "0") or 0)
        except ValueError:
            restarts = 0
        states.append(ServiceState(unit, classify(active, sub, p.get("Result", "")) if p else "unknown",
                                   f"{active}/{sub}", restarts))
    lines = setup_text.strip().splitlines()
    setup = lines[0].strip() if lines and lines[0].strip() in ("ready", "failed", "running") else "unknown"
    step = None
    if setup == "failed":
        fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
        step = fields.get("step") or None
    return NodeServices(node, tuple(states), setup, step)


def read_services(cfg: LabConfig, run: Run, nodes: list[str] | None = None) -> dict[str, NodeServices]:
    """Every named (default: every) node's role services. A node SSH cannot reach is left out: the
    node list already says it is unreachable."""
    from halab.lab.ssh import SSHUnavailable

    out: dict[str, NodeServices] = {}
    for n in cfg.nodes():
        if nodes is not None and n.name not in nodes:
            continue
        units = role_services(cfg, n.role)
        try:
            _rc, text, _err = run(n.name, command(units))
        except SSHUnavailable:
            continue
        out[n.name] = parse(n.name, units, text)
    return out


def summary_line(states: dict[str, NodeServices]) -> str:
    """`status`'s one line: every unit running, or what is not."""
    bad = []
    for name, ns in states.items():
        for s in ns.services:
            if not s.healthy:
                more = f", {s.restarts} restarts" if s.restarts else ""
                bad.append(f"{name} {s.unit} {s.state} ({s.active}{more})")
            elif s.restarts:
                bad.append(f"{name} {s.unit} running after {s.restarts} restarts")
        if ns.setup == "failed":
            bad.append(f"{name} role setup FAILED at {ns.setup_failed_step or '?'} (./lab.py up re-runs it)")
        elif ns.setup == "running":
            bad.append(f"{name} role setup still running")
    if not bad:
        units = sum(len(ns.services) for ns in states.values())
        return f"all {units} role services running on {len(states)} nodes"
    return "; ".join(bad)



# rabbitmqctl boots an Erlang VM per call (10-20 s on a TCG vCPU): once per `status`, on one node.
def quorum_command(vhost: str) -> str:
    return (f"timeout 90 rabbitmqctl -q list_queues --vhost {shlex.quote(vhost)} name type members "
            "--formatter json")


def parse_quorum_queues(text: str) -> dict[str, list[str]]:
    """`rabbitmqctl list_queues name type members --formatter json` → quorum queue → its member
    nodes (short names: rabbit@mq-1 → mq-1). Anything unreadable raises ValueError."""
    import json

    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON list in rabbitmqctl output")
    rows = json.loads(text[start:])
    out: dict[str, list[str]] = {}
    for row in rows:
        if isinstance(row, dict) and row.get("type") == "quorum":
            members = row.get("members") or []
            out[str(row.get("name"))] = sorted(str(m).split("@", 1)[-1] for m in members)
    return out


def read_quorum_queues(cfg: LabConfig, run: Run, vhost: str, candidates: list[str]) -> dict[str, object]:
    """The lab's quorum queues and where their replicas are, asked of the first mq node that
    answers; {"error": ...} when none does."""
    from halab.lab.ssh import SSHUnavailable

    why = "no mq node running"
    for node in candidates:
        try:
            rc, text, err = run(node, quorum_command(vhost))
        except SSHUnavailable as exc:
            why = str(exc)
            continue
        if rc != 0:
            why = f"{node}: rabbitmqctl list_queues failed (rc {rc}): {(err or text).strip()[:160]}"
            continue
        try:
            return {"queues": parse_quorum_queues(text), "asked": node}
        except ValueError as exc:
            why = f"{node}: {exc}"
    return {"error": why}
