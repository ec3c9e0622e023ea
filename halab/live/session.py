"""One running lab, seen and driven from one place: the facade the TUI (and `watch`) use.

A ``LabSession`` composes the core's modules (virt, faults, probes, traffic, timeline, measure,
lifecycle, scenarios) and adds nothing of its own but a consistent, immutable view of the lab
(``snapshot()``) and a change feed (``subscribe()``). It never imports Textual and never prints.

Modules that have not landed yet make the matching calls raise ``NotAvailableYet``; everything
else keeps working.

Thread safety: actions are blocking (libvirt, SSH, tc) and are meant to run in worker threads.
``snapshot()`` may be called from any thread; change callbacks run on whatever thread produced the
change (the timeline's, a fault action's), so subscribers must hand them to their own loop.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from halab import fault_kinds
from halab.chaos.story import Story, StoryView
from halab.errors import HalabError, NotAvailableYet, UsageError
from halab.lab.config import PROFILE_COUNTS, PROFILES, LabConfig, check_rate, parse_config
from halab.lab.lifecycle import Progress as UpProgress  # one progress shape: `up`'s own

EVENT_KEEP = 500
HOST_KEY_MISMATCH = "host key mismatch"  # a node's health when it presented a key halab did not give it
SERIES_KEEP = 600  # seconds of per-second traffic figures kept in memory


# ---- the view ------------------------------------------------------------------------------------


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
class TrafficPoint:
    """Client-side traffic for one second, starting at ``t`` (wall-clock seconds)."""

    t: float
    reads_ok: int = 0
    reads_err: int = 0
    writes_ok: int = 0
    writes_err: int = 0
    pages_ok: int = 0
    pages_err: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    share: dict[str, float] = field(default_factory=dict)  # node -> fraction of responses

    @property
    def ok(self) -> int:
        return self.reads_ok + self.writes_ok + self.pages_ok

    @property
    def errors(self) -> int:
        return self.reads_err + self.writes_err + self.pages_err


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


@dataclass(frozen=True)
class TrafficState:
    running: bool = False
    rate: float = 0.0  # requests per second asked for
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


# ---- helpers -------------------------------------------------------------------------------------


def config_with_profile(cfg: LabConfig, profile: str) -> LabConfig:
    """The same lab definition with another profile's node counts (memory, network, presets kept)."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == cfg.profile:
        return cfg
    d = cfg.to_dict()
    d["profile"] = profile
    for role, count in PROFILE_COUNTS[profile].items():
        d["roles"][role]["count"] = count
    if d.get("image") == "builtin":
        d.pop("image")
    return parse_config(yaml.safe_dump(d), cfg.source)


