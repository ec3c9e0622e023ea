"""Scripted scenarios: steps that drive the lab, and hypotheses checked over the whole record.

A scenario is a YAML file (``scenarios/<name>.yaml``)::

    name: api-node-loss
    description: One API node dies under load; HAProxy routes around it.
    profile: [default, ha]          # optional: the lab profiles it makes sense on
    preset: fast                    # optional: the HAProxy preset to run under
    hypotheses:                     # checked over the run, from the steady state on
      - failed_reads == 0
    steps:
      - traffic: {rate: 40}
      - wait: {until: steady 5 s, timeout: 120}
      - fault: {action: kill, node: api-2}
      - wait: {until: node api-2 DOWN, timeout: 30}
        expect:                     # checked over this step
          - detection_s <= 2
      - revive: api-2
      - wait: {until: recovered, timeout: 400}
        expect:
          - node api-2 back UP within 300 s

Steps (one action each, optional ``name`` and ``expect``):

* ``traffic: {rate: N}`` starts (or re-rates) client traffic; ``traffic: stop`` stops it.
* ``wait: N`` / ``wait: {seconds: N}`` / ``wait: {until: CONDITION, timeout: N}`` where CONDITION is
  ``node X DOWN``, ``node X UP``, ``detected`` / ``recovered`` (the last fault), ``steady N s`` (N s of
  traffic without a failed request while every HAProxy backend stays UP).
* ``fault: {action, node, params}`` — kill, pause, netcut, netem, stop-service, reboot.
* ``revive: NODE`` / ``undo: {node, action}`` (or ``undo: last``) reverses the scenario's fault.
* ``restore: all`` undoes every active fault of the lab.
* ``preset: fast|kolla`` re-renders haproxy.cfg on the HAProxy nodes and reloads HAProxy.
* ``measure: end`` closes the measurement window of the faults so far; ``mark: TEXT`` a label.

Story mode (any step, or alone as a narration step that does nothing to the lab):

* ``say: TEXT`` — narration the TUI shows big while the step runs (at most 400 characters).
* ``pause: true`` — in the TUI the story waits for the presenter's key before this step
  (``scenario run`` and ``a`` = run on ignore it).
* ``show: topology|graphs|events|failover|story|servers`` — the panel the TUI puts on stage
  (servers: one server under both the OpenStack and the EC2 view, read through the VIP).

Hypotheses (strings, or ``{check: STRING, profile: ha, name: ...}`` to apply on one profile only):

* ``METRIC OP NUMBER [%|s|ms] [over step|over run]`` — traffic metrics (read/write/page_availability,
  availability, failed_reads/writes/pages, errors, p99_latency_ms, max_latency_ms) computed from every
  request scheduled in the scope; failover metrics (detection_s, error_window_s, recovery_s,
  detection_ratio) from ``halab.chaos.measure`` for the faults of the scope.
* ``node X [back] UP|DOWN within N s`` — from the node's detection source (HAProxy for API nodes...).
* ``writes stuck [in BUILD]`` — the client cannot complete writes (<= 10 % of writes succeed).

Run hypotheses count from the end of the first ``wait: {until: steady N s}`` before any fault (the
steady state the experiment starts from; what failed while the lab warmed up is reported as a note),
or from the start when there is none.

A broken hypothesis records when (seconds from the start of the run): the moment the record first
made it false (e.g. the failure beyond the availability budget), not only the end of the step.
"""

from __future__ import annotations

from halab.chaos.scenario.hypotheses import (
    AppliedFault,
    EvalContext,
    HypothesisResult,
    evaluate,
    evaluate_all,
    host_watch_node,
)
from halab.chaos.scenario.model import (
    ACTIONS,
    FAULT_ACTIONS,
    FAULT_PARAMS,
    METRICS,
    NARRATION_KEYS,
    OPS,
    SAY_MAX,
    SCENARIO_DIR,
    SHOW_PANELS,
    STEP_KEYS,
    TOP_KEYS,
    WRITES_STUCK_MAX_PCT,
    Hypothesis,
    Scenario,
    Step,
)
from halab.chaos.scenario.reader import (
    builtin_scenarios,
    load_scenario,
    parse_hypothesis,
    parse_scenario,
)
from halab.chaos.scenario.result import (
    ScenarioResult,
    StepResult,
    detection_ratio,
)
from halab.chaos.scenario.runner import (
    PresetSwitch,
    ScenarioRunner,
    SshRun,
    StepFailed,
    lab_resetter,
    push_haproxy_config,
    run_loaded,
    with_preset,
)

__all__ = [
    "ACTIONS",
    "FAULT_ACTIONS",
    "FAULT_PARAMS",
    "METRICS",
    "NARRATION_KEYS",
    "OPS",
    "SAY_MAX",
    "SCENARIO_DIR",
    "SHOW_PANELS",
    "STEP_KEYS",
    "TOP_KEYS",
    "WRITES_STUCK_MAX_PCT",
    "AppliedFault",
    "EvalContext",
    "Hypothesis",
    "HypothesisResult",
    "PresetSwitch",
    "Scenario",
    "ScenarioResult",
    "ScenarioRunner",
    "SshRun",
    "Step",
    "StepFailed",
    "StepResult",
    "builtin_scenarios",
    "detection_ratio",
    "evaluate",
    "evaluate_all",
    "host_watch_node",
    "lab_resetter",
    "load_scenario",
    "parse_hypothesis",
    "parse_scenario",
    "push_haproxy_config",
    "run_loaded",
    "with_preset",
]
