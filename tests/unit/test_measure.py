"""Measurement math on synthetic timelines with known answers, and the orchestrator driving a
simulated lab on a virtual clock."""

from __future__ import annotations

import itertools
import json

import pytest

from halab.chaos.experiments import MeasurePlan, run_measurement
from halab.chaos.faults import FaultEvent
from halab.chaos.measure import LabHandles, expected_detection, measure_failover
from halab.errors import HalabError, UsageError
from halab.lab.config import parse_config
from halab.observe.timeline import Event, RequestRecord, Timeline

CFG = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)
HA = parse_config("name: lab1\nprofile: ha\n", "lab.yaml", host_mem_mib=1 << 20)
KOLLA = parse_config("name: lab1\nhaproxy: {preset: kolla}\n", "lab.yaml", host_mem_mib=1 << 20)
T0 = 1_000_000.0


def fault(at, action, node="api-2"):
    return Event(at, "fault", f"{action} {node}", node, action, {"action": action})


def probe(at, node, old, new, direction, source="haproxy", key=None):
    return Event(at, "probe", f"HAProxy marked {node} {new}", node, source,
                 {"key": key or f"haproxy:haproxy-1:api_nodes/{node}", "old": old, "new": new,
                  "direction": direction})


def req(kind, at, ok=True, latency=0.01, node="api-1", error=None):
    return RequestRecord(kind, at, at, at + latency, ok, None if ok else (error or "http_503"),
                         200 if ok else 503, (node,) if ok else ())


def test_expected_detection_from_config():
    # A killed node answers nothing: each failed check also waits min(timeout connect, inter).
    assert expected_detection(CFG, "api")[0] == pytest.approx(2.25)  # 1000 + 1 x 250 + 2 x 500 ms
    assert expected_detection(KOLLA, "api")[0] == pytest.approx(20.0)  # 2000 + 4 x 2000 + 5 x 2000 ms
    assert "connect wait 2000 ms" in expected_detection(KOLLA, "api", "kill")[1]
    # A stopped service refuses the connection: each check fails at once.
    assert expected_detection(CFG, "api", "stop-service")[0] == pytest.approx(1.25)
    assert expected_detection(KOLLA, "api", "stop-service")[0] == pytest.approx(10.0)
    assert expected_detection(HA, "haproxy")[0] == pytest.approx(3 + 156 / 256)
    assert expected_detection(HA, "db")[0] == 5.0
    assert expected_detection(CFG, "db")[0] is None


def test_known_answers_api_kill():
    events = [
        fault(T0 + 10.0, "kill"),
        probe(T0 + 11.3, "api-2", "UP", "DOWN", "down"),
        fault(T0 + 20.0, "revive"),
        probe(T0 + 30.0, "api-3", "down", "ok", "up", source="health"),  # another node: ignored
        probe(T0 + 42.5, "api-2", "down", "ok", "up", source="health"),  # api-2's service answers
        probe(T0 + 45.0, "api-2", "DOWN", "UP", "up"),
    ]
    reqs = [req("read", T0 + t / 10) for t in range(0, 600)]  # 10 reads/s, all fine, api-1
    # During the detection gap: two writes and one page failed, one read was slow but fine.
    reqs += [req("write", T0 + 10.2, ok=False), req("write", T0 + 11.0, ok=False, latency=0.25),
             req("page", T0 + 10.6, ok=False, error="timeout", latency=2.0),
             req("read", T0 + 10.5, latency=1.8)]
    # Before the fault, a failure that must not count.
    reqs.append(req("write", T0 + 5.0, ok=False))
    # api-2 serves again after it is UP.
    reqs.append(req("read", T0 + 45.4, node="api-2"))
    r = measure_failover(CFG, events, reqs, "kill", "api-2")
    assert r.detection_s == pytest.approx(1.3)
    assert r.expected_detection_s == pytest.approx(2.25)
    assert (r.failed_reads, r.failed_writes, r.failed_pages) == (0, 2, 1)
    assert r.error_window_s == pytest.approx(12.6 - 10.2)  # page ended at 10.6 + 2.0
    assert r.max_latency_ms == pytest.approx(2000.0)
    assert r.recovery_s == pytest.approx(25.41)  # revive 20.0 → served by api-2 at 45.41
    assert r.service_up_s == pytest.approx(22.5)  # revive → api-2's own health check ok
    assert r.rejoin_s == pytest.approx(45.41 - 42.5)  # healthy → back in rotation
    assert "service up after 22.5 s" in r.summary
    assert r.errors_by_kind == {"http_503": 2, "timeout": 1}
    d = r.to_dict()
    for k in ("detection_s", "expected_detection_s", "failed_reads", "failed_writes", "failed_pages",
              "error_window_s", "max_latency_ms", "recovery_s"):
        assert k in d
    json.dumps(d)


