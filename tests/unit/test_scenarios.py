"""Scenario format, hypothesis evaluation on synthetic timelines with known answers, and the runner
driving a simulated lab on a virtual clock (no VMs, no sleeping)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from halab.chaos.faults import UNDO, FaultEvent
from halab.chaos.measure import LabHandles, measure_failover
from halab.chaos.scenario import (
    AppliedFault,
    EvalContext,
    ScenarioRunner,
    builtin_scenarios,
    evaluate,
    load_scenario,
    parse_hypothesis,
    parse_scenario,
)
from halab.errors import ConfigError, UsageError
from halab.lab.config import parse_config
from halab.observe.timeline import Event, RequestRecord, Timeline

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
CFG = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)
HA = parse_config("name: lab1\nprofile: ha\n", "lab.yaml", host_mem_mib=1 << 20)
T0 = 1_000_000.0
KOLLA_DETECT = 9.5  # HAProxy's kolla preset: inter 2 s, fall 5 (expected 10 s)
API = ["api-1", "api-2", "api-3", "api-4"]


# ---- validation -----------------------------------------------------------------------------------


def errors_of(text: str, fname: str = "s.yaml") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_scenario(text, fname)
    return exc.value.errors


def test_bad_steps_fixture_exact_messages():
    with pytest.raises(ConfigError) as exc:
        load_scenario(FIX / "bad-step.yaml")
    f = str(FIX / "bad-step.yaml")
    assert exc.value.errors == [
        f"{f}:3: steps[0].traffic.rate: must be between 0.1 and 1000 (got 5000)",
        f"{f}:4: steps[1].wait.until: unknown condition 'node api-2 SIDEWAYS': use 'node api-2 DOWN', "
        "'node api-2 UP', 'detected', 'recovered' or 'steady 5 s'",
        f"{f}:5: steps[2].fault.action: must be one of kill, pause, reboot, netcut, netem, stop-service, "
        "host-cut, host-kill (got 'explode')",
        f"{f}:6: steps[3].fault.nod: unknown key (did you mean 'node'?)",
        f"{f}:6: steps[3].fault: missing node",
        f"{f}:8: steps[4]: one action per step (got wait and fault)",
    ]


def test_bad_hypotheses_fixture_exact_messages():
    with pytest.raises(ConfigError) as exc:
        load_scenario(FIX / "bad-hypotheses.yaml")
    f = str(FIX / "bad-hypotheses.yaml")
    assert exc.value.errors == [
        f"{f}:3: hypotheses[0]: 'read_availabilty >= 99 %': unknown metric 'read_availabilty' "
        "(did you mean 'read_availability'?)",
        f"{f}:4: hypotheses[1]: 'error_window_s <= 2 %': error_window_s is measured in s, not '%'",
        f"{f}:5: hypotheses[2]: 'read_availability >= 99.9 % over step': 'over step' belongs under a "
        "step's expect:, not in the top-level hypotheses",
        f"{f}:6: hypotheses[3]: 'sometimes it works': not a hypothesis; write e.g. "
        "'read_availability >= 99.9 %', 'error_window_s <= 2', 'node api-2 back UP within 60 s', "
        "'failed_pages == 0' or 'writes stuck'",
    ]


def test_bad_top_level_fixture():
    errs = [e.split(": ", 1)[1] for e in errors_of((FIX / "bad-top.yaml").read_text(), "bad-top.yaml")]
    assert errs == [
        "name: 'Bad Name': lowercase letters, digits and '-' only",
        "steps: missing: a scenario needs at least one step",
        "profile: must be one of default, ha (got 'h\u0430')",
        "stepz: unknown key (did you mean 'steps'?)",
    ]


def test_flow_errors_without_a_lab():
    errs = errors_of("steps:\n  - revive: api-2\n  - wait: {until: recovered}\n"
                     "  - wait: 3\n    expect: [detection_s <= 2]\n")
    assert errs == [
        "s.yaml:2: steps[0].revive: no earlier fault step to undo (api-2)",
        "s.yaml:3: steps[1].wait.until: 'recovered' needs an earlier fault step",
        "s.yaml:5: steps[2].expect: 'detection_s <= 2': no fault before this step to measure",
    ]
    assert errors_of("steps:\n  - wait: {until: steady 3 s}\n") == [
        "s.yaml:2: steps[0].wait.until: 'steady' needs traffic started by an earlier step"]


def test_yaml_errors_are_located():
    assert errors_of("steps:\n  - wait: [1\n") [0].startswith("s.yaml:3: not valid YAML")
    assert errors_of("") == ["s.yaml:1: (top level): empty scenario; it needs at least `steps:`"]
    assert errors_of("steps:\n  - fault: {action: netem, node: api-1}\n") == [
        "s.yaml:2: steps[0].fault: netem needs params.delay_ms or params.loss_pct"]
    assert errors_of("steps:\n  - fault: {action: kill, node: api-1, params: {x: 1}}\n") == [
        "s.yaml:2: steps[0].fault.params: kill takes no params"]
    assert errors_of("steps:\n  - fault: {action: kill, node: web-1}\n") == [
        "s.yaml:2: steps[0].fault.node: not a node name like api-2 or db-1 (got 'web-1')"]


@pytest.mark.parametrize("path", builtin_scenarios(), ids=lambda p: p.stem)
def test_every_builtin_scenario_checks(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert sc.steps and sc.description
    for cfg in (CFG, HA):
        if not sc.profiles or cfg.profile in sc.profiles:
            sc.check_lab(cfg)


def test_builtins_cover_the_story():
    names = {p.stem for p in builtin_scenarios()}
    assert {"api-node-loss", "api-rolling-loss", "db-loss", "mq-loss", "haproxy-loss", "partition",
            "slow-node"} <= names


def test_wrong_profile_is_a_clear_error():
    sc = load_scenario("haproxy-loss")
    with pytest.raises(UsageError, match="needs profile ha; lab 'lab1' is 'default'"):
        sc.check_lab(CFG)
    sc = parse_scenario("steps:\n  - fault: {action: kill, node: api-7}\n", "x.yaml")
    with pytest.raises(UsageError, match=r"x\.yaml:2: node 'api-7' does not exist in lab 'lab1'"):
        sc.check_lab(CFG)


def test_hypothesis_grammar():
    h = parse_hypothesis("read_availability   >= 99.9 %", "step", 7)
    assert (h.kind, h.metric, h.op, h.value, h.scope, h.line) == ("metric", "read_availability", ">=", 99.9,
                                                                  "step", 7)
    assert parse_hypothesis("error_window_s <= 2000 ms", "run", 1).value == 2.0
    assert parse_hypothesis("failed_pages == 0 over run", "step", 1).scope == "run"
    n = parse_hypothesis("node api-2 back UP within 60 s", "step", 1)
    assert (n.kind, n.node, n.state, n.back, n.within_s) == ("node", "api-2", "UP", True, 60.0)
    w = parse_hypothesis("writes stuck in BUILD", "step", 1)
    assert (w.kind, w.metric, w.op, w.value) == ("writes-stuck", "write_availability", "<=", 10.0)
    with pytest.raises(ConfigError, match="a percentage must be between 0 and 100"):
        parse_hypothesis("availability >= 120 %", "run", 3)


# ---- evaluation on synthetic timelines --------------------------------------------------------------


def rq(kind, at, ok=True, latency=0.01, node="api-1"):
    return RequestRecord(kind, at, at, at + latency, ok, None if ok else "http_503", 200 if ok else 503,
                         (node,) if ok else ())


def probe(at, node, direction):
    new = "DOWN" if direction == "down" else "UP"
    return Event(at, "probe", f"HAProxy marked {node} {new}", node, "haproxy",
                 {"key": f"haproxy:haproxy-1:api_nodes/{node}", "old": "?", "new": new,
                  "direction": direction})


def ctx_for(requests, events=(), faults=(), end=T0 + 100, cfg=CFG):
    faults = list(faults)
    ms = [(f, measure_failover(f.cfg, list(events), requests, f.action, f.node, fault_at=f.at))
          for f in faults]
    return EvalContext(cfg, sorted(events, key=lambda e: e.at), requests, faults, ms, T0, end)


def test_availability_budget_and_when_it_broke():
    # 1000 reads over 100 s (10/s); failures at 20.0, 30.0 and 40.0 s.
    reqs = [rq("read", T0 + i / 10, ok=i not in (200, 300, 400)) for i in range(1000)]
    ctx = ctx_for(reqs)
    held = evaluate(parse_hypothesis("read_availability >= 99.7 %", "run", 1), T0, T0 + 100, ctx)
    assert held.held and held.value == 99.7
    # 99.9 % of 1000 allows one failure: the second one (30 s) broke it.
    r = evaluate(parse_hypothesis("read_availability >= 99.9 %", "run", 1), T0, T0 + 100, ctx)
    assert not r.held and r.broken_at_s == pytest.approx(30.01)
    assert r.reason == "read_availability 99.7 % (3 of 1000 failed), expected >= 99.9 %"
    c = evaluate(parse_hypothesis("failed_reads == 0", "run", 1), T0, T0 + 100, ctx)
    assert not c.held and c.broken_at_s == pytest.approx(20.01) and c.value == 3
    c2 = evaluate(parse_hypothesis("failed_reads <= 2", "run", 1), T0, T0 + 100, ctx)
    assert not c2.held and c2.broken_at_s == pytest.approx(40.01)
    # Over a step that only covers 0..25 s: one failure of 250.
    s = evaluate(parse_hypothesis("read_availability >= 99 %", "step", 1), T0, T0 + 25, ctx, "step 2")
    assert s.held and s.value == pytest.approx(99.6)
    assert evaluate(parse_hypothesis("failed_writes == 0", "run", 1), T0, T0 + 100, ctx).held  # none sent


def test_writes_stuck_and_no_traffic():
    reqs = [rq("write", T0 + i, ok=i < 3) for i in range(20)]  # the first 3 of 20 writes went through
    ctx = ctx_for(reqs)
    stuck = evaluate(parse_hypothesis("writes stuck", "step", 1), T0 + 5, T0 + 20, ctx)
    assert stuck.held and stuck.value == 0.0
    # Over the whole run 3/20 = 15 % succeeded: 2 successes allowed, the third broke it at 2.01 s.
    r = evaluate(parse_hypothesis("writes stuck", "run", 1), T0, T0 + 20, ctx)
    assert not r.held and r.broken_at_s == pytest.approx(2.01)
    none = evaluate(parse_hypothesis("page_availability >= 99 %", "run", 1), T0, T0 + 20, ctx)
    assert not none.held and none.reason == "no page operations in the scope to measure"


def test_latency_hypotheses():
    reqs = [rq("read", T0 + i, latency=0.05) for i in range(50)] + [rq("page", T0 + 30.5, latency=1.5)]
    ctx = ctx_for(reqs)
    m = evaluate(parse_hypothesis("max_latency_ms <= 1000", "run", 1), T0, T0 + 60, ctx)
    assert not m.held and m.broken_at_s == pytest.approx(31.5) and m.value == pytest.approx(1500.0)
    assert evaluate(parse_hypothesis("p99_latency_ms <= 100", "run", 1), T0, T0 + 60, ctx).held is False
    assert evaluate(parse_hypothesis("p99_latency_ms <= 100", "step", 1), T0, T0 + 20, ctx).held


def test_node_and_failover_hypotheses_known_answers():
    kill = AppliedFault("kill", "api-2", T0 + 10, {}, CFG, 3, undone_at=T0 + 20)
    events = [Event(T0 + 10, "fault", "kill api-2", "api-2", "kill", {"action": "kill"}),
              probe(T0 + 11.3, "api-2", "down"),
              Event(T0 + 20, "fault", "revive api-2", "api-2", "revive", {"action": "revive"}),
              probe(T0 + 95, "api-2", "up")]
    reqs = [rq("read", T0 + i / 10) for i in range(1000)]
    reqs += [rq("write", T0 + 10.2, ok=False), rq("write", T0 + 11.0, ok=False, latency=0.25)]
    reqs.append(rq("read", T0 + 95.5, node="api-2"))
    ctx = ctx_for(reqs, events, [kill])

    def ev(text, start=T0, end=T0 + 100, scope="run"):
        return evaluate(parse_hypothesis(text, scope, 1), start, end, ctx)

    assert ev("node api-2 DOWN within 5 s").held
    assert ev("node api-2 DOWN within 5 s").value == pytest.approx(1.3)
    up = ev("node api-2 back UP within 60 s")
    assert not up.held and up.broken_at_s == pytest.approx(80.0)  # undo at 20 s + 60 s
    assert up.reason == "api-2 not UP within 60 s of its undo (it came at 75.0 s)"
    assert ev("node api-2 back UP within 80 s").held
    assert ev("detection_s <= 1.5").held and ev("detection_s <= 1.5").value == pytest.approx(1.3)
    det = ev("detection_s <= 1")
    assert not det.held and det.broken_at_s == pytest.approx(11.0)  # fault 10 s + 1 s
    assert ev("detection_ratio <= 1.1").held  # 1.3 / 1.25
    win = ev("error_window_s <= 0.5")  # 10.2 → 11.25
    assert not win.held and win.broken_at_s == pytest.approx(10.7) and win.value == pytest.approx(1.05)
    assert ev("recovery_s <= 80").held and ev("recovery_s <= 80").value == pytest.approx(75.51)
    rec = ev("recovery_s <= 60")
    assert not rec.held and rec.broken_at_s == pytest.approx(80.0)
    # A step after the fault (20..30 s) measures the fault before it.
    assert evaluate(parse_hypothesis("detection_s <= 2", "step", 1), T0 + 20, T0 + 30, ctx).held
    assert not ev("detection_s <= 2", T0, T0 + 5, "run").held  # no fault in the scope


# ---- the runner on a simulated lab ------------------------------------------------------------------


class SimLab:
    """A lab on a virtual clock: api-1..4 behind a simulated HAProxy, one db, one mq.

    A dead API node keeps its round-robin share until HAProxy marks it DOWN ``detect`` s later:
    GETs to it are retried elsewhere (slow but fine), writes fail. A dead mq fails every write; a dead
    db fails everything. netem adds latency. After revive a node boots for ``boot`` s."""

    def __init__(self, tl: Timeline, detect: float = 1.25, boot: float = 8.0):
        self.now = T0
        self.tl = tl
        self.detect, self.boot = detect, boot
        self.rate = 50.0
        self.dead: set[str] = set()
        self.slow: dict[str, float] = {}
        self.in_rotation = set(API)
        self.pending: list[tuple[float, Event]] = []
        self.active: list[tuple[str, str]] = []
        self.running = False
        self.next_req = T0
        self.kinds = itertools.cycle(["read"] * 7 + ["write"] + ["page"] * 2)
        self.rr = itertools.cycle(API)
        self.presets: list[str] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        end = self.now + dt
        while self.running and self.next_req <= end:
            self.now = self.next_req
            self._fire()
            self._request(self.next_req)
            self.next_req += 1 / self.rate
        self.now = end
        self._fire()

    def _fire(self) -> None:
        for due, ev in sorted([p for p in self.pending if p[0] <= self.now], key=lambda p: p[0]):
            self.pending.remove((due, ev))
            if ev.node in API:
                if ev.data["direction"] == "down":
                    self.in_rotation.discard(ev.node)
                else:
                    self.in_rotation.add(ev.node)
            self.tl.add_event(ev)

    def _request(self, at: float) -> None:
        kind = next(self.kinds)
        node = next(n for n in self.rr if n in self.in_rotation)
        delay = self.slow.get(node, 0.0)
        if "db-1" in self.dead or (kind == "write" and "mq-1" in self.dead):
            rec = RequestRecord(kind, at, at, at + 0.02, False, "http_503", 503, (node,))
        elif node in self.dead:
            if kind == "write":
                rec = RequestRecord(kind, at, at, at + 1.0, False, "http_503", 503, ())
            else:
                alive = next(n for n in self.rr if n in self.in_rotation and n not in self.dead)
                rec = RequestRecord(kind, at, at, at + 0.3, True, None, 200, (alive,))
        else:
            rec = RequestRecord(kind, at, at, at + 0.01 + delay, True, None, 200, (node,))
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
    def _event(self, at, node, direction):
        if node in API:
            new = "DOWN" if direction == "down" else "UP"
            return Event(at, "probe", f"HAProxy marked {node} {new}", node, "haproxy",
                         {"key": f"haproxy:haproxy-1:api_nodes/{node}", "old": "?", "new": new,
                          "direction": direction})
        new = "degraded" if direction == "down" else "ok"
        return Event(at, "probe", f"api-1 health {new}", "api-1", "health",
                     {"key": "health:api-1", "old": "?", "new": new, "direction": direction})

    def apply(self, action: str, node: str, **params) -> FaultEvent:
        if action in ("kill", "netcut"):
            self.dead.add(node)
            delay = self.detect if node in API else 0.6
            self.pending.append((self.now + delay, self._event(self.now + delay, node, "down")))
        elif action == "netem":
            self.slow[node] = params["delay_ms"] / 1000.0
        self.active.append((action, node))
        return FaultEvent(action, node, self.now, params=params)

    def undo(self, action: str, node: str, **params) -> FaultEvent:
        if action in ("kill", "netcut"):
            boot = self.boot if action == "kill" else 1.0
            self.pending.append((self.now + boot, self._event(self.now + boot, node, "up")))
            self.dead.discard(node)
        elif action == "netem":
            self.slow.pop(node, None)
        self.active.remove((action, node))
        return FaultEvent(UNDO[action], node, self.now)

    def restore(self):
        return [self.undo(a, n) for a, n in list(self.active)], []

    def switch(self, cfg) -> None:
        self.presets.append(cfg.haproxy.preset)


def run_sim(scenario, cfg=CFG, detect=1.25, **kw):
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl, detect=detect)
    sc = scenario if not isinstance(scenario, str | Path) else load_scenario(scenario)
    runner = ScenarioRunner(LabHandles(cfg, tl, faults=sim, traffic=sim), sc, switch_preset=sim.switch,
                            clock=sim.clock, sleep=sim.sleep, **kw)
    return runner.run(), sim, tl


def test_api_node_loss_passes_on_the_simulated_lab():
    steps = []
    result, sim, _tl = run_sim("api-node-loss", progress=steps.append)
    assert result.passed, result.summary_lines()
    assert steps[0] == "step 1/9: traffic start"
    assert sim.rate == CFG.traffic.rate  # built-ins run at the lab's (accelerator-aware) rate
    assert [s.ok for s in result.steps] == [True] * 9
    (m,) = result.measurements
    assert m["detection_s"] == pytest.approx(1.25, abs=0.01) and m["expected_detection_s"] == 2.25
    assert m["failed_reads"] == 0 and m["failed_writes"] > 0
    assert m["recovery_s"] == pytest.approx(8.0, abs=0.2)
    labels = {h.label: h for h in result.hypotheses}
    assert labels["detected within the preset's budget"].value == pytest.approx(1.25 / 2.25, abs=0.01)
    assert not sim.running and not sim.active


def test_broken_on_purpose_exits_with_name_and_time():
    result, sim, _tl = run_sim(FIX / "broken-on-purpose.yaml")
    assert not result.passed
    (b,) = result.broken
    assert b.label == "no write ever fails"
    # The first write routed to the dead api-2 fails (ends 1 s later); steady needs 3 whole seconds.
    fault_rel = result.measurements[0]["fault_at_rel"]
    assert fault_rel < b.broken_at_s < fault_rel + 1.25 + 1.0 + 0.01
    line = next(x for x in result.summary_lines() if "BROKEN" in x)
    assert f"no write ever fails at t={b.broken_at_s:.1f} s" in line
    assert "failed_writes" in b.reason
    assert not sim.active  # the fault was undone


def test_preset_step_switches_and_puts_back():
    sc = parse_scenario("""
