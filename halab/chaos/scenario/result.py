"""What a scenario run produced: per step, per hypothesis, and the record, as plain data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from halab.chaos.scenario.hypotheses import (
    HypothesisResult,
    fmt_value,
)
from halab.observe.timeline import TrafficPoint

# ---- running ------------------------------------------------------------------------------------


@dataclass
class StepResult:
    index: int
    action: str
    label: str
    line: int
    started_s: float  # from the start of the run
    ended_s: float
    ok: bool = True
    detail: str = ""


@dataclass
class ScenarioResult:
    scenario: str
    source: str
    description: str
    lab: str
    profile: str
    preset: str  # the HAProxy preset at the start (after the scenario's own `preset:`)
    started_at: float  # wall clock
    duration_s: float
    steps: list[StepResult]
    hypotheses: list[HypothesisResult]
    measurements: list[dict[str, Any]]  # MeasureResult.to_dict() + "preset", "step"
    problems: list[str]
    traffic: list[TrafficPoint]  # per second, ``t`` relative to the run's start
    events: list[dict[str, Any]]  # relative: t, kind, message, node, source
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure

    @property
    def passed(self) -> bool:
        return not self.problems and all(h.held for h in self.hypotheses)

    @property
    def broken(self) -> list[HypothesisResult]:
        return [h for h in self.hypotheses if not h.held]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScenarioResult:
        d = {k: v for k, v in d.items() if k != "passed"}
        d["steps"] = [StepResult(**s) for s in d["steps"]]
        d["hypotheses"] = [HypothesisResult(**h) for h in d["hypotheses"]]
        d["traffic"] = [TrafficPoint.from_dict(p) for p in d["traffic"]]
        return cls(**d)

    def summary_lines(self) -> list[str]:
        out = [f"scenario {self.scenario} on lab {self.lab} ({self.profile}, preset {self.preset}): "
               f"{'PASSED' if self.passed else 'FAILED'} in {self.duration_s:.1f} s"]
        for h in self.hypotheses:
            mark = "held  " if h.held else "BROKEN"
            when = f" at t={h.broken_at_s:.1f} s" if h.broken_at_s is not None else ""
            val = f" (value {fmt_value(h.value)})" if h.value is not None and h.held else ""
            out.append(f"  {mark} [{h.scope}] {h.label}{when}{val}" + (f": {h.reason}" if h.reason else ""))
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  note: {n}" for n in self.notes]
        return out




def detection_ratio(a: ScenarioResult, b: ScenarioResult) -> float | None:
    """b's worst detection time over a's (e.g. kolla over fast): how many times slower b noticed."""
    da = [m["detection_s"] for m in a.measurements if m.get("detection_s") is not None]
    db = [m["detection_s"] for m in b.measurements if m.get("detection_s") is not None]
    if not da or not db or max(da) <= 0:
        return None
    return round(max(db) / max(da), 2) if math.isfinite(max(db) / max(da)) else None
