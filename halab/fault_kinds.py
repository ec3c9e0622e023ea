"""The fault registry: every action halab can take on a node, said once.

Each front end asks this module instead of keeping its own list — the CLI's commands and `measure
--fault` choices, the scenario validator's actions and params, the measurement's expected detection,
the TUI's labels and explanations, the fault store's record kinds. A new fault is one entry here
(and its method on ``halab.chaos.faults.Faults``); a test checks every front end against the registry.

This module imports nothing from halab: the observing and the chaos modules may both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ParamType = Literal["number", "string", "boolean"]

# Roles whose nodes hold no data of their own: only these may come back warm, alone, from a
# checkpoint (a db or mq node restored alone would roll its data back).
STATELESS_ROLES: tuple[str, ...] = ("api", "haproxy")


@dataclass(frozen=True)
class Param:
    """One parameter of an action: its type and, for numbers, the range a user may give."""

    name: str
    type: ParamType
    lo: float = 0.0
    hi: float = 0.0
    default: float | str | bool | None = None  # what the CLI uses when the flag is not given
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class FaultKind:
    """One action on a node. A fault with ``undo`` stays active until that action undoes it (and
    is measurable: detection, then recovery after the undo); ``undoes`` marks the undo actions."""

    name: str
    label: str  # one line: what it does (CLI help)
    why: str = ""  # what the user will see happen (TUI confirmation)
    undo: str | None = None
    undoes: str | None = None
    params: tuple[Param, ...] = ()
    # After it the node still answers, refusing connections: each health check fails at once.
    # Otherwise the node is silent and every check waits out its connect (expected detection).
    refusing: bool = False
    command: bool = True  # its own CLI command (netem-clear is `netem --clear`)
    warm_roles: tuple[str, ...] = ()  # roles it may bring back from a checkpoint (revive --warm)
    target: Literal["node", "host"] = "node"  # a host fault acts on every node of one host

    @property
    def on_host(self) -> bool:
        return self.target == "host"

    @property
    def method(self) -> str:
        """The ``halab.chaos.faults.Faults`` method that does it."""
        return self.name.replace("-", "_")

    @property
    def is_fault(self) -> bool:
        """An action that breaks something (not one that undoes a fault)."""
        return self.undoes is None

    @property
    def measurable(self) -> bool:
        """``measure`` can time it: it has an undo, so detection and recovery both exist."""
        return self.undo is not None

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


_SERVICE = Param("service", "string", help="service name (default: the role's main service)")

KINDS: tuple[FaultKind, ...] = (
    FaultKind("kill", "power-cut a node (libvirt destroy)",
              "A power cut: libvirt destroys the VM. `r` revives it.", undo="revive"),
    FaultKind("revive", "start a killed node again", undoes="kill",
              params=(Param("warm", "boolean"), Param("checkpoint", "string", default="ready")),
              warm_roles=STATELESS_ROLES),
    FaultKind("pause", "freeze a node (libvirt suspend)",
              "The VM freezes (libvirt suspend): TCP stays open, nothing answers.", undo="resume"),
    FaultKind("resume", "unfreeze a paused node", undoes="pause"),
    FaultKind("reboot", "hard-reset a node", "A hard reset: the node goes away and boots again.",
              params=(Param("hard", "boolean", default=True),)),
    FaultKind("netcut", "take the node's network link down (no agent in the guest)",
              "The node's network link goes down (libvirt); the VM keeps running.", undo="netrestore"),
    FaultKind("netrestore", "bring the node's network link back up", undoes="netcut"),
    FaultKind("netem", "add latency/loss on the node's host-side interface (tc netem)",
              "Latency and loss on the host's side of the node's link (tc netem); the VM keeps running.",
              undo="netem-clear",
              params=(Param("delay_ms", "number", 0, 60000, 200.0, "added latency (ms)"),
                      Param("jitter_ms", "number", 0, 60000, 0.0, "latency variation (ms)"),
                      Param("loss_pct", "number", 0, 100, 0.0, "packets dropped (%)"))),
    FaultKind("netem-clear", "remove the node's netem qdisc", undoes="netem", command=False),
    FaultKind("stop-service", "stop the node's role service over SSH",
              "Stops the node's role service over SSH; the VM keeps running.",
              undo="start-service", params=(_SERVICE,), refusing=True),
    FaultKind("start-service", "start the node's role service over SSH", undoes="stop-service",
              params=(_SERVICE,)),
    # A lab over several hosts (lab.yaml hosts:): faults of a whole host.
    FaultKind("host-cut", "cut one host off the lab network (its tunnel down: a partition between racks)",
              "The host's tunnel goes down: its nodes run on, cut off from every other host.",
              undo="host-restore", target="host"),
    FaultKind("host-restore", "bring a cut host's tunnel back", undoes="host-cut", target="host"),
    FaultKind("host-kill", "power-cut every node of one host at once (libvirt destroy)",
              "A whole host loses power: libvirt destroys every node on it at once.",
              undo="host-revive", target="host"),
    FaultKind("host-revive", "start every node of a killed host again", undoes="host-kill", target="host"),
)

BY_NAME: dict[str, FaultKind] = {k.name: k for k in KINDS}
ACTIONS: tuple[str, ...] = tuple(k.name for k in KINDS)
FAULTS: tuple[str, ...] = tuple(k.name for k in KINDS if k.is_fault)  # scenario `fault:` actions
UNDO: dict[str, str] = {k.name: k.undo for k in KINDS if k.undo is not None}
MEASURABLE: tuple[str, ...] = tuple(k.name for k in KINDS if k.measurable)
REFUSING: frozenset[str] = frozenset(k.name for k in KINDS if k.refusing)
HOST_ACTIONS: frozenset[str] = frozenset(k.name for k in KINDS if k.on_host)


def kind(name: str) -> FaultKind:
    """The registry entry for ``name``; KeyError for an unknown action."""
    return BY_NAME[name]