def _optional(module: str) -> Any | None:
    """A core module that may not have landed yet (None if absent)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """The first present attribute (or mapping key) among ``names``: adapts to records whose exact
    field names belong to other modules."""
    for n in names:
        if isinstance(obj, dict):
            if n in obj:
                return obj[n]
        elif hasattr(obj, n):
            return getattr(obj, n)
    return default


def _fault_label(kind: str, params: dict[str, Any]) -> str:
    if kind == "netem":
        parts = []
        if params.get("delay_ms"):
            parts.append(f"{params['delay_ms']:g} ms")
        if params.get("loss_pct"):
            parts.append(f"{params['loss_pct']:g} %")
        return "netem " + " ".join(parts) if parts else "netem"
    if kind == "stop-service" and params.get("service"):
        return f"stop-service {params['service']}"
    return kind


# ---- the session ---------------------------------------------------------------------------------


class LabSession:
    """The lab as the TUI sees it. Pieces may be injected (tests); otherwise built from ``cfg``."""

    def __init__(
        self,
        cfg: LabConfig,
        *,
        virt: Any | None = None,
        faults: Any | None = None,
        probes: Any | None = None,
        traffic: Any | None = None,
        timeline: Any | None = None,
        clock: Callable[[], float] = time.time,
        scenario_dir: Path | None = None,
    ):
        self.cfg = cfg
        self.clock = clock
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[Change], None]] = []
        self._events: deque[EventView] = deque(maxlen=EVENT_KEEP)
        self._series: deque[TrafficPoint] = deque(maxlen=SERIES_KEEP)
        self._probe: dict[str, dict[str, Any]] = {}
        self._failover: FailoverView | None = None
        self._seq = 0
        self._traffic_rate = float(cfg.traffic.rate)
        self._closed = False
        self._measuring: tuple[str, str, float] | None = None  # (fault, node, at) being measured
        self._measured_at = 0.0
        self._story: Story | None = None
        self.scenario_dir = scenario_dir or Path(__file__).resolve().parents[2] / "scenarios"

        virt_given = virt is not None
        if virt is None:
            from halab.lab.virt import LabVirt

            virt = LabVirt(cfg)
        self.virt = virt
        if faults is None:
            from halab.chaos.faults import Faults

            faults = Faults(cfg, virt, ssh=self._default_ssh())
        self.faults = faults
        self.probes = probes
        self._auto_probes = probes is None and virt_given is False
        self.traffic = traffic
        self._traffic_module = traffic is None and _optional("halab.observe.traffic") is not None
        if timeline is None:
            tl_mod = _optional("halab.observe.timeline")
            # Request records are kept: the live failover measurement reads them.
            timeline = tl_mod.Timeline(keep_requests=True, clock=clock) if tl_mod is not None else None
        self.timeline = timeline
        if timeline is not None:
            self._subscribe_timeline(timeline)
        self._chain_fault_events(faults)

    # ---- wiring to the core ------------------------------------------------------------------
    def _default_ssh(self) -> Callable[[str, str], tuple[int, str, str]]:
        """Guest commands as root with the lab's key and known_hosts (strict host-key checking)."""
        from halab.lab.lifecycle import lab_ssh
        from halab.lab.ssh import NodeSSH

        holder: dict[str, NodeSSH] = {}

        def run(node: str, command: str) -> tuple[int, str, str]:
            from halab.lab.ssh import HostKeyMismatch

            if "c" not in holder:
                holder["c"] = lab_ssh(self.cfg)
            try:
                r = holder["c"].run(self.cfg.node(node).ip, command)
            except HostKeyMismatch:
                self.record_probe(node, host_key_mismatch=True)  # its own state in the view
                raise
            if self._probe.get(node, {}).get("host_key_mismatch"):
                self.record_probe(node, host_key_mismatch=False)
            return r.rc, r.stdout, r.stderr

        return run

    def _chain_fault_events(self, faults: Any) -> None:
        """Faults report each action through ``on_event``; keep any existing listener."""
        previous = getattr(faults, "on_event", None)
        to_timeline = getattr(self.timeline, "on_fault", None)
        if previous is not None and previous == to_timeline:
            previous = None  # already wired to our timeline: do not record twice

        def on_event(ev: Any) -> None:
            if previous is not None:
                previous(ev)
            if to_timeline is not None:
                to_timeline(ev)  # comes back through the subscription
            else:
                self._append_event(_get(ev, "message", default=str(ev)), "fault", _get(ev, "node"),
                                   _get(ev, "at", "t"))
            self._notify("faults")

        if hasattr(faults, "on_event"):
            faults.on_event = on_event

    def _subscribe_timeline(self, timeline: Any) -> None:
        if hasattr(timeline, "subscribe"):
            timeline.subscribe(self._on_timeline_item)

    def _on_timeline_item(self, item: Any) -> None:
        """Adapter from the timeline's records (events and per-second buckets) to the view."""
        if _get(item, "reads_ok", "ok_reads") is not None or type(item).__name__.lower().endswith(
                ("bucket", "sample", "second")):
            self.record_sample(self._point_from(item))
            return
        text = _get(item, "text", "message", default=None) or str(item)
        kind = str(_get(item, "kind", default="info"))
        source = _get(item, "source")
        if kind in ("note", "measure"):
            kind = {"action": "fault", "error": "error"}.get(str(source), "info")
        self._append_event(text, kind, _get(item, "node"), _get(item, "t", "at", "time"))
        fo = _get(item, "failover")
        if fo is not None:
            self.record_failover(fo)

    def _point_from(self, b: Any) -> TrafficPoint:
        if isinstance(b, TrafficPoint):
            return b
        share = _get(b, "share", "per_node", default={}) or {}
        return TrafficPoint(
            t=float(_get(b, "t", "second", "start", default=self.clock())),
            reads_ok=int(_get(b, "reads_ok", "ok_reads", default=0)),
            reads_err=int(_get(b, "reads_err", "reads_failed", "failed_reads", default=0)),
            writes_ok=int(_get(b, "writes_ok", "ok_writes", default=0)),
            writes_err=int(_get(b, "writes_err", "writes_failed", "failed_writes", default=0)),
            pages_ok=int(_get(b, "pages_ok", "ok_pages", default=0)),
            pages_err=int(_get(b, "pages_err", "pages_failed", "failed_pages", default=0)),
            p50_ms=_get(b, "p50_ms"),
            p99_ms=_get(b, "p99_ms"),
            max_ms=_get(b, "max_ms", "max_latency_ms"),
            share=dict(share),
        )

    # ---- feeding the view (timeline adapter, probes, tests, recorded samples) -------------------
    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(Change)`` on every change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, kind: str) -> None:
        with self._lock:
            subs = list(self._subscribers)
        change = Change(kind, self.clock())
        for cb in subs:
            cb(change)

    def record_event(self, text: str, *, kind: str = "info", node: str | None = None,
                     t: float | None = None) -> None:
        """A line for the timeline: 'fault' (an action done to the lab), 'error' (an action that
        failed), 'probe', 'info'. Goes through the lab's timeline (and its JSON Lines) when there is
        one."""
        tl = self.timeline
        if tl is not None and hasattr(tl, "event"):
            # Actions the user took are notes (the timeline's 'fault' kind is for faults only).
            tl_kind, source = {"probe": ("probe", None), "fault": ("note", "action"),
                               "error": ("note", "error")}.get(kind, ("note", None))
            tl.event(tl_kind, text, node=node, source=source, at=t)
            return
        self._append_event(text, kind, node, t)

    def _append_event(self, text: str, kind: str, node: str | None, t: float | None) -> EventView:
        with self._lock:
            self._seq += 1
            ev = EventView(self._seq, float(t if t is not None else self.clock()), kind, text, node)
            self._events.append(ev)
        self._notify("event")
        return ev

    def record_sample(self, point: TrafficPoint) -> None:
        with self._lock:
            if self._series and self._series[-1].t == point.t:
                self._series[-1] = point  # a second's figures, revised
            else:
                self._series.append(point)
        self._notify("sample")

    def record_probe(self, node: str, **values: Any) -> None:
        """Probe results for one node: health=, backend=, detail=."""
        with self._lock:
            self._probe.setdefault(node, {}).update(values)
        self._notify("probe")

    def record_failover(self, result: Any) -> None:
        """A failover measurement (``halab.chaos.measure``'s result or a FailoverView)."""
        if not isinstance(result, FailoverView):
            names = {f.name for f in fields(FailoverView)}
            values = {n: _get(result, n) for n in names}
            values["fault"] = values.get("fault") or _get(result, "action", default="fault")
            values["node"] = values.get("node") or "?"
            values["started"] = values.get("started") or _get(result, "fault_at", "at", "t",
                                                              default=self.clock())
            if values.get("complete") is None:
                values["complete"] = _get(result, "recovery_s") is not None
            result = FailoverView(**{k: v for k, v in values.items() if v is not None})
        with self._lock:
            self._failover = result
        self._notify("failover")

    # ---- the view ----------------------------------------------------------------------------
    def expected_detection_s(self) -> float:
        return self.cfg.haproxy.expected_detection_s()

    def snapshot(self) -> LabSnapshot:
        """The lab now. Blocking (one libvirt listing, one read of the fault record)."""
        problems: list[str] = []
        try:
            states = {k: str(getattr(v, "value", v)) for k, v in self.virt.states().items()}
        except HalabError as exc:
            states = {}
            problems.append(str(exc))
        try:
            active = list(self.faults.active())
        except HalabError as exc:
            active = []
            problems.append(str(exc))
        by_node: dict[str, list[str]] = {}
        for f in active:
            by_node.setdefault(f.node, []).append(_fault_label(f.kind, dict(f.params)))
        self._poll_probes(problems)
        if self.timeline is not None and hasattr(self.timeline, "tick"):
            self.timeline.tick()  # close the seconds that ended (publishes their buckets)
        self._measure_live(problems)
        with self._lock:
            series = tuple(self._series)
            # Time order, not arrival order: a probe reports a change with the time it was sampled,
            # which can be before an action logged a moment earlier.
            events = tuple(sorted(self._events, key=lambda e: (e.t, e.seq)))
            probe = {k: dict(v) for k, v in self._probe.items()}
            failover = self._failover
        last_share = series[-1].share if series else {}
        nodes = []
        for n in self.cfg.nodes():
            p = probe.get(n.name, {})
            share = last_share.get(n.name) if n.role == "api" and series else None
            nodes.append(NodeView(
                name=n.name, role=n.role, ip=n.ip, state=states.get(n.name, "unknown"),
                health=HOST_KEY_MISMATCH if p.get("host_key_mismatch") else str(p.get("health", "unknown")),
                backend=str(p.get("backend", "—" if n.role != "api" else "?")),
                share=share, faults=tuple(by_node.get(n.name, ())) + tuple(by_node.get(n.host, ())) if n.host
                else tuple(by_node.get(n.name, ())), detail=str(p.get("detail", "")), host=n.host,
            ))
        exists = any(s not in ("missing", "unknown") for s in states.values())
        if exists and self._auto_probes:
            self._start_probes(problems)
        if self.probes is None and exists and not probe:
            problems.append("health and HAProxy backend states need the probes (issue 6)")
        return LabSnapshot(
            lab=self.cfg.name, profile=self.cfg.profile, vip=self.cfg.vip,
            libvirt_uri=self.cfg.libvirt_uri, taken_at=self.clock(), exists=exists,
            nodes=tuple(nodes), series=series[-180:], events=events[-200:], failover=failover,
            traffic=self._traffic_state(), problems=tuple(problems),
            expected_detection_s=self.expected_detection_s(),
            story=self._story.view() if self._story is not None else None,
        )

    MEASURE_FOR_S = 300.0  # a fault is measured live for this long, or until it has recovered

    def _measure_live(self, problems: list[str]) -> None:
        """The last fault done from this session, measured (``halab.chaos.measure``) once a second."""
        m = self._measuring
        now = self.clock()
        if m is None or now - self._measured_at < 1.0 or self.timeline is None:
            return
        mod = _optional("halab.chaos.measure")
        if mod is None or not hasattr(self.timeline, "requests"):
            return
        fault, node, at = m
        self._measured_at = now
        try:
            result = mod.measure_failover(self.cfg, self.timeline.events(),
                                          self.timeline.requests(since=at - 5.0), fault, node, fault_at=at)
        except HalabError as exc:
            problems.append(f"measuring {fault} {node}: {exc}")
            return
        self.record_failover(result)
        if result.recovery_s is not None or now - at > self.MEASURE_FOR_S:
            self._measuring = None

    def _start_probes(self, problems: list[str]) -> None:
        """Once the lab exists: the probe set (HAProxy stats, health, clusters) feeding the
        timeline. Needs the lab's credentials, so it never starts for a lab that is not there."""
        self._auto_probes = False
        mod = _optional("halab.observe.probes")
        if mod is None or not hasattr(mod, "ProbeSet"):
            return
        try:
            from halab.lab.secrets import load_or_create_secrets

            secrets = load_or_create_secrets(self.cfg)
            self.probes = mod.ProbeSet.for_lab(
                self.cfg, self.virt, stats_auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password),
                ssh=getattr(self.faults, "ssh", None), timeline=self.timeline)
            self.probes.start()
        except HalabError as exc:
            problems.append(f"probes not started: {exc}")
            return
        if hasattr(self.faults, "boot_priority"):
            from halab.chaos.boot_priority import BootPriority, settled_text

            def settled(node: str, timed_out: bool) -> None:
                self.record_event(settled_text(node, timed_out), node=node)

            self.faults.boot_priority = BootPriority(self.cfg, self.virt, on_settled=settled)
            self.faults.boot_priority.start()

    def _poll_probes(self, problems: list[str]) -> None:
        """Pull the latest probe readings, if the probes expose them (``latest()``)."""
        if self.probes is None or not hasattr(self.probes, "latest"):
            return
        try:
            latest = self.probes.latest()
        except HalabError as exc:
            problems.append(str(exc))
            return
        if not latest:
            return
        for node, reading in dict(_get(latest, "nodes", default=latest) or {}).items():
            values = {k: _get(reading, k) for k in ("health", "backend", "detail")}
            with self._lock:
                self._probe.setdefault(node, {}).update({k: v for k, v in values.items() if v is not None})

    def _traffic_state(self) -> TrafficState:
        if self.traffic is None:
            return TrafficState(False, self._traffic_rate, available=self._traffic_module)
        running = bool(_get(self.traffic, "running", "is_running", default=False))
        if callable(running):
            running = bool(running())
        rate = _get(self.traffic, "rate", default=self._traffic_rate)
        return TrafficState(running, float(rate() if callable(rate) else rate), True)

    # ---- actions -----------------------------------------------------------------------------
    def _act(self, action: str, node: str, **params: Any) -> ActionResult:
        ev = self.faults.apply(action, node, **params)
        if fault_kinds.kind(action).is_fault:  # a fault starts a measurement; an undo does not
            self._measuring = (action, node, float(_get(ev, "at", default=self.clock())))
            self._measured_at = 0.0
        return ActionResult(action, node, _get(ev, "message", default=f"{action} {node}"),
                            float(_get(ev, "at", default=self.clock())))

    def kill(self, node: str) -> ActionResult:
        return self._act("kill", node)

    def revive(self, node: str, warm: bool | None = None) -> ActionResult:
        """``warm``: True from the `ready` checkpoint, False a cold boot, None lab.yaml's `revive:`."""
        return self._act("revive", node, **({} if warm is None else {"warm": warm}))

    def reset(self, name: str = "ready") -> ActionResult:
        """The whole lab back to a checkpoint (`./lab.py reset`); the fault records follow it."""
        from halab.lab import checkpoint

        t = self.clock()
        res = checkpoint.reset(self.cfg, name)
        at = self.clock()
        msg = f"reset to {name!r} in {res.seconds.get('total', at - t):.1f} s"
        self._measuring = None
        self.record_event(msg + ("" if res.healthy else " (not healthy yet)"), kind="fault", t=at)
        return ActionResult("reset", None, msg, at, tuple(res.problems))

    def pause(self, node: str) -> ActionResult:
        return self._act("pause", node)

    def resume(self, node: str) -> ActionResult:
        return self._act("resume", node)

    def reboot(self, node: str) -> ActionResult:
        return self._act("reboot", node)

    def netcut(self, node: str) -> ActionResult:
        return self._act("netcut", node)

    def netrestore(self, node: str) -> ActionResult:
        return self._act("netrestore", node)

    def netem(self, node: str, delay_ms: float = 200.0, loss_pct: float = 0.0) -> ActionResult:
        """Latency (and loss) towards one node; ``delay_ms=0, loss_pct=0`` clears it."""
        if delay_ms == 0 and loss_pct == 0:
            return self._act("netem-clear", node)
        return self._act("netem", node, delay_ms=delay_ms, loss_pct=loss_pct)

    def stop_service(self, node: str, service: str | None = None) -> ActionResult:
        return self._act("stop-service", node, **({"service": service} if service else {}))

    def start_service(self, node: str, service: str | None = None) -> ActionResult:
        return self._act("start-service", node, **({"service": service} if service else {}))

    def restore_all(self) -> ActionResult:
        done, problems = self.faults.restore()
        at = self.clock()
        msg = f"restore all: {len(done)} fault(s) undone" if done else "restore all: nothing to undo"
        self.record_event(msg + (f", {len(problems)} left" if problems else ""), kind="fault", t=at)
        return ActionResult("restore", None, msg, at, tuple(problems))

    # ---- traffic -----------------------------------------------------------------------------
    def _need_traffic(self) -> Any:
        if self.traffic is None:
            mod = _optional("halab.observe.traffic")
            if mod is None:
                raise NotAvailableYet("the traffic generator is not available yet (tracked in issue 6)")
            on_record = getattr(self.timeline, "add_request", None)
            self.traffic = mod.TrafficGenerator.for_lab(self.cfg, on_record=on_record,
                                                        rate=self._traffic_rate)
        return self.traffic

    def start_traffic(self, rate: float | None = None) -> ActionResult:
        gen = self._need_traffic()
        if rate is not None:
            self._traffic_rate = float(rate)
        if hasattr(gen, "set_rate"):
            gen.set_rate(self._traffic_rate)
        gen.start()
        at = self.clock()
        self.record_event(f"traffic started at {self._traffic_rate:g} ops/s", kind="fault", t=at)
        self._notify("traffic")
        return ActionResult("traffic-start", None, f"traffic at {self._traffic_rate:g} ops/s", at)

    def stop_traffic(self) -> ActionResult:
        gen = self._need_traffic()
        gen.stop()
        at = self.clock()
        self.record_event("traffic stopped", kind="fault", t=at)
        self._notify("traffic")
        return ActionResult("traffic-stop", None, "traffic stopped", at)

    def set_rate(self, rate: float) -> ActionResult:
        check_rate(rate)
        self._traffic_rate = float(rate)
        if self.traffic is not None and hasattr(self.traffic, "set_rate"):
            self.traffic.set_rate(self._traffic_rate)
        self._notify("traffic")
        return ActionResult("traffic-rate", None, f"traffic rate {rate:g} ops/s", self.clock())

    # ---- scenarios and life cycle -----------------------------------------------------------
    def scenarios(self) -> list[Path]:
        return sorted(self.scenario_dir.glob("*.yaml")) if self.scenario_dir.is_dir() else []

    def run_scenario(self, path: str | Path, story: bool = True, auto: bool = False) -> ActionResult:
        """Run a scenario on this session's lab; as a story (the default in the TUI) its narration,
        pauses and live hypotheses are in every snapshot until the next one starts."""
        mod = _optional("halab.chaos.scenarios")
        if mod is None or not hasattr(mod, "run_scenario"):
            raise NotAvailableYet("running scenarios is not available yet (tracked in issue 8)")
        if self._story is not None and not self._story.view().done:
            raise UsageError(f"the story {self._story.title!r} is still running")
        kw: dict[str, Any] = {}
        if story:
            sc = mod.load_scenario(path)
            sc.check_lab(self.cfg)
            self._story = Story.for_scenario(sc, auto=auto)
            kw["story"] = self._story
        at = self.clock()
        self.record_event(f"scenario {Path(path).stem} started", kind="fault", t=at)
        try:
            result = mod.run_scenario(self.cfg, Path(path), session=self, **kw)
        except BaseException:
            if self._story is not None:
                self._story.finish(False)
            raise
        finally:
            self._notify("story")
        ok = bool(_get(result, "passed", "ok", default=True))
        msg = f"scenario {Path(path).stem}: {'passed' if ok else 'FAILED'}"
        self.record_event(msg, kind="fault" if ok else "error")
        return ActionResult("scenario", None, msg, at)

    def story_next(self) -> ActionResult:
        """The presenter's key: the story's paused step goes on."""
        story = self._story
        if story is None or story.view().done:
            raise UsageError("no story is running (x runs a scenario as a story)")
        went = story.next()
        self._notify("story")
        msg = "story: next step" if went else "story: not waiting (it goes on by itself)"
        return ActionResult("story-next", None, msg, self.clock())

    def story_run_on(self) -> ActionResult:
        """The presenter's key: no more pauses in this run."""
        story = self._story
        if story is None or story.view().done:
            raise UsageError("no story is running (x runs a scenario as a story)")
        story.run_on()
        self._notify("story")
        return ActionResult("story-auto", None, "story: runs on without pauses", self.clock())

    def up(self, profile: str | None = None,
           progress_cb: Callable[[UpProgress], None] | None = None) -> Any:
        """Build the lab (the lifecycle's ``up``) with the chosen profile, reporting progress."""
        mod = _optional("halab.lab.lifecycle")
        if mod is None or not hasattr(mod, "up"):
            raise NotAvailableYet("bringing the lab up is not available yet (tracked in issue 4)")
        cfg = config_with_profile(self.cfg, profile or self.cfg.profile)

        result = mod.up(cfg, progress=progress_cb)  # the lifecycle's own Progress, passed on as it is
        if cfg is not self.cfg:
            self._adopt(cfg)
        return result

    def _adopt(self, cfg: LabConfig) -> None:
        """After `up` with another profile, the session follows the lab that now exists."""
        self.cfg = cfg
        for part in (self.virt, self.faults):
            if hasattr(part, "cfg"):
                part.cfg = cfg

    # ---- end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop what this session started (traffic, probes). The lab itself keeps running."""
        if self._closed:
            return
        self._closed = True
        boot_priority = getattr(self.faults, "boot_priority", None)
        if boot_priority is not None:
            boot_priority.stop()
        for part in (self.traffic, self.probes, self.timeline):
            stop = getattr(part, "stop", None) or getattr(part, "close", None)
            if stop is not None:
                with contextlib.suppress(HalabError):  # closing is best effort; the lab keeps running
                    stop()


def synthetic_points(start: float, seconds: int, rate: float = 50.0, *, errors_at: Iterable[int] = (),
                     nodes: Iterable[str] = ("api-1", "api-2", "api-3", "api-4")) -> list[TrafficPoint]:
    """Deterministic per-second figures (tests, demos, benchmarks): 70/10/20 % reads/writes/pages,
    with errors in the seconds listed in ``errors_at``."""
    names = list(nodes)
    err = set(errors_at)
    out = []
    for i in range(seconds):
        total = int(rate)
        reads, writes = int(total * 0.7), int(total * 0.1)
        pages = total - reads - writes
        bad = i in err
        wobble = (i * 7) % 5
        out.append(TrafficPoint(
            t=start + i,
            reads_ok=reads - (3 if bad else 0), reads_err=3 if bad else 0,
            writes_ok=writes - (1 if bad else 0), writes_err=1 if bad else 0,
            pages_ok=pages - (2 if bad else 0), pages_err=2 if bad else 0,
            p50_ms=12.0 + wobble / 2, p99_ms=40.0 + wobble + (900 if bad else 0),
            max_ms=60.0 + 5 * wobble + (1500 if bad else 0),
            share={n: 1 / len(names) for n in names} if names else {},
        ))
    return out
