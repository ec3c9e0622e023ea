"""``measure`` as a built-in scenario: one failover experiment, run by the scenario runner.

The measurement is the story every scenario tells, written as steps — traffic, steady state, the
fault, detection, settle, the undo, recovery — so it waits, records faults and cleans up exactly as
``scenario run`` does (one runner, not a second orchestrator). ``halab.chaos.measure`` keeps the
arithmetic (``measure_failover``) that both use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from halab.chaos.measure import (
    LabHandles,
    MeasureResult,
    expected_detection,
    measure_failover,
    not_steady_why,
)
from halab.chaos.scenario import Scenario, ScenarioRunner, Step, StepFailed, host_watch_node
from halab.errors import ConfigError, HalabError, UsageError
from halab.fault_kinds import HOST_ACTIONS, MEASURABLE


@dataclass(frozen=True)
class MeasurePlan:
    rate: float | None = None  # operations/s; None keeps the generator's rate
    steady_s: int = 5  # whole seconds of error-free traffic before the fault
    steady_timeout_s: float = 120.0
    detect_timeout_s: float | None = None  # default: 3 x expected + 10 s
    settle_s: float = 3.0  # after detection, before the undo
    revive: bool = True
    recovery_timeout_s: float = 300.0  # a killed node boots again: minutes under TCG
    tail_s: float = 3.0  # traffic kept after recovery
    poll_s: float = 0.1


def measurement_scenario(fault: str, node: str, plan: MeasurePlan, rate: float, detect_timeout: float,
                         params: dict[str, Any]) -> Scenario:
    """The measurement's steps. The named ones are what ``run_measurement`` reports as progress."""
    steps = [
        ("traffic", {"rate": rate}, ""),
        ("mark", {"text": f"measure {fault} {node}: traffic at {rate:g} ops/s, waiting for steady state"},
         ""),
        ("wait", {"until": f"steady {plan.steady_s} s", "timeout": plan.steady_timeout_s, "required": True},
         "waiting for steady traffic"),
        ("fault", {"action": fault, ("host" if fault in HOST_ACTIONS else "node"): node,
                   "params": dict(params)}, f"injecting {fault} on {node}"),
        ("wait", {"until": "detected", "timeout": detect_timeout}, "waiting for detection"),
        ("wait", {"seconds": plan.settle_s}, ""),
    ]
    if plan.revive:
        # A host fault's undo names only its action: "node" is checked against the lab's nodes.
        undo = {"action": fault} if fault in HOST_ACTIONS else {"node": node, "action": fault}
        steps += [("undo", undo, f"undoing {fault} on {node}"),
                  ("wait", {"until": "recovered", "timeout": plan.recovery_timeout_s},
                   "waiting for recovery")]
    return Scenario(
        name=f"measure-{fault}-{node}", description=f"measure {fault} {node}", profiles=(), preset=None,
        hypotheses=(), source="<measure>",
        steps=tuple(Step(i, action, 0, args, name) for i, (action, args, name) in enumerate(steps, 1)))


def run_measurement(
    lab: LabHandles,
    fault: str,
    node: str,
    plan: MeasurePlan = MeasurePlan(),
    *,
    fault_params: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> MeasureResult:
    """Start traffic, wait for steady state, inject, wait for detection and settle, undo, wait for
    recovery, report. The lab is restored (undo) even when a step fails; traffic that was running
    before keeps running after."""
    cfg, tl = lab.cfg, lab.timeline
    if fault not in MEASURABLE:
        raise UsageError(f"cannot measure {fault!r}: measurable faults are {', '.join(MEASURABLE)}")
    target: str | None = None
    try:
        if fault in HOST_ACTIONS:  # a host: timed on one of its nodes (HAProxy's view of the loss)
            if not cfg.hosts:
                raise UsageError(f"{fault} needs a lab over several hosts (lab.yaml hosts:)")
            target = cfg.host(node).name
        role = cfg.node(host_watch_node(cfg, target) if target else node).role
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not tl.keep_requests:
        raise UsageError("run_measurement needs a Timeline(keep_requests=True): client impact is "
                         "computed from each request")
    expected, _basis = expected_detection(cfg, role, fault)
    detect_timeout = plan.detect_timeout_s or (3 * (expected or 5.0) + 10.0)
    rate = plan.rate if plan.rate is not None else lab.traffic.rate
    sc = measurement_scenario(fault, node, plan, rate, detect_timeout, fault_params or {})
    say = progress or (lambda _m: None)
    # The runner says "step i/n: label"; a caller of measure hears only the named steps, as before.
    named = {f"step {s.index}/{len(sc.steps)}: {s.label}": s.name for s in sc.steps if s.name}
    runner = ScenarioRunner(lab, sc, progress=lambda m: say(named[m]) if m in named else None,
                            clock=clock, sleep=sleep, poll_s=plan.poll_s, tail_s=plan.tail_s,
                            strict=True, leave_faults=not plan.revive)
    was_running = bool(lab.traffic.running)
    try:
        runner.run()
    except StepFailed:
        raise HalabError(f"no steady state within {plan.steady_timeout_s:g} s ({plan.steady_s} s of traffic "
                         f"without errors, every HAProxy backend UP){not_steady_why(lab.probes)}; "
                         "is the lab healthy? (`./lab.py status`)") from None
    finally:
        if was_running and not lab.traffic.running:
            lab.traffic.start()  # the runner stops traffic at its end; someone else's keeps going
    until = clock()
    fault_at = runner.faults[0].at
    result = measure_failover(cfg, tl.events(), tl.requests(), fault, runner.faults[0].probe,
                              fault_at=fault_at, until=until, target=target)
    tl.event("measure", result.summary, node=node, source="measure", failover=result.to_dict())
    return result