def test_balancer_before_the_health_probe_is_a_zero_rejoin():
    """A warm revive serves at once: HAProxy put api-2 back (and it served) before halab's own
    health probe, sampled about once a second, saw it. The rejoin is 0, not unknown."""
    events = [fault(T0 + 10.0, "kill"), probe(T0 + 11.0, "api-2", "UP", "DOWN", "down"),
              fault(T0 + 20.0, "revive"), probe(T0 + 25.0, "api-2", "DOWN", "UP", "up"),
              probe(T0 + 25.6, "api-2", "down", "ok", "up", source="health")]
    reqs = [req("read", T0 + t / 10) for t in range(0, 300)]
    reqs.append(req("read", T0 + 25.2, node="api-2"))
    r = measure_failover(CFG, events, reqs, "kill", "api-2")
    assert r.recovery_s == pytest.approx(5.21)
    assert r.service_up_s == pytest.approx(5.6)
    assert r.rejoin_s == 0.0


def test_detection_ignores_other_nodes_and_sources():
    events = [fault(T0, "kill"), probe(T0 + 0.2, "api-3", "UP", "DOWN", "down"),
              Event(T0 + 0.3, "probe", "api-2 is shut off", "api-2", "libvirt",
                    {"key": "libvirt:api-2", "old": "running", "new": "shut off", "direction": "down"}),
              probe(T0 + 1.9, "api-2", "UP", "DOWN", "down")]
    r = measure_failover(CFG, events, [req("read", T0 + 1)], "kill", "api-2")
    assert r.detection_s == pytest.approx(1.9)
    assert r.recovery_s is None and r.revive_at is None
    assert (r.failed_reads, r.error_window_s) == (0, 0.0)


def test_no_detection_and_not_recovered_are_reported():
    events = [fault(T0, "pause"), fault(T0 + 5, "resume")]
    r = measure_failover(CFG, events, [], "pause", "api-2")
    assert r.detection_s is None and r.recovery_s is None
    assert len(r.notes) == 3
    with pytest.raises(HalabError):
        measure_failover(CFG, [], [], "kill", "api-2")
    with pytest.raises(UsageError):
        measure_failover(CFG, events, [], "kill", "api-9")


def test_single_db_detected_by_api_health():
    events = [fault(T0, "kill", "db-1"),
              Event(T0 + 0.8, "probe", "api-1 health degraded", "api-1", "health",
                    {"key": "health:api-1", "old": "ok", "new": "degraded", "direction": "down"}),
              fault(T0 + 30, "revive", "db-1"),
              Event(T0 + 50, "probe", "api-1 health ok", "api-1", "health",
                    {"key": "health:api-1", "old": "degraded", "new": "ok", "direction": "up"})]
    reqs = [req("read", T0 + 1, ok=False), req("write", T0 + 2, ok=False), req("write", T0 + 51)]
    r = measure_failover(CFG, events, reqs, "kill", "db-1")
    assert r.detection_s == pytest.approx(0.8) and r.expected_detection_s is None
    assert (r.failed_reads, r.failed_writes) == (1, 1)
    assert r.recovery_s == pytest.approx(21.01)


