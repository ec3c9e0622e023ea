"""The scenario language's model: steps, hypotheses, the scenario, and the words they use."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from halab import fault_kinds
from halab.errors import UsageError
from halab.lab.config import (
    LabConfig,
    check_rate,
)

SCENARIO_DIR = Path(__file__).resolve().parents[3] / "scenarios"
ACTIONS = ("traffic", "wait", "fault", "revive", "undo", "restore", "reset", "preset", "measure", "mark")
NARRATION_KEYS = ("say", "pause", "show")  # story mode: what the room is told, and when it waits
SHOW_PANELS = ("topology", "graphs", "events", "failover", "story", "servers")
SAY_MAX = 400  # characters: narration is read from a projector, not a page
STEP_KEYS = (*ACTIONS, "name", "expect", *NARRATION_KEYS)
TOP_KEYS = ("name", "description", "profile", "preset", "hypotheses", "steps")
FAULT_ACTIONS = fault_kinds.FAULTS  # what a `fault:` step may do (the registry's faults)
# action -> {param: (type, lo, hi)}: the params a `fault:` step may give, from the registry
FAULT_PARAMS: dict[str, dict[str, tuple[str, float, float]]] = {
    k.name: {p.name: (p.type, p.lo, p.hi) for p in k.params}
    for k in fault_kinds.KINDS if k.is_fault and k.params
}

# metric -> (unit, request kind or None for all, family)
METRICS: dict[str, tuple[str, str | None, str]] = {
    "read_availability": ("%", "read", "availability"),
    "write_availability": ("%", "write", "availability"),
    "page_availability": ("%", "page", "availability"),
    "availability": ("%", None, "availability"),
    "failed_reads": ("", "read", "count"),
    "failed_writes": ("", "write", "count"),
    "failed_pages": ("", "page", "count"),
    "errors": ("", None, "count"),
    "p99_latency_ms": ("ms", None, "latency"),
    "max_latency_ms": ("ms", None, "latency"),
    "detection_s": ("s", None, "measure"),
    "error_window_s": ("s", None, "measure"),
    "recovery_s": ("s", None, "measure"),
    "detection_ratio": ("", None, "measure"),
}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
}
WRITES_STUCK_MAX_PCT = 10.0


# wait conditions: `node X [back] UP|DOWN`, `steady N s` (and `detected` / `recovered`)
COND_NODE_RE = re.compile(r"^node\s+(?P<node>\S+)\s+(?:back\s+)?(?P<state>UP|DOWN)$")
COND_STEADY_RE = re.compile(r"^steady\s+(?P<n>[0-9]{1,9})\s*s$")


# ---- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypothesis:
    text: str
    kind: str  # "metric" | "node" | "writes-stuck"
    scope: str  # "run" | "step"
    line: int
    name: str = ""
    profiles: tuple[str, ...] = ()  # empty: every profile
    metric: str = ""
    op: str = ""
    value: float = 0.0
    node: str = ""
    state: str = ""  # UP / DOWN
    back: bool = False
    within_s: float = 0.0

    @property
    def label(self) -> str:
        return self.name or self.text

    def applies_to(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles


@dataclass(frozen=True)
class Step:
    index: int  # 1-based
    action: str
    line: int
    args: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    expect: tuple[Hypothesis, ...] = ()
    say: str = ""  # narration shown big in story mode while this step runs
    pause: bool = False  # story mode waits for the presenter's key before this step
    show: str = ""  # the TUI panel to put on stage for this step (SHOW_PANELS)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        a = self.args
        if self.action == "say":
            text = self.say or ("presenter pause" if self.pause else f"show {self.show}")
            return text if len(text) <= 60 else text[:59] + "…"
        if self.action == "traffic":
            if a.get("stop"):
                return "traffic stop"
            return f"traffic {a['rate']:g} ops/s" if "rate" in a else "traffic start"
        if self.action == "wait":
            return (f"wait until {a['until']} (max {a['timeout']:g} s)" if "until" in a
                    else f"wait {a['seconds']:g} s")
        if self.action == "fault":
            extra = " ".join(f"{k}={v}" for k, v in a.get("params", {}).items())
            return f"{a['action']} {a['node']}" + (f" ({extra})" if extra else "")
        if self.action == "revive":
            how = {True: " warm", False: " cold"}.get(a.get("warm"), "")
            return f"revive {a['node']}{how}"
        if self.action == "reset":
            return f"reset the lab to checkpoint {a['checkpoint']}"
        if self.action == "undo":
            what = " ".join(str(a[k]) for k in ("action", "node") if a.get(k))
            return f"undo {what or 'last fault'}"
        if self.action == "restore":
            return "restore all faults"
        if self.action == "preset":
            return f"HAProxy preset {a['preset']}"
        if self.action == "measure":
            return f"measure {a['what']}"
        return f"mark {a.get('text', '')}"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    profiles: tuple[str, ...]  # empty: any
    preset: str | None
    hypotheses: tuple[Hypothesis, ...]
    steps: tuple[Step, ...]
    source: str = "<text>"

    def nodes(self) -> list[tuple[str, int]]:
        """Every node named by a step or hypothesis, with its line."""
        out = [(s.args["node"], s.line) for s in self.steps if s.args.get("node")]
        out += [(h.node, h.line) for h in self.all_hypotheses() if h.node]
        for s in self.steps:
            m = COND_NODE_RE.match(str(s.args.get("until", "")))
            if m:
                out.append((m["node"], s.line))
        return out

    def all_hypotheses(self) -> list[Hypothesis]:
        return [*self.hypotheses, *(h for s in self.steps for h in s.expect)]

    def with_rate(self, rate: float) -> Scenario:
        """The same story at another traffic rate (``--rate``): a lab under software emulation
        serves a fraction of what it serves on KVM, and a rate above its capacity measures the
        overload, not the failover."""
        check_rate(rate, "--rate")
        steps = tuple(replace(s, args={**s.args, "rate": float(rate)})
                      if s.action == "traffic" and "rate" in s.args else s for s in self.steps)
        return replace(self, steps=steps)

    def check_lab(self, cfg: LabConfig) -> None:
        """Refuse a lab this scenario cannot run on: wrong profile, unknown nodes."""
        errors: list[str] = []
        if self.profiles and cfg.profile not in self.profiles:
            errors.append(f"{self.source}: scenario {self.name!r} needs profile "
                          f"{' or '.join(self.profiles)}; lab {cfg.name!r} is {cfg.profile!r} "
                          f"(set `profile:` in {cfg.source})")
        known = {n.name for n in cfg.nodes()}
        for node, line in self.nodes():
            if node not in known:
                errors.append(f"{self.source}:{line}: node {node!r} does not exist in lab {cfg.name!r} "
                              f"(profile {cfg.profile}); nodes: {', '.join(sorted(known))}")
        if errors:
            raise UsageError("\n".join(dict.fromkeys(errors)))
