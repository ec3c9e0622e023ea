"""The running lab, owned in one place: every front end (CLI commands, scenarios, bench, the TUI,
`watch`, browser viewers through the TUI) drives the lab through one ``LabEngine``.

The engine owns libvirt, SSH, faults, probes, traffic, the timeline, boot priority and its own
clock (a thread that closes each second's traffic, reads the probes and measures the last fault).
Front ends send it commands (``apply``, ``restore``, ``start_traffic``, ``set_preset``,
``run_scenario``...) and read immutable ``LabSnapshot``s: ``snapshot()`` is a pure read (one libvirt
listing and the fault record); it never starts, ticks or measures anything.

Thread safety: commands block (libvirt, SSH, tc) and are meant for worker threads. ``snapshot()``
may be called from any thread. Change callbacks (``subscribe``) run on whatever thread produced the
change, so subscribers hand them to their own loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from halab import fault_kinds
from halab.chaos.boot_priority import BootPriority, settled_text
from halab.chaos.faults import FaultEvent, Faults
from halab.chaos.measure import LabHandles, measure_failover
from halab.chaos.scenario import (
    Scenario,
    ScenarioResult,
    ScenarioRunner,
    lab_resetter,
    push_haproxy_config,
    with_preset,
)
from halab.chaos.story import Story
from halab.errors import HalabError, UsageError
from halab.lab import checkpoint as warm
from halab.lab.checkpoint import RestoreResult
from halab.lab.config import LabConfig, check_rate
from halab.lab.lifecycle import LabNotUp, lab_exists, lab_ssh
from halab.lab.secrets import load_or_create_secrets
from halab.lab.ssh import HostKeyMismatch, NodeSSH, answer_wait_s
from halab.lab.virt import LabVirt
from halab.live.view import (
    HOST_KEY_MISMATCH,
    Change,
    EventView,
    FailoverView,
    LabSnapshot,
    NodeView,
    TrafficState,
)
from halab.lock import LabLock
from halab.observe.probes import ProbeSet
from halab.observe.timeline import Event, Timeline, TimelineItem, TrafficBucket, TrafficPoint
from halab.observe.traffic import TrafficGenerator
from halab.paths import lab_state_dir

EVENT_KEEP = 500
SERIES_KEEP = 600  # seconds of per-second traffic figures kept in memory
TICK_S = 0.25  # the engine's clock: timeline seconds closed and probes read this often
MEASURE_EVERY_S = 1.0
MEASURE_FOR_S = 300.0  # a fault is measured live for this long, or until it has recovered
CLOSE_WAIT_S = 120.0  # how long close() waits for a cancelled scenario to clean up (undo its faults)

SshRun = Callable[[str, str], tuple[int, str, str]]


class TrafficControl(Protocol):
    """What the engine asks of a traffic generator (``TrafficGenerator``; the demo's stand-in)."""

    @property
    def rate(self) -> float: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def set_rate(self, rate: float) -> None: ...


class LabShell:
    """Guest commands as root over the lab's SSH (its key, strict host-key checking), connected on
    first use. A node that presents a key halab did not give it is reported to ``on_host_key``
    (node, mismatch) and the error goes on up."""

    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        self.on_host_key: Callable[[str, bool], None] | None = None
        self._ssh: NodeSSH | None = None
        self._lock = threading.Lock()
        self._mismatched: set[str] = set()

    def run(self, node: str, command: str) -> tuple[int, str, str]:
        with self._lock:
            if self._ssh is None:
                self._ssh = lab_ssh(self.cfg)
            ssh = self._ssh
        try:
            res = ssh.run(self.cfg.node(node).ip, command, timeout=answer_wait_s(command))
        except HostKeyMismatch:
            self._host_key(node, True)
            raise
        if node in self._mismatched:
            self._host_key(node, False)
        return res.rc, res.stdout, res.stderr

    def _host_key(self, node: str, mismatch: bool) -> None:
        (self._mismatched.add if mismatch else self._mismatched.discard)(node)
        if self.on_host_key is not None:
            self.on_host_key(node, mismatch)

    def close(self) -> None:
        with self._lock:
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None


def fault_label(kind: str, params: dict[str, object]) -> str:
    """How an active fault reads in a node's row: "netem 200 ms 5 %", "stop-service mariadb"."""
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


def view_kind(ev: Event) -> str:
    """A timeline event's line kind in the view: 'fault' for actions done to the lab, 'probe' for
    what the lab did, 'error' for failed actions, 'info' otherwise (notes and measurements)."""
    if ev.kind in ("note", "measure"):
        return {"action": "fault", "error": "error"}.get(str(ev.source), "info")
    return ev.kind


class LabEngine:
    """One running lab. Built by ``open`` (the real lab) or from parts (the demo lab, tests)."""

    def __init__(self, cfg: LabConfig, *, virt: LabVirt, faults: Faults,
                 timeline: Timeline | None = None, traffic: TrafficControl | None = None,
                 probes: ProbeSet | None = None,
                 shell: LabShell | None = None, clock: Callable[[], float] = time.time,
                 scenario_dir: Path | None = None, auto_observe: bool = False,
                 reset_lab: Callable[[str], str] | None = None, tick_s: float = TICK_S,
                 owns_virt: bool = False):
        self.cfg = cfg
        self.clock = clock
        self.virt = virt
        self.faults = faults
        # Request records are kept: scenarios and the live failover measurement read them.
        self.timeline = timeline if timeline is not None else Timeline(keep_requests=True, clock=clock)
        self.traffic: TrafficControl | None = traffic
        self.probes = probes
        self.shell = shell
        self.reset_lab = reset_lab  # checkpoint name -> what happened (a real lab only)
        self._owns_virt = owns_virt  # opened here: closed with the engine
        self.scenario_dir = scenario_dir or Path(__file__).resolve().parents[2] / "scenarios"
        self._auto_observe = auto_observe  # probes start on the engine's clock once the lab exists
        self._haproxy = cfg.haproxy  # the health-check settings installed on the balancers now
        self._rate = float(cfg.traffic.rate)
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[Change], None]] = []
        self._events: deque[EventView] = deque(maxlen=EVENT_KEEP)
        self._series: deque[TrafficPoint] = deque(maxlen=SERIES_KEEP)
        self._probe: dict[str, dict[str, object]] = {}
        self._failover: FailoverView | None = None
        self._problems: tuple[str, ...] = ()
        self._seq = 0
        self._measuring: tuple[str, str, float] | None = None  # (fault, node, at) being measured
        self._measured_at = 0.0
        self._story: Story | None = None
        self._cancel = threading.Event()  # the running scenario's, set by close()
        self._scenario_done = threading.Event()
        self._scenario_done.set()
        self._closed = False
        self._stop = threading.Event()
        self._observe_checked = 0.0
        if shell is not None:
            shell.on_host_key = self._host_key
        previous = faults.on_event
        self._fault_listener = previous if previous not in (None, self.timeline.on_fault) else None
        faults.on_event = self._on_fault
        self._unsubscribe = self.timeline.subscribe(self._on_timeline_item)
        self._ticker = threading.Thread(target=self._run_clock, args=(tick_s,), name="lab-engine-clock",
                                        daemon=True)
        self._ticker.start()

    @classmethod
    def open(cls, cfg: LabConfig, *, require_up: bool = True, auto_observe: bool = False,
             scenario_dir: Path | None = None) -> LabEngine:
        """The one way to open the running lab: libvirt, the lab's SSH, faults, a timeline.
        ``require_up``: refuse a lab that does not exist (the CLI); the TUI opens any lab and
        ``auto_observe`` starts the probes once it exists."""
        if require_up and not lab_exists(cfg):
            raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")
        shell = LabShell(cfg)
        virt = LabVirt(cfg)
        faults = Faults(cfg, virt, ssh=shell.run)
        return cls(cfg, virt=virt, faults=faults, shell=shell, auto_observe=auto_observe,
                   scenario_dir=scenario_dir, reset_lab=lab_resetter(cfg), owns_virt=True)

    # ---- observing -------------------------------------------------------------------------------
    def start_observing(self, traffic: bool = False) -> None:
        """Probes (HAProxy stats, health, clusters) and boot priority feeding the timeline; with
        ``traffic`` the traffic generator too (built, not started). Needs the lab's credentials,
        so it is for a lab that exists."""
        self._auto_observe = False
        if self.probes is None:
            secrets = load_or_create_secrets(self.cfg)
            self.probes = ProbeSet.for_lab(
                self.cfg, self.virt, stats_auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password),
                ssh=self.faults.ssh, timeline=self.timeline)
            self.probes.start()
        if self.faults.boot_priority is None:
            def settled(node: str, timed_out: bool) -> None:
                self.timeline.event("note", settled_text(node, timed_out), node=node, source="boot")

            bp = BootPriority(self.cfg, self.virt, on_settled=settled)
            bp.start()
            self.faults.boot_priority = bp
        if traffic:
            self.ensure_traffic()

    def ensure_traffic(self) -> TrafficControl:
        """The traffic generator (towards the VIP, at the engine's rate), built on first use."""
        with self._lock:
            if self.traffic is None:
                self.traffic = TrafficGenerator.for_lab(self.cfg, on_record=self.timeline.add_request,
                                                        rate=self._rate)
            return self.traffic

    def _run_clock(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.step()
            except Exception as exc:  # the clock must keep going; the next snapshot says what broke
                with self._lock:
                    self._problems = (f"engine clock: {exc!r}",)

    def step(self, now: float | None = None) -> None:
        """One beat of the engine's clock: close the seconds that ended, read the probes, measure the
        last fault (once a second) and, for the TUI, start observing once the lab exists."""
        now = self.clock() if now is None else now
        problems: list[str] = []
        self.timeline.tick(now)
        if self._auto_observe and now - self._observe_checked >= 1.0:
            self._observe_checked = now
            self._observe_if_up(problems)
        self._poll_probes(problems)
        self._measure_live(now, problems)
        with self._lock:
            self._problems = tuple(problems)

    def _observe_if_up(self, problems: list[str]) -> None:
        try:
            states = self.virt.states()
        except HalabError:
            return  # the snapshot reports libvirt's error
        if any(str(s.value) not in ("missing", "unknown") for s in states.values()):
            try:
                self.start_observing()
            except HalabError as exc:
                self._auto_observe = False
                problems.append(f"probes not started: {exc}")

    def _poll_probes(self, problems: list[str]) -> None:
        if self.probes is None:
            return
        try:
            latest = self.probes.latest()
        except HalabError as exc:
            problems.append(str(exc))
            return
        changed = False
        with self._lock:
            for node, reading in latest.items():
                values = {"health": reading.health, "backend": reading.backend, "detail": reading.detail}
                mine = self._probe.setdefault(node, {})
                for k, v in values.items():
                    if v is not None and mine.get(k) != v:
                        mine[k] = v
                        changed = True
        if changed:
            self._notify("probe")

    def _measure_live(self, now: float, problems: list[str]) -> None:
        """The last fault done through the engine, measured (``measure_failover``) once a second
        until it has recovered."""
        m = self._measuring
        if m is None or now - self._measured_at < MEASURE_EVERY_S:
            return
        fault, node, at = m
        self._measured_at = now
        try:
            result = measure_failover(self.running_cfg(), self.timeline.events(),
                                      self.timeline.requests(since=at - 5.0), fault, node, fault_at=at)
        except HalabError as exc:
            problems.append(f"measuring {fault} {node}: {exc}")
            return
        self.record_failover(FailoverView.from_measure(result.to_dict()))
        if result.recovery_s is not None or now - at > MEASURE_FOR_S:
            self._measuring = None

    @property
    def measuring(self) -> tuple[str, str, float] | None:
        """(fault, node, at) of the fault being measured live, if any."""
        return self._measuring

    # ---- the feed into the view ------------------------------------------------------------------
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

    def _on_fault(self, ev: FaultEvent) -> None:
        if self._fault_listener is not None:
            self._fault_listener(ev)
        self.timeline.on_fault(ev)  # comes back through the timeline subscription
        self._notify("faults")

    def _on_timeline_item(self, item: TimelineItem) -> None:
        if isinstance(item, TrafficBucket):
            self.record_sample(item.point())
            return
        self._append_event(item.message, view_kind(item), item.node, item.at)
        if item.failover is not None:
            self.record_failover(FailoverView.from_measure(item.failover))

    def _host_key(self, node: str, mismatch: bool) -> None:
        self.record_probe(node, host_key_mismatch=mismatch)

    def note(self, text: str, *, kind: str = "info", node: str | None = None, t: float | None = None) -> None:
        """A line for the timeline (and its JSON Lines): 'fault' (an action done to the lab), 'error'
        (an action that failed), 'probe', 'info'."""
        # Actions are notes in the timeline (its 'fault' kind is for faults only).
        tl_kind, source = {"probe": ("probe", None), "fault": ("note", "action"),
                           "error": ("note", "error")}.get(kind, ("note", None))
        self.timeline.event(tl_kind, text, node=node, source=source, at=t)

    def _append_event(self, text: str, kind: str, node: str | None, t: float) -> None:
        with self._lock:
            self._seq += 1
            self._events.append(EventView(self._seq, float(t), kind, text, node))
        self._notify("event")

    def record_sample(self, point: TrafficPoint) -> None:
        """One second of traffic for the graphs (the timeline's, or a recorded history's)."""
        with self._lock:
            if self._series and self._series[-1].t == point.t:
                self._series[-1] = point  # a second's figures, revised
            else:
                self._series.append(point)
        self._notify("sample")

    def record_probe(self, node: str, *, health: str | None = None, backend: str | None = None,
                     detail: str | None = None, host_key_mismatch: bool | None = None) -> None:
        """Probe results for one node (a recorded history's, or the SSH layer's host-key state)."""
        values = {"health": health, "backend": backend, "detail": detail,
                  "host_key_mismatch": host_key_mismatch}
        with self._lock:
            self._probe.setdefault(node, {}).update({k: v for k, v in values.items() if v is not None})
        self._notify("probe")

    def record_failover(self, view: FailoverView) -> None:
        with self._lock:
            self._failover = view
        self._notify("failover")

    # ---- the view --------------------------------------------------------------------------------
    def running_cfg(self) -> LabConfig:
        """The lab definition with the HAProxy settings installed now (a preset switch changes them)."""
        return self.cfg if self._haproxy == self.cfg.haproxy else replace(self.cfg, haproxy=self._haproxy)

    def expected_detection_s(self) -> float:
        return self.cfg.haproxy.expected_detection_s()

    def traffic_state(self) -> TrafficState:
        gen = self.traffic
        if gen is None:
            return TrafficState(False, self._rate, available=True)
        return TrafficState(bool(gen.running), float(gen.rate), True)

    def snapshot(self) -> LabSnapshot:
        """The lab now: a pure read (one libvirt listing, one read of the fault record)."""
        with self._lock:
            problems = list(self._problems)
        try:
            states = {k: str(v.value) for k, v in self.virt.states().items()}
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
            by_node.setdefault(f.node, []).append(fault_label(f.kind, dict(f.params)))
        with self._lock:
            series = tuple(self._series)
            # Time order, not arrival order: a probe reports a change with the time it was sampled,
            # which can be before an action logged a moment earlier.
            events = tuple(sorted(self._events, key=lambda e: (e.t, e.seq)))
            probe = {k: dict(v) for k, v in self._probe.items()}
            failover = self._failover
            story = self._story
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
        if self.probes is None and exists and not probe:
            problems.append("health and HAProxy backend states need the probes (issue 6)")
        return LabSnapshot(
            lab=self.cfg.name, profile=self.cfg.profile, vip=self.cfg.vip,
            libvirt_uri=self.cfg.libvirt_uri, taken_at=self.clock(), exists=exists,
            nodes=tuple(nodes), series=series[-180:], events=events[-200:], failover=failover,
            traffic=self.traffic_state(), problems=tuple(problems),
            expected_detection_s=self.expected_detection_s(),
            story=story.view() if story is not None else None,
        )

    # ---- commands: faults ------------------------------------------------------------------------
    def apply(self, action: str, node: str, **params: object) -> FaultEvent:
        """A fault or its undo (the registry's names); a fault starts a live measurement."""
        ev = self.faults.apply(action, node, **params)
        if fault_kinds.kind(action).is_fault:
            self._measuring = (action, node, ev.at)
            self._measured_at = 0.0
        return ev

    def restore(self) -> tuple[list[FaultEvent], list[str]]:
        """Every active fault undone (what could not be, as problems)."""
        return self.faults.restore()

    def reset(self, checkpoint: str = "ready") -> RestoreResult:
        """The whole lab back to a checkpoint (`./lab.py reset`); the fault records follow it, and
        HAProxy is back at the lab's own preset (the checkpoint's haproxy.cfg)."""
        res = warm.reset(self.cfg, checkpoint)
        self._measuring = None
        self._haproxy = self.cfg.haproxy
        return res

    # ---- commands: HAProxy ---------------------------------------------------------------------
    def install_haproxy(self, cfg: LabConfig) -> list[str]:
        """Render and install ``cfg``'s haproxy.cfg on every balancer and reload it, unless its
        health-check settings are the ones installed already; returns the nodes done."""
        if cfg.haproxy == self._haproxy:
            return []
        done = push_haproxy_config(cfg, self.faults_ssh())
        self._haproxy = cfg.haproxy
        return done

    def set_preset(self, preset: str) -> None:
        """Switch HAProxy's health checks to a preset (no-op when they are already its values)."""
        if not self.install_haproxy(with_preset(self.cfg, preset)):
            return
        self.timeline.note(f"HAProxy preset {preset}: haproxy.cfg re-rendered and reloaded", source="preset",
                           preset=preset)

    def faults_ssh(self) -> SshRun:
        if self.faults.ssh is None:
            raise UsageError("this lab has no SSH to its nodes (the demo lab runs no VMs)")
        return self.faults.ssh

    # ---- commands: traffic -----------------------------------------------------------------------
    def start_traffic(self, rate: float | None = None) -> float:
        """Traffic towards the VIP at ``rate`` (or the engine's rate); returns the rate."""
        gen = self.ensure_traffic()
        if rate is not None:
            self.set_rate(rate)
        gen.set_rate(self._rate)
        gen.start()
        self._notify("traffic")
        return self._rate

    def stop_traffic(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        self._notify("traffic")

    def set_rate(self, rate: float) -> None:
        check_rate(rate)
        self._rate = float(rate)
        if self.traffic is not None:
            self.traffic.set_rate(self._rate)
        self._notify("traffic")

    # ---- commands: scenarios ---------------------------------------------------------------------
    def handles(self, cfg: LabConfig | None = None) -> LabHandles:
        """The parts a measurement or scenario drives (traffic built if it was not)."""
        return LabHandles(cfg or self.running_cfg(), self.timeline, self.faults, self.ensure_traffic(),
                          self.probes)

    def run_scenario(self, scenario: Scenario, *, story: Story | None = None, hold_lock: bool = False,
                     progress: Callable[[str], None] | None = None) -> ScenarioResult:
        """Run a scenario on this lab with its preset switching and `reset:` steps; ``story``: told
        as a story (its view in every snapshot until the next one). ``hold_lock``: hold the lab lock
        throughout (refused while up/heal/down/reset run elsewhere). ``close()`` cancels the run."""
        with self._lock:
            if not self._scenario_done.is_set():
                raise UsageError("a scenario is already running on this lab")
            if self._closed:
                raise UsageError("the lab engine is closed")
            self._scenario_done.clear()
            self._cancel = threading.Event()
            if story is not None:
                self._story = story
        try:
            with self._held(hold_lock):
                runner = ScenarioRunner(self.handles(), scenario, switch_preset=self.install_haproxy,
                                        progress=progress, reset_lab=self.reset_step, story=story,
                                        cancel=self._cancel)
                return runner.run()
        except BaseException:
            if story is not None:
                story.finish(False)
            raise
        finally:
            self._scenario_done.set()
            self._notify("story")

    def reset_step(self, checkpoint: str) -> str:
        """What a `reset:` step and `scenario compare --reset` do: the lab back to a checkpoint
        (HAProxy with it, at the lab's own preset), said in one line."""
        if self.reset_lab is None:
            raise UsageError("a reset step needs a real lab with checkpoints")
        detail = self.reset_lab(checkpoint)
        self._measuring = None
        self._haproxy = self.cfg.haproxy
        return detail

    @contextlib.contextmanager
    def _held(self, hold: bool) -> Iterator[None]:
        if not hold:
            yield
            return
        with LabLock(lab_state_dir(self.cfg.name), self.cfg.name):
            yield

    @property
    def story(self) -> Story | None:
        """The story told last (running or done)."""
        return self._story

    def story_next(self) -> bool:
        """The presenter's key: the paused step goes on (False: the story was not waiting)."""
        went = self._running_story().next()
        self._notify("story")
        return went

    def story_run_on(self) -> None:
        """The presenter's key: no more pauses in this run."""
        self._running_story().run_on()
        self._notify("story")

    def _running_story(self) -> Story:
        story = self._story
        if story is None or story.view().done:
            raise UsageError("no story is running (x runs a scenario as a story)")
        return story

    def show_story(self, story: Story | None) -> None:
        """Put a story on the view without running it (a recorded one; tests)."""
        with self._lock:
            self._story = story
        self._notify("story")

    def adopt(self, cfg: LabConfig) -> None:
        """After `up` with another profile, the engine follows the lab that now exists."""
        self.cfg = cfg
        self._haproxy = cfg.haproxy
        self.virt.cfg = cfg
        self.faults.cfg = cfg
        if self.shell is not None:
            self.shell.cfg = cfg

    # ---- end -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel a running scenario (it undoes its faults), then stop what the engine started:
        traffic, probes, boot priority, its clock. The lab itself keeps running."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._cancel.set()
        if self._story is not None:
            self._story.run_on()  # a presenter pause lets go at once
        self._scenario_done.wait(CLOSE_WAIT_S)
        self._stop.set()
        self._unsubscribe()
        if self.faults.boot_priority is not None:
            self.faults.boot_priority.stop()
            self.faults.boot_priority = None
        for part in (self.traffic, self.probes):
            if part is not None:
                with contextlib.suppress(HalabError):  # best effort; the lab keeps running
                    part.stop()
        self.timeline.tick()
        self.timeline.close()
        if self.shell is not None:
            self.shell.close()
        if self._owns_virt:
            self.virt.close()
        if self._ticker is not threading.current_thread():
            self._ticker.join(2)

    def __enter__(self) -> LabEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