name: preset-switch
steps:
  - preset: kolla
  - traffic: {rate: 20}
  - wait: {until: steady 2 s, timeout: 30}
  - fault: {action: kill, node: api-3}
  - wait: {until: detected, timeout: 30}
    expect: [detection_ratio <= 1.01]
  - revive: api-3
  - wait: {until: recovered, timeout: 60}
""", "preset-switch.yaml")
    result, sim, _ = run_sim(sc, detect=9.5)
    assert result.passed, result.summary_lines()
    assert sim.presets == ["kolla", "fast"]  # switched, then back to the lab's own
    assert result.measurements[0]["preset"] == "kolla"
    assert result.measurements[0]["expected_detection_s"] == 20.0


def test_failing_step_stops_and_cleans_up():
    sc = parse_scenario("""
steps:
  - traffic: {rate: 20}
  - fault: {action: kill, node: api-2}
  - fault: {action: kill, node: api-2}
  - wait: 5
    expect: [errors == 0]
""", "fail.yaml")
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)
    calls = []
    original = sim.apply

    def apply(action, node, **p):
        calls.append(node)
        if len(calls) == 2:
            from halab.errors import HalabError
            raise HalabError("api-2 is already shut off")
        return original(action, node, **p)

    sim.apply = apply
    result = ScenarioRunner(LabHandles(CFG, tl, faults=sim, traffic=sim), sc, clock=sim.clock,
                            sleep=sim.sleep).run()
    assert not result.passed
    assert result.problems[0] == "step 3 (fail.yaml:5) kill api-2: api-2 is already shut off"
    assert result.problems[1] == "stopped after step 3; the remaining 1 step(s) did not run"
    assert result.hypotheses[0].reason == "its step never ran"
    assert not sim.active and not sim.running


def test_wait_timeout_is_a_problem():
    sc = parse_scenario("steps:\n  - traffic: {rate: 10}\n  - wait: {until: node api-2 DOWN, timeout: 3}\n",
                        "t.yaml")
    result, _sim, _ = run_sim(sc)
    assert not result.passed
    assert result.problems == ["step 2 (t.yaml:3) wait until node api-2 DOWN (max 3 s): "
                               "'node api-2 DOWN' not reached within 3 s"]


@pytest.mark.parametrize("name", ["mq-loss", "slow-node", "partition", "api-rolling-loss"])
def test_builtins_on_the_simulated_lab(name):
    result, sim, _ = run_sim(name)
    assert result.passed, result.summary_lines()
    assert not sim.active


def test_db_loss_default_expects_an_outage():
    result, _sim, _ = run_sim("db-loss")
    assert result.passed, result.summary_lines()
    names = [h.label for h in result.hypotheses]
    assert "outage (single MariaDB)" in names and "Galera carries on" not in names


def test_with_rate_overrides_every_rated_traffic_step_only():
    from halab.chaos.scenario import parse_scenario
    from halab.errors import UsageError

    base = parse_scenario("name: t\nsteps:\n  - traffic: {rate: 40}\n  - wait: 2\n  - traffic: {rate: 20}\n"
                          "  - fault: {action: kill, node: api-2}\n  - traffic: start\n  - traffic: stop\n")
    slow = base.with_rate(6)
    rated = [s for s in base.steps if s.action == "traffic" and "rate" in s.args]
    assert rated and all(s.args["rate"] != 6 for s in rated)
    new = [s.args["rate"] for s in slow.steps if s.action == "traffic" and "rate" in s.args]
    assert new == [6.0] * len(rated)
    others = [(a, b) for a, b in zip(base.steps, slow.steps, strict=True) if a.action != "traffic"]
    assert all(a == b for a, b in others)
    assert slow.hypotheses == base.hypotheses
    with pytest.raises(UsageError, match="--rate"):
        base.with_rate(0)


class WarmingSimLab(SimLab):
    """Reads fail for the first ``warm`` seconds of traffic (a lab that has just booted, under TCG)."""

    warm = 2.0

    def _request(self, at: float) -> None:
        if at < T0 + self.warm:
            self.tl.add_request(RequestRecord("read", at, at, at + 2.0, False, "timeout", None, ()))
            return
        super()._request(at)


WARMUP_SCENARIO = """
name: warm-up
hypotheses: [failed_reads == 0]
steps:
  - traffic: {rate: 20}
{steady}  - fault: {action: kill, node: api-2}
  - wait: {until: node api-2 DOWN, timeout: 30}
  - revive: api-2
  - wait: {until: recovered, timeout: 60}
