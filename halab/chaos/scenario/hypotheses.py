"""Evaluating hypotheses over a run's record (traffic, events, failover measurements)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from halab.chaos.measure import (
    MeasureResult,
    detection_sources,
    state_change_matches,
)
from halab.chaos.scenario.model import (
    METRICS,
    OPS,
    Hypothesis,
    Scenario,
    Step,
)
from halab.errors import ConfigError, UsageError
from halab.lab.config import (
    LabConfig,
)
from halab.observe.timeline import Event, RequestRecord, percentile

# ---- evaluation ---------------------------------------------------------------------------------


@dataclass
class AppliedFault:
    action: str
    node: str  # the node, or the host of a host fault
    at: float
    params: dict[str, Any]
    cfg: LabConfig
    step: int
    undone_at: float | None = None
    watch: str = ""  # a host fault: the node whose detection and recovery stand for the host's

    @property
    def probe(self) -> str:
        return self.watch or self.node

    @property
    def target(self) -> str | None:
        return self.node if self.watch else None


def host_watch_node(cfg: LabConfig, host: str) -> str:
    """The node a host fault is timed on: the host's first API node (HAProxy's view of the loss),
    else its first node."""
    nodes = cfg.nodes_on(host)
    if not nodes:
        raise UsageError(f"host {host!r} holds no node of lab {cfg.name!r}: nothing to break there")
    return next((n.name for n in nodes if n.role == "api"), nodes[0].name)


@dataclass
class HypothesisResult:
    hypothesis: str
    scope: str  # "run" or "step 4: wait until ..."
    line: int
    held: bool
    value: float | None = None
    broken_at_s: float | None = None  # from the start of the run
    reason: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.hypothesis


@dataclass
class EvalContext:
    """Everything the hypotheses read: the record, the faults the run applied, its measurements."""

    cfg: LabConfig
    events: list[Event]
    requests: list[RequestRecord]
    faults: list[AppliedFault]
    measurements: list[tuple[AppliedFault, MeasureResult]]
    t0: float
    end: float
    steady_at: float | None = None  # run hypotheses count from here (the steady state before any fault)


def fmt_value(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    text = f"{v:.3f}".rstrip("0").rstrip(".") if not float(v).is_integer() else f"{int(v)}"
    return f"{text} {unit}".strip()


def evaluate(h: Hypothesis, start: float, end: float, ctx: EvalContext, scope_label: str = "run"
             ) -> HypothesisResult:
    """Check one hypothesis over [start, end) of the record."""
    res = HypothesisResult(h.text, scope_label, h.line, True, name=h.name)

    def broken(at: float, reason: str, value: float | None = None) -> HypothesisResult:
        res.held, res.reason, res.value = False, reason, value
        res.broken_at_s = round(max(start, min(at, ctx.end)) - ctx.t0, 3)
        return res

    if h.kind == "node":
        return _eval_node(h, start, end, ctx, res, broken)
    unit, kind, family = METRICS[h.metric]
    cmp = OPS[h.op]
    expected = f"{h.op} {fmt_value(h.value, unit)}"
    if family == "measure":
        return _eval_measure(h, start, end, ctx, res, broken, expected)
    reqs = [q for q in ctx.requests if start <= q.scheduled < end and (kind is None or q.kind == kind)]
    failed = sorted((q for q in reqs if not q.ok), key=lambda q: q.end)
    if family == "availability":
        if not reqs:
            return broken(end, f"no {kind or 'client'} operations in the scope to measure")
        n = len(reqs)
        value = 100.0 * (n - len(failed)) / n
        res.value = round(value, 4)
        if cmp(value, h.value):
            return res
        reason = (f"{h.metric} {fmt_value(value, '%')} ({len(failed)} of {n} failed), expected {expected}")
        if h.op in (">=", ">"):  # broken by the failure beyond the budget
            allowed = _largest(len(failed), lambda f: cmp(100.0 * (n - f) / n, h.value))
            return broken(failed[allowed].end if allowed >= 0 else start, reason, value)
        if h.op in ("<=", "<"):  # e.g. writes stuck: broken by the success beyond the budget
            oks = sorted((q for q in reqs if q.ok), key=lambda q: q.end)
            allowed = _largest(len(oks), lambda k: cmp(100.0 * k / n, h.value))
            return broken(oks[allowed].end if allowed >= 0 else start, reason, value)
        return broken(end, reason, value)
    if family == "count":
        value = float(len(failed))
        res.value = value
        if cmp(value, h.value):
            return res
        reason = f"{h.metric} {int(value)}, expected {expected}"
        if h.op in ("<=", "<", "==") and value > h.value:
            allowed = _largest(len(failed), lambda c: cmp(c, h.value) or (h.op == "==" and c < h.value))
            first = failed[allowed] if allowed >= 0 else failed[0]
            return broken(first.end, f"{reason}; the first beyond: {first.kind} ({first.error or 'error'})",
                          value)
        return broken(end, reason, value)
    # latency
    lat = [q.latency_ms for q in reqs]
    value = (max(lat) if h.metric == "max_latency_ms" else percentile(lat, 99)) if lat else None
    res.value = round(value, 3) if value is not None else None
    if value is None:
        return broken(end, "no operations in the scope to measure")
    if cmp(value, h.value):
        return res
    reason = f"{h.metric} {fmt_value(value, 'ms')}, expected {expected}"
    if h.op in ("<=", "<"):
        slow = [q.start + h.value / 1000.0 for q in reqs if not cmp(q.latency_ms, h.value)]
        if slow and h.metric == "max_latency_ms":
            return broken(min(slow), reason, value)
    return broken(end, reason, value)


def _largest(n: int, ok: Callable[[int], bool]) -> int:
    """The largest k in 0..n-1 with ok(k) (how many failures the budget allows), else -1."""
    return next((k for k in range(n - 1, -1, -1) if ok(k)), -1)


def _eval_measure(h: Hypothesis, start: float, end: float, ctx: EvalContext, res: HypothesisResult,
                  broken: Callable[..., HypothesisResult], expected: str) -> HypothesisResult:
    ms = [(f, m) for f, m in ctx.measurements if start <= f.at < end]
    if not ms and h.scope == "step":
        before = [(f, m) for f, m in ctx.measurements if f.at < start]
        ms = before[-1:]
    if not ms:
        return broken(end, "no fault in the scope to measure")
    cmp = OPS[h.op]
    worst: float | None = None
    for f, m in ms:
        if h.metric == "detection_ratio":
            v = (m.detection_s / m.expected_detection_s) if (m.detection_s is not None
                                                             and m.expected_detection_s) else None
        else:
            v = getattr(m, h.metric)
        if v is None:
            when = {"detection_s": m.fault_at, "detection_ratio": m.fault_at,
                    "error_window_s": m.fault_at, "recovery_s": m.revive_at or m.fault_at}[h.metric]
            what = {"detection_s": "not detected", "detection_ratio": "no detection or no expected value",
                    "recovery_s": "not recovered" if m.revive_at else "never undone",
                    "error_window_s": "n/a"}[h.metric]
            return broken(when + (h.value if h.metric != "detection_ratio" else 0.0),
                          f"{h.metric} for {f.action} {f.node}: {what}, expected {expected}")
        if not cmp(v, h.value):
            ref = {"detection_s": m.fault_at, "error_window_s": m.first_error_at or m.fault_at,
                   "recovery_s": m.revive_at or m.fault_at, "detection_ratio": m.detected_at or end}[h.metric]
            at = ref + h.value if h.op in ("<=", "<") and h.metric != "detection_ratio" else \
                (m.detected_at or end)
            return broken(at, f"{h.metric} {fmt_value(v, 's' if h.metric.endswith('_s') else '')} for "
                          f"{f.action} {f.node}, expected {expected}", v)
        worst = v if worst is None else max(worst, v)
    res.value = round(worst, 3) if worst is not None else None
    return res


def _eval_node(h: Hypothesis, start: float, end: float, ctx: EvalContext, res: HypothesisResult,
               broken: Callable[..., HypothesisResult]) -> HypothesisResult:
    try:
        role = ctx.cfg.node(h.node).role
    except ConfigError:
        return broken(start, f"node {h.node} is not in this lab")
    sources = detection_sources(ctx.cfg, role)
    want = "up" if h.state == "UP" else "down"
    if h.state == "UP":
        refs = [f.undone_at for f in ctx.faults if f.node == h.node and f.undone_at is not None
                and start <= f.undone_at < end]
        if not refs:
            refs = [f.undone_at for f in ctx.faults if f.node == h.node and f.undone_at is not None
                    and f.undone_at < start][-1:]
    else:
        refs = [f.at for f in ctx.faults if f.node == h.node and start <= f.at < end]
        if not refs:
            refs = [f.at for f in ctx.faults if f.node == h.node and f.at < start][-1:]
    ref = refs[-1] if refs else start
    seen = next((e for e in ctx.events if ref <= e.at <= ref + h.within_s
                 and state_change_matches(e, sources, h.node, want)), None)
    if seen is not None:
        res.value = round(seen.at - ref, 3)
        return res
    later = next((e for e in ctx.events if e.at > ref + h.within_s
                  and state_change_matches(e, sources, h.node, want)), None)
    extra = f" (it came at {later.at - ref:.1f} s)" if later else " (not seen at all)"
    if ref + h.within_s > ctx.end and later is None:
        extra = f" (the run ended {ctx.end - ref:.1f} s after)"
    return broken(ref + h.within_s, f"{h.node} not {h.state} within {h.within_s:g} s of "
                  f"{'its undo' if h.state == 'UP' and refs else 'its fault' if refs else 'the step start'}"
                  f"{extra}", (later.at - ref) if later else None)




def evaluate_all(sc: Scenario, ctx: EvalContext, spans: list[tuple[Step, float, float]]
                 ) -> list[HypothesisResult]:
    """Every hypothesis that applies to the lab's profile: step ones over [step start, next step start),
    run ones over the whole run."""
    out = []
    for k, (step, start, _end) in enumerate(spans):
        nxt = spans[k + 1][1] if k + 1 < len(spans) else ctx.end
        for h in step.expect:
            if h.applies_to(ctx.cfg.profile):
                scope = "run" if h.scope == "run" else f"step {step.index}"
                s0, s1 = (ctx.steady_at or ctx.t0, ctx.end) if h.scope == "run" else (start, nxt)
                out.append(evaluate(h, s0, s1, ctx, scope))
    ran = {s.index for s, _a, _b in spans}
    for step in sc.steps:
        if step.index not in ran:
            for h in step.expect:
                if h.applies_to(ctx.cfg.profile):
                    out.append(HypothesisResult(h.text, f"step {step.index}", h.line, False,
                                                broken_at_s=round(ctx.end - ctx.t0, 3),
                                                reason="its step never ran", name=h.name))
    for h in sc.hypotheses:
        if h.applies_to(ctx.cfg.profile):
            out.append(evaluate(h, ctx.steady_at or ctx.t0, ctx.end, ctx, "run"))
    return out
