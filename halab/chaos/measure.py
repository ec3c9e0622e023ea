"""Failover measurement: how long the lab took to notice a fault, what clients felt, how long it
took to come back — from a timeline, so it can be recomputed from a saved JSON Lines file.

Definitions (all times wall-clock seconds from the timeline):

* detection_s   — fault event → first "down" state change, for that node, from the source that
                  matters for its role: HAProxy for api nodes; Galera (ha) or the API health checks
                  (single db) for db; RabbitMQ (ha) or API health (single mq) for mq.
* client impact — operations *scheduled* in [fault, end of measurement): failed reads / writes /
                  pages; error_window_s = end of the last failed operation - start of the first
                  (0 when none failed); max_latency_ms over every operation in that window.
* recovery_s    — undo event (revive, resume, ...) → the node is back: its detection source says
                  "up" again *and* (api) a request was served by it, or (db, mq) a write succeeded.
* service_up_s  — (api) undo event → the node's own /healthcheck answers "ok" (its boot time, seen
                  from outside); rejoin_s = recovered_at - that moment: how long the balancer took to
                  put a healthy node back (rise x downinter plus the next request to reach it).
* expected_detection_s — from the configuration (see ``expected_detection``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from halab import fault_kinds
from halab.errors import ConfigError, HalabError, UsageError
from halab.fault_kinds import UNDO
from halab.lab.config import LabConfig
from halab.observe.timeline import Event, RequestRecord, Timeline, percentile

# Settings the roles use that lab.yaml does not carry yet (keep in step with cloud-init/).
KEEPALIVED_ADVERT_S = 1.0
KEEPALIVED_BACKUP_PRIORITY = 100
GALERA_SUSPECT_TIMEOUT_S = 5.0  # evs.suspect_timeout (PT5S, Galera's default)
RABBIT_NET_TICKTIME_S = 60.0


# Faults after which the node still answers, with a refused connection: each health check fails at
# once. Every other fault (kill, pause, netcut) leaves it silent: each check waits out its connect.
REFUSING_FAULTS = fault_kinds.REFUSING


def expected_detection(cfg: LabConfig, role: str, fault: str = "kill") -> tuple[float | None, str]:
    """(seconds, how it was computed) for a node of ``role`` failing by ``fault``; None when nothing
    in the lab is configured to notice (e.g. the only DB of the default profile)."""
    h = cfg.haproxy
    if role == "api":
        silent = fault not in REFUSING_FAULTS
        return h.expected_detection_s(silent), h.detection_basis(silent)
    if role == "haproxy":
        if cfg.roles["haproxy"].count < 2:
            return None, "single HAProxy: nothing takes over"
        skew = (256 - KEEPALIVED_BACKUP_PRIORITY) / 256 * KEEPALIVED_ADVERT_S
        return 3 * KEEPALIVED_ADVERT_S + skew, (
            f"keepalived 3 x advert_int {KEEPALIVED_ADVERT_S:g} s + skew {skew:.2f} s")
    if role == "db":
        if cfg.roles["db"].count < 2:
            return None, "single MariaDB: no cluster to notice"
        return GALERA_SUSPECT_TIMEOUT_S, f"Galera evs.suspect_timeout {GALERA_SUSPECT_TIMEOUT_S:g} s"
    if role == "mq":
        if cfg.roles["mq"].count < 2:
            return None, "single RabbitMQ: no cluster to notice"
        return RABBIT_NET_TICKTIME_S, f"Erlang net_ticktime {RABBIT_NET_TICKTIME_S:g} s (±25 %)"
    return None, f"unknown role {role!r}"


def steady_state(tl: Timeline, since: float, seconds: int, probes: Any | None, now: float) -> bool:
    """The state an experiment starts from: ``seconds`` whole seconds of traffic without a failed
    request, and every HAProxy backend UP with no backend change in that window. Error-free
    traffic alone is not enough: a balancer already routing around a sick node serves fine, and
    killing another node then measures a different story."""
    last = [b for b in tl.buckets() if b.second >= since][-seconds:]
    if not (len(last) == seconds and all(b.errors == 0 for b in last)
            and all(b.read.ok + b.write.ok + b.page.ok > 0 for b in last)):
        return False
    if probes is None:
        return True
    if probes.backends_not_up():
        return False
    return not any(e.source == "haproxy" and e.node is not None
                   for e in tl.events(kind="probe", since=now - seconds))


def not_steady_why(probes: Any | None) -> str:
    why = probes.backends_not_up() if probes is not None else []
    return f"; not UP: {', '.join(why)}" if why else ""


def detection_sources(cfg: LabConfig, role: str) -> tuple[str, ...]:
    if role == "api":
        return ("haproxy",)
    if role == "db":
        return ("galera",) if cfg.roles["db"].count > 1 else ("health",)
    if role == "mq":
        return ("rabbitmq",) if cfg.roles["mq"].count > 1 else ("health",)
    return ("haproxy",)  # haproxy nodes: seen as their stats endpoint going unreachable


def state_change_matches(ev: Event, sources: tuple[str, ...], node: str, want: str) -> bool:
    """Is ``ev`` a change of ``node`` to ``want`` ("down"/"up") seen by one of its role's
    detection ``sources``? (The one matcher of detection and recovery, for measure and scenarios.)"""
    if ev.kind != "probe" or ev.source not in sources or ev.data.get("direction") != want:
        return False
    if ev.source == "health":  # single db / mq: any API node reporting it
        return True
    if ev.source == "galera" and ev.data.get("key") == "galera:size":
        return True
    if ev.source == "haproxy" and ev.node is None:  # that HAProxy's own stats endpoint
        return str(ev.data.get("key", "")).startswith(f"haproxy:{node}:")
    return ev.node == node


@dataclass
class MeasureResult:
    fault: str
    node: str
    role: str
    fault_at: float
    detection_s: float | None
    expected_detection_s: float | None
    failed_reads: int
    failed_writes: int
    failed_pages: int
    error_window_s: float
    max_latency_ms: float | None
    recovery_s: float | None
    expected_basis: str = ""
    detection_source: str | None = None
    detection_event: str | None = None
    detected_at: float | None = None
    revive_at: float | None = None
    recovered_at: float | None = None
    total_reads: int = 0
    total_writes: int = 0
    total_pages: int = 0
    first_error_at: float | None = None
    last_error_at: float | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    baseline_p99_ms: float | None = None
    service_up_s: float | None = None
    rejoin_s: float | None = None
    revive_kind: str | None = None  # warm (from a checkpoint) or cold (a boot): what recovery_s measured
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        return d

    @property
    def summary(self) -> str:
        det = f"{self.detection_s:.2f} s" if self.detection_s is not None else "not seen"
        exp = f"{self.expected_detection_s:.2f} s" if self.expected_detection_s is not None else "n/a"
        rec = f"{self.recovery_s:.1f} s" if self.recovery_s is not None else "not seen"
        if self.recovery_s is not None and self.service_up_s is not None and self.rejoin_s is not None:
            rec += (f" (service up after {self.service_up_s:.1f} s, back in rotation "
                    f"{self.rejoin_s:.1f} s later)")
        if self.recovery_s is not None and self.revive_kind:
            rec += f", {self.revive_kind} revive"
        return (f"{self.fault} {self.node}: detected in {det} (expected {exp}); failed reads "
                f"{self.failed_reads}, writes {self.failed_writes}, pages {self.failed_pages}; "
                f"recovered in {rec}")


def measure_failover(
    cfg: LabConfig,
    events: list[Event],
    requests: list[RequestRecord],
    fault: str,
    node: str,
    *,
    fault_at: float | None = None,
    until: float | None = None,
    target: str | None = None,
) -> MeasureResult:
    """The measurement for the last ``fault`` on ``node`` in these events (or the one at
    ``fault_at``), over operations scheduled until ``until`` (default: all). A host fault names its
    host as ``target`` (its fault and undo events) and one of that host's nodes as ``node`` (whose
    detection and recovery are timed)."""
    try:
        role = cfg.node(node).role
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    evs = sorted(events, key=lambda e: e.at)
    who = target or node
    fault_evs = [e for e in evs if e.kind == "fault" and e.node == who
                 and (e.data.get("action") or e.source) == fault]
    if fault_at is None:
        if not fault_evs:
            raise HalabError(f"no {fault} of {node} in the timeline")
        fault_at = fault_evs[-1].at
    undo = UNDO.get(fault)
    revive_ev = next((e for e in evs if e.kind == "fault" and e.node == who and e.at >= fault_at
                      and (e.data.get("action") or e.source) in (undo, "revive")), None)
    revive_at = revive_ev.at if revive_ev else None
    expected, basis = expected_detection(cfg, role, fault)
    sources = detection_sources(cfg, role)
    notes: list[str] = []

    # Detection: first "down" from the role's source after the fault (and before the undo).
    det = next((e for e in evs if e.at >= fault_at and (revive_at is None or e.at <= revive_at)
                and state_change_matches(e, sources, node, "down")), None)
    if det is None:
        notes.append(f"no {'/'.join(sources)} state change for {node} was seen after the fault")

    # Client impact.
    window = [r for r in requests if r.scheduled >= fault_at and (until is None or r.scheduled < until)]
    before = [r for r in requests if r.scheduled < fault_at]
    failed = [r for r in window if not r.ok]
    by_kind = {k: sum(1 for r in failed if r.kind == k) for k in ("read", "write", "page")}
    errors_by_kind: dict[str, int] = {}
    for r in failed:
        errors_by_kind[r.error or "error"] = errors_by_kind.get(r.error or "error", 0) + 1
    first_err = min((r.start for r in failed), default=None)
    last_err = max((r.end for r in failed), default=None)
    if not window:
        notes.append("no traffic was recorded after the fault")

    # Recovery.
    recovered_at = None
    service_up_at = None
    if revive_at is not None and role == "api":
        healthy = next((e for e in evs if e.at >= revive_at and e.kind == "probe" and e.source == "health"
                        and e.node == node and e.data.get("direction") == "up"), None)
        service_up_at = healthy.at if healthy else None
    if revive_at is not None:
        up = next((e for e in evs if e.at >= revive_at and state_change_matches(e, sources, node, "up")),
                  None)
        if up is not None:
            if role == "api":
                serving = [r.end for r in requests if r.ok and r.start >= revive_at and node in r.served_by]
            else:
                serving = [r.end for r in requests if r.ok and r.kind == "write" and r.start >= up.at]
            if serving:
                recovered_at = max(up.at, min(serving))
            else:
                notes.append(f"{node} was reported up but no request showed it serving")
        else:
            what = revive_ev.message if revive_ev else "the undo"
            notes.append(f"{node} was not reported up again after {what}")

    return MeasureResult(
        fault=fault, node=node, role=role, fault_at=fault_at,
        detection_s=(det.at - fault_at) if det else None,
        expected_detection_s=expected, expected_basis=basis,
        detection_source=det.source if det else None, detection_event=det.message if det else None,
        detected_at=det.at if det else None,
        failed_reads=by_kind["read"], failed_writes=by_kind["write"], failed_pages=by_kind["page"],
        total_reads=sum(1 for r in window if r.kind == "read"),
        total_writes=sum(1 for r in window if r.kind == "write"),
        total_pages=sum(1 for r in window if r.kind == "page"),
        error_window_s=(last_err - first_err) if failed and first_err is not None and last_err is not None
        else 0.0,
        first_error_at=first_err, last_error_at=last_err, errors_by_kind=errors_by_kind,
        max_latency_ms=max((r.latency_ms for r in window), default=None),
        baseline_p99_ms=percentile([r.latency_ms for r in before], 99),
        revive_at=revive_at, recovered_at=recovered_at,
        revive_kind=(revive_ev.data.get("revive") if revive_ev is not None else None),
        recovery_s=(recovered_at - revive_at) if recovered_at is not None and revive_at is not None else None,
        service_up_s=(service_up_at - revive_at) if service_up_at is not None and revive_at is not None
        else None,
        # Served before halab's own health probe (sampled about once a second) saw the node: the
        # balancer took no measurable time (seen after a warm revive, whose service is up at once).
        rejoin_s=max(0.0, recovered_at - service_up_at) if recovered_at is not None
        and service_up_at is not None else None,
        notes=notes,
    )


def measure_timeline(cfg: LabConfig, timeline: Timeline, fault: str, node: str, **kw: Any) -> MeasureResult:
    return measure_failover(cfg, timeline.events(), timeline.requests(), fault, node, **kw)


# ---- what an experiment drives (the scenario runner; ``halab.chaos.experiments.run_measurement``) --------


@dataclass
class LabHandles:
    """What a measurement drives. Anything with these methods works (the CLI passes the real
    Faults / TrafficGenerator / ProbeSet; tests pass simulations).

    faults:  apply(action, node, **params) -> FaultEvent; undo(action, node, **params) -> FaultEvent
    traffic: start(); stop(); set_rate(rate); running
    probes:  start(); stop()   (feeding ``timeline`` with probe events)
    """

    cfg: LabConfig
    timeline: Timeline
    faults: Any
    traffic: Any
    probes: Any | None = None