"""


@pytest.mark.parametrize("with_steady", [True, False])
def test_run_hypotheses_count_from_the_steady_state(with_steady):
    steady = "  - wait: {until: steady 3 s, timeout: 60}\n" if with_steady else "  - wait: 1\n"
    sc = parse_scenario(WARMUP_SCENARIO.replace("{steady}", steady), "warm-up.yaml")
    tl = Timeline(clock=lambda: sim.now)
    sim = WarmingSimLab(tl)
    result = ScenarioRunner(LabHandles(CFG, tl, faults=sim, traffic=sim), sc, switch_preset=sim.switch,
                            clock=sim.clock, sleep=sim.sleep).run()
    if with_steady:
        assert result.passed, result.summary_lines()
        (note,) = result.notes
        assert note.startswith("40 request(s) failed while the lab warmed up, before the steady state at t=")
        assert "note: 40 request(s) failed" in "\n".join(result.summary_lines())
    else:  # no steady state to start from: the warm-up failures count
        assert not result.passed
        (b,) = result.broken
        # ... from the first warm-up read (sent at t=0, timed out 2 s later)
        assert b.label == "failed_reads == 0" and b.broken_at_s == pytest.approx(2.0, abs=0.01)
        assert result.notes == []


class DownBackend:
    """Probes whose HAProxy sees api-1 DOWN until ``until`` (virtual time)."""

    def __init__(self, sim, until: float):
        self.sim, self.until = sim, until

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def backends_not_up(self) -> list[str]:
        return ["api_nodes/api-1 DOWN on haproxy-1"] if self.sim.now < self.until else []


@pytest.mark.parametrize("healed_after", [20.0, None])
def test_steady_waits_for_every_backend_up_and_says_which_is_not(healed_after):
    sc = parse_scenario(WARMUP_SCENARIO.replace("{steady}", "  - wait: {until: steady 3 s, timeout: 60}\n"),
                        "s.yaml")
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)
    probes = DownBackend(sim, T0 + (healed_after if healed_after is not None else 1e9))
    result = ScenarioRunner(LabHandles(CFG, tl, faults=sim, traffic=sim, probes=probes), sc,
                            switch_preset=sim.switch, clock=sim.clock, sleep=sim.sleep).run()
    wait = result.steps[1]
    if healed_after is not None:
        assert result.passed, result.summary_lines()
        assert wait.ok and wait.ended_s == pytest.approx(healed_after, abs=0.2)
    else:
        assert not result.passed
        assert not wait.ok
        assert wait.detail == ("'steady 3 s' not reached within 60 s; not UP: api_nodes/api-1 DOWN on "
                               "haproxy-1")
        assert not sim.dead  # the fault step never ran on an unsteady lab


# ---- warm labs: reset steps and warm revive -------------------------------------------------------


def test_reset_and_warm_revive_steps_parse_and_check():
    sc = parse_scenario("""