def test_timeline_round_trip(tmp_path):
    tl = Timeline()
    seen = []
    tl.subscribe(seen.append)
    tl.add_event(fault(T0, "kill"))
    for i in range(30):
        tl.add_request(req("read" if i % 3 else "page", T0 + i * 0.1, ok=i != 7))
    tl.flush()
    assert [b.second for b in tl.buckets()] == [int(T0), int(T0) + 1, int(T0) + 2]
    assert tl.buckets()[0].read.errors == 1 and tl.buckets()[0].point().reads_err == 1
    assert tl.buckets()[0].share == {"api-1": 1.0}
    assert tl.buckets()[0].point().share == {"api-1": 1.0} and tl.buckets()[0].point().operations == 10
    assert any(isinstance(x, Event) for x in seen) and sum(not isinstance(x, Event) for x in seen) == 3
    path = tmp_path / "t.jsonl"
    tl.write_jsonl(path)
    types = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    assert types.count("request") == 30 and types.count("traffic") == 3 and types.count("event") == 1
    back = Timeline.read_jsonl(path)
    assert len(back.requests()) == 30 and back.events()[0].message == "kill api-2"
    assert [b.to_dict() for b in back.buckets()] == [b.to_dict() for b in tl.buckets()]


# ---- the orchestrator on a simulated lab --------------------------------------------------------


class SimLab:
    """api-1..4 behind a simulated HAProxy, on a virtual clock advanced by sleep().

    A killed node keeps receiving its round-robin share until HAProxy marks it DOWN ``detect``
    seconds later: reads and pages to it are retried elsewhere (slow but fine), writes fail.
    After revive it boots for ``boot`` seconds, then HAProxy marks it UP."""

    def __init__(self, tl: Timeline, detect: float = 1.25, boot: float = 8.0, rate: float = 50.0):
        self.now = T0
        self.tl = tl
        self.detect, self.boot, self.rate = detect, boot, rate
        self.dead: set[str] = set()
        self.failed_writes = 0
        self.in_rotation = {"api-1", "api-2", "api-3", "api-4"}
        self.pending: list[tuple[float, Event]] = []
        self.running = False
        self.next_req = T0
        self.kinds = itertools.cycle(["read"] * 7 + ["write"] + ["page"] * 2)
        self.rr = itertools.cycle(["api-1", "api-2", "api-3", "api-4"])

    # clock
    def clock(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        end = self.now + dt
        while self.next_req <= end and self.running:
            self.now = self.next_req
            self._fire_events()
            self._request(self.next_req)
            self.next_req += 1 / self.rate
        self.now = end
        self._fire_events()

    def _fire_events(self) -> None:
        for due, ev in [p for p in self.pending if p[0] <= self.now]:
            self.pending.remove((due, ev))
            self.in_rotation ^= {ev.node}
            self.tl.add_event(ev)

    def _request(self, at: float) -> None:
        kind = next(self.kinds)
        node = next(n for n in self.rr if n in self.in_rotation)
        if node in self.dead:
            if kind == "write":
                self.failed_writes += 1
                rec = RequestRecord(kind, at, at, at + 1.0, False, "http_503", 503, ())
            else:
                alive = next(n for n in self.rr if n in self.in_rotation and n not in self.dead)
                rec = RequestRecord(kind, at, at, at + 0.3, True, None, 200, (alive,))
        else:
            rec = RequestRecord(kind, at, at, at + 0.01, True, None, 200, (node,))
        self.tl.add_request(rec)

    # traffic
    def start(self) -> None:
        self.running = True
        self.next_req = self.now

    def stop(self) -> None:
        self.running = False

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    # faults
    def apply(self, action: str, node: str) -> FaultEvent:
        assert action == "kill"
        self.dead.add(node)
        self.pending.append((self.now + self.detect, Event(self.now + self.detect, "probe",
                             f"HAProxy marked {node} DOWN", node, "haproxy",
                             {"key": f"haproxy:haproxy-1:api_nodes/{node}", "old": "UP", "new": "DOWN",
                              "direction": "down"})))
        return FaultEvent("kill", node, self.now)

    def undo(self, action: str, node: str) -> FaultEvent:
        up_at = self.now + self.boot
        self.pending.append((up_at, Event(up_at, "probe", f"HAProxy marked {node} UP", node, "haproxy",
                             {"key": f"haproxy:haproxy-1:api_nodes/{node}", "old": "DOWN", "new": "UP",
                              "direction": "up"})))
        self.dead.discard(node)
        return FaultEvent("revive", node, self.now)


@pytest.mark.parametrize(("cfg", "detect"), [(CFG, 1.25), (KOLLA, 9.5)])
def test_run_measurement_on_simulated_lab(cfg, detect):
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl, detect=detect)
    lab = LabHandles(cfg, tl, faults=sim, traffic=sim)
    steps = []
    r = run_measurement(lab, "kill", "api-2", MeasurePlan(steady_s=3), progress=steps.append,
                        clock=sim.clock, sleep=sim.sleep)
    assert r.detection_s == pytest.approx(detect, abs=1e-6)
    assert r.expected_detection_s == pytest.approx(2.25 if cfg is CFG else 20.0)
    assert r.failed_reads == 0 and r.failed_pages == 0
    # Exactly the writes the simulation routed to api-2 before it was marked DOWN.
    assert r.failed_writes == sim.failed_writes > 0
    assert r.max_latency_ms == pytest.approx(1000.0)
    assert r.recovery_s == pytest.approx(8.0, abs=0.2)
    assert steps[0] == "waiting for steady traffic" and steps[-1] == "waiting for recovery"
    measure_events = tl.events(kind="measure")
    assert measure_events and measure_events[0].failover["detection_s"] == round(r.detection_s, 3)
    assert not sim.running


