"""What front ends read of a running lab: immutable snapshots (``LabSnapshot``) and the results of
the commands they send (``ActionResult``). The engine (``halab.live.engine``) produces them; the TUI,
browser viewers (``feed``) and replays render them. Plain frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from halab.chaos.story import StoryView
from halab.lab.lifecycle import (
    HOST_KEY_MISMATCH,  # a node's health when it presented a key halab did not give
)
from halab.observe.timeline import TrafficPoint

__all__ = ["HOST_KEY_MISMATCH", "ActionResult", "Change", "EventView", "FailoverView", "LabSnapshot",
           "NodeView", "TrafficPoint", "TrafficState"]


@dataclass(frozen=True)
class NodeView:
    name: str
    role: str
    ip: str
    state: str  # libvirt: running, paused, shut off, crashed, missing, unknown
    health: str = "unknown"  # ok, degraded, down, host key mismatch, unknown (API /healthcheck, clusters)
    backend: str = "—"  # HAProxy's view: UP, DOWN, MAINT, NOLB, — (not a backend)
    share: float | None = None  # fraction of the last second's API responses this node served
    faults: tuple[str, ...] = ()  # active faults, e.g. ("kill",), ("netem 200 ms",)
    detail: str = ""  # e.g. "db unreachable" from the health check
    host: str = ""  # the host it runs on (a lab over several hosts); "" on one host

    def has_fault(self, kind: str) -> bool:
        return any(f == kind or f.startswith(kind + " ") for f in self.faults)


@dataclass(frozen=True)
class EventView:
    """One line of the timeline. ``kind`` is 'fault' for actions done to the lab (faults, restore,
    traffic), 'probe' for what the lab did in response (HAProxy DOWN/UP, cluster changes),
    'traffic' for client-side facts, 'error' for failed actions, 'info' otherwise."""

    seq: int
    t: float
    kind: str
    text: str
    node: str | None = None


@dataclass(frozen=True)
class FailoverView:
    """The last failover measured: what clients felt next to what the configuration predicts."""

    fault: str
    node: str
    started: float
    detection_s: float | None = None
    expected_detection_s: float | None = None
    failed_reads: int = 0
    failed_writes: int = 0
    failed_pages: int = 0
    error_window_s: float = 0.0
    max_latency_ms: float | None = None
    recovery_s: float | None = None
    complete: bool = False

    @classmethod
    def from_measure(cls, d: dict[str, Any]) -> FailoverView:
        """From ``MeasureResult.to_dict()`` (what a 'measure' event carries and ``measure_failover``
        returns): the fields the view shows, named as the measurement names them."""
        return cls(fault=str(d["fault"]), node=str(d["node"]), started=float(d["fault_at"]),
                   detection_s=d.get("detection_s"), expected_detection_s=d.get("expected_detection_s"),
                   failed_reads=int(d.get("failed_reads", 0)), failed_writes=int(d.get("failed_writes", 0)),
                   failed_pages=int(d.get("failed_pages", 0)),
                   error_window_s=float(d.get("error_window_s", 0.0)),
                   max_latency_ms=d.get("max_latency_ms"), recovery_s=d.get("recovery_s"),
                   complete=d.get("recovery_s") is not None)


@dataclass(frozen=True)
class TrafficState:
    running: bool = False
    rate: float = 0.0  # operations per second asked for
    available: bool = True


@dataclass(frozen=True)
class LabSnapshot:
    lab: str
    profile: str
    vip: str
    libvirt_uri: str
    taken_at: float
    exists: bool  # at least one of this lab's domains is defined
    nodes: tuple[NodeView, ...]
    series: tuple[TrafficPoint, ...]
    events: tuple[EventView, ...]
    failover: FailoverView | None
    traffic: TrafficState
    problems: tuple[str, ...] = ()
    expected_detection_s: float | None = None
    story: StoryView | None = None  # a scenario told as a story (running, or the last one told)

    def node(self, name: str) -> NodeView | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def last_event_seq(self) -> int:
        return max((e.seq for e in self.events), default=0)


@dataclass(frozen=True)
class ActionResult:
    action: str
    node: str | None
    message: str
    at: float
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """What a subscriber is told: something of ``kind`` changed ('event', 'sample', 'probe',
    'failover', 'faults', 'traffic')."""

    kind: str
    at: float