name: warm
steps:
  - reset: ready
  - traffic: {rate: 10}
  - fault: {action: kill, node: api-2}
  - revive: {node: api-2, from: ready}
  - fault: {action: kill, node: api-3}
  - revive: {node: api-3, from: cold}
  - reset:
""", "warm.yaml")
    acts = [(s.action, s.args) for s in sc.steps]
    assert acts[0] == ("reset", {"checkpoint": "ready"})
    assert acts[3] == ("revive", {"node": "api-2", "warm": True, "checkpoint": "ready"})
    assert acts[5] == ("revive", {"node": "api-3", "warm": False})
    assert acts[6] == ("reset", {"checkpoint": "ready"})
    assert sc.steps[3].label == "revive api-2 warm"
    assert sc.steps[0].label == "reset the lab to checkpoint ready"


def test_bad_reset_and_revive_steps_are_located():
    errs = errors_of("steps:\n  - reset: {a: 1}\n  - fault: {action: kill, node: api-2}\n"
                     "  - revive: {node: api-2, from: Not/A/Name}\n  - revive: {from: ready}\n")
    assert errs[0].startswith("s.yaml:2: steps[0].reset: must be a string")
    assert any(e.startswith("s.yaml:4: steps[2].revive.from: a checkpoint name (e.g. ready) or cold")
               for e in errs), errs
    assert any(e.startswith("s.yaml:5: steps[3].revive: needs node: NODE") for e in errs), errs


def test_reset_step_resets_through_the_lab_and_closes_open_faults():
    sc = parse_scenario("""
name: reset-mid-run
steps:
  - traffic: {rate: 10}
  - fault: {action: kill, node: api-2}
  - wait: 2
  - reset: ready
  - traffic: stop
""", "reset.yaml")
    calls = []
    tl = Timeline(clock=lambda: sim.now)
    sim = SimLab(tl)

    def reset(name):
        calls.append(name)
        sim.dead.clear()
        return "7 nodes in 12.0 s, healthy"

    runner = ScenarioRunner(LabHandles(CFG, tl, faults=sim, traffic=sim), sc, clock=sim.clock,
                            sleep=sim.sleep, reset_lab=reset)
    result = runner.run()
    assert calls == ["ready"]
    assert result.steps[3].ok and "healthy" in result.steps[3].detail
    assert all(f.undone_at is not None for f in runner.faults), "the reset undid the kill"
    assert any(e.source == "reset" and "reset to checkpoint ready" in e.message for e in tl.events())


def test_reset_step_without_a_real_lab_fails_clearly():
    result, _sim, _tl = run_sim(parse_scenario("steps:\n  - reset: ready\n", "r.yaml"))
    assert not result.passed
    assert "needs a real lab with checkpoints" in " ".join(result.summary_lines())