def test_run_measurement_refuses_bad_input():
    tl = Timeline()
    lab = LabHandles(CFG, tl, faults=None, traffic=None)
    with pytest.raises(UsageError, match="api-9"):
        run_measurement(lab, "kill", "api-9")
    with pytest.raises(UsageError, match="reboot"):
        run_measurement(lab, "reboot", "api-2")


def test_bench_faults_are_the_ones_the_lab_has():
    from halab.live.bench import bench_faults

    assert bench_faults(CFG) == [("kill", "api-2"), ("kill", "db-1"), ("kill", "mq-1")]
    assert bench_faults(HA) == [("kill", "api-2"), ("kill", "db-1"), ("kill", "mq-1")]
    # A lab with one API node has no api-2: the filter drops that fault and keeps the rest.
    one_api = parse_config("roles:\n  api: {count: 1}\n")
    assert [n.name for n in one_api.nodes() if n.role == "api"] == ["api-1"]
    assert bench_faults(one_api) == [("kill", "db-1"), ("kill", "mq-1")]


def test_bench_matrix_measures_each_fault_under_each_preset_and_restores_the_lab_preset():
    """The real orchestrator on the simulated lab: the kolla preset's slower checks show as a ratio."""
    from halab.live.bench import measure_matrix

    installed: list[str] = []
    sims: list[SimLab] = []

    def handles_for(pcfg):
        tl = Timeline(clock=lambda: sims[-1].now, keep_requests=True)
        sims.append(SimLab(tl, detect=1.25 if pcfg.haproxy.preset == "fast" else 9.5))
        return LabHandles(pcfg, tl, faults=sims[-1], traffic=sims[-1])

    def measure(handles, fault, node, plan, progress):
        sim = handles.faults
        return run_measurement(handles, fault, node, MeasurePlan(steady_s=3), progress=progress,
                               clock=sim.clock, sleep=sim.sleep)

    said: list[str] = []
    out = measure_matrix(CFG, handles_for, lambda c: installed.append(c.haproxy.preset),
                         [("kill", "api-2")], ("fast", "kolla"), say=said.append, measure=measure)
    assert installed == ["fast", "kolla", CFG.haproxy.preset]
    assert out["problems"] == []
    assert out["failover"]["fast"]["kill api-2"]["detection_s"] == pytest.approx(1.25, abs=1e-3)
    assert out["failover"]["kolla"]["kill api-2"]["detection_s"] == pytest.approx(9.5, abs=1e-3)
    assert out["detection_ratio"]["kill api-2"] == {"fast": 1.0, "kolla": 7.6}
    assert any(m.startswith("kolla kill api-2: ") for m in said)
    json.dumps(out)


def test_bench_matrix_records_a_failed_measurement_and_goes_on():
    from halab.live.bench import measure_matrix

    installed: list[str] = []
    calls: list[tuple[str, str]] = []

    class Result:
        summary = "fine"

        def __init__(self, detection):
            self.detection = detection

        def to_dict(self):
            return {"detection_s": self.detection}

    def measure(handles, fault, node, plan, progress):
        calls.append((handles.cfg.haproxy.preset, node))
        if node == "db-1":
            raise HalabError("db-1 never came back")
        return Result(2.0 if handles.cfg.haproxy.preset == "fast" else 10.0)

    def install(c):
        installed.append(c.haproxy.preset)
        if c.haproxy.preset == "kolla" or len(installed) == 3:
            raise HalabError("haproxy -c refused it")

    out = measure_matrix(CFG, lambda c: LabHandles(c, Timeline(), None, None), install,
                         [("kill", "api-2"), ("kill", "db-1")], ("fast", "kolla"), measure=measure)
    assert calls == [("fast", "api-2"), ("fast", "db-1")]  # kolla never installed: nothing measured
    assert installed == ["fast", "kolla", CFG.haproxy.preset]
    assert out["problems"] == ["fast kill db-1: db-1 never came back", "kolla: haproxy -c refused it",
                               "putting back the lab's own preset fast: haproxy -c refused it"]
    assert out["failover"] == {"fast": {"kill api-2": {"detection_s": 2.0}}}
    assert out["detection_ratio"] == {"kill api-2": {"fast": 1.0}}


class SickBackend:
    """Probes whose HAProxy sees api-1 DOWN until ``until``, then UP (with the change event)."""

    def __init__(self, sim: SimLab, tl: Timeline, until: float):
        self.sim, self.tl, self.until, self.announced = sim, tl, until, False

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def backends_not_up(self) -> list[str]:
        if self.sim.now < self.until:
            return ["api_nodes/api-1 DOWN on haproxy-1"]
        if not self.announced:
            self.announced = True
            self.tl.add_event(probe(self.until, "api-1", "DOWN", "UP", "up"))
        return []


def test_steady_state_needs_every_backend_up_not_only_clean_traffic():
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)
    sick = SickBackend(sim, tl, until=T0 + 20)
    lab = LabHandles(CFG, tl, faults=sim, traffic=sim, probes=sick)
    r = run_measurement(lab, "kill", "api-2", MeasurePlan(steady_s=3), clock=sim.clock, sleep=sim.sleep)
    # Traffic was clean from the start; the fault waited for api-1 UP plus 3 quiet seconds.
    assert T0 + 23 <= r.fault_at < T0 + 25
    assert r.detection_s == pytest.approx(1.25, abs=1e-6)


def test_no_steady_state_says_which_backend_is_not_up():
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)
    lab = LabHandles(CFG, tl, faults=sim, traffic=sim, probes=SickBackend(sim, tl, until=T0 + 1e9))
    with pytest.raises(HalabError, match="not UP: api_nodes/api-1 DOWN on haproxy-1"):
        run_measurement(lab, "kill", "api-2", MeasurePlan(steady_s=3, steady_timeout_s=30),
                        clock=sim.clock, sleep=sim.sleep)
    assert not sim.dead  # nothing was injected


def test_measurement_is_the_scenario_runners_story():
    """measure is a built-in scenario: the runner's steps, waits and fault bookkeeping."""
    from halab.chaos.experiments import measurement_scenario

    sc = measurement_scenario("kill", "api-2", MeasurePlan(steady_s=3), 8.0, 12.0, {})
    assert [s.action for s in sc.steps] == [
        "traffic", "mark", "wait", "fault", "wait", "wait", "undo", "wait"]
    assert [s.args.get("until") for s in sc.steps if s.action == "wait"] == [
        "steady 3 s", "detected", None, "recovered"]
    no_revive = measurement_scenario("kill", "api-2", MeasurePlan(revive=False), 8.0, 12.0, {})
    assert "undo" not in [s.action for s in no_revive.steps]


def test_no_revive_leaves_the_fault_and_running_traffic_keeps_running():
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)
    sim.start()
    lab = LabHandles(CFG, tl, faults=sim, traffic=sim)
    r = run_measurement(lab, "kill", "api-2", MeasurePlan(steady_s=3, revive=False), clock=sim.clock,
                        sleep=sim.sleep)
    assert sim.dead == {"api-2"} and r.revive_at is None and r.recovery_s is None
    assert r.detection_s == pytest.approx(1.25, abs=1e-6)
    assert sim.running  # it was running before the measurement
    assert [e.message for e in tl.events(kind="fault")] == ["kill api-2"]  # recorded once
