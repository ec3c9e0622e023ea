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

import base64
import math
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from halab import fault_kinds
from halab.chaos.measure import (
    LabHandles,
    MeasureResult,
    detection_sources,
    measure_failover,
    not_steady_why,
    state_change_matches,
    steady_state,
)
from halab.chaos.story import PAUSE_SOURCE, STEP_SOURCE, Story, hypothesis_views, step_data
from halab.errors import ConfigError, HalabError, UsageError
from halab.fault_kinds import UNDO
from halab.lab.config import (
    HAPROXY_PRESET_VALUES,
    HAPROXY_PRESETS,
    MAX_RATE,
    MIN_RATE,
    PROFILES,
    HAProxySettings,
    LabConfig,
    Located,
    LocatedReader,
    check_rate,
    compose_located,
    describe_kind,
    describe_value,
    read_definition,
)
from halab.observe.timeline import Event, RequestRecord, Timeline, TrafficPoint, percentile

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
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
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")  # \Z: "$" would accept a trailing newline
_NODE_RE = re.compile(r"^(haproxy|api|db|mq)-[1-9][0-9]?\Z")

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

_METRIC_RE = re.compile(
    r"^(?P<metric>[a-z_0-9]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?[0-9]{1,12}(?:\.[0-9]{1,12})?)\s*"
    r"(?P<unit>%|s|ms)?(?:\s+over\s+(?P<scope>\S+))?$")
_NODE_HYP_RE = re.compile(
    r"^node\s+(?P<node>\S+)\s+(?P<back>back\s+)?(?P<state>UP|DOWN)\s+within\s+"
    r"(?P<within>[0-9]{1,9}(?:\.[0-9]{1,9})?)\s*s$")
_STUCK_RE = re.compile(r"^writes\s+stuck(?:\s+in\s+BUILD)?(?:\s+over\s+(?P<scope>\S+))?$")
_COND_NODE_RE = re.compile(r"^node\s+(?P<node>\S+)\s+(?:back\s+)?(?P<state>UP|DOWN)$")
_COND_STEADY_RE = re.compile(r"^steady\s+(?P<n>[0-9]{1,9})\s*s$")


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
            m = _COND_NODE_RE.match(str(s.args.get("until", "")))
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


# ---- reading ------------------------------------------------------------------------------------


class _ScenarioReader(LocatedReader):
    def hypothesis(self, loc: Located, path: str, scope: str, profiles: tuple[str, ...]) -> Hypothesis | None:
        name = ""
        hprofiles: tuple[str, ...] = ()
        if isinstance(loc.value, dict):
            fields = self.mapping(loc, path, ("check", "name", "profile"))
            if "check" not in fields:
                self.err(loc.line, path, "a hypothesis mapping needs `check: <hypothesis>`")
                return None
            if "name" in fields:
                name = self.string(fields["name"], f"{path}.name") or ""
            if "profile" in fields:
                hprofiles = self.profiles(fields["profile"], f"{path}.profile")
                bad = [p for p in hprofiles if profiles and p not in profiles]
                if bad:
                    self.err(fields["profile"].line, f"{path}.profile",
                             f"{', '.join(bad)} is not among the scenario's profiles ({', '.join(profiles)})")
            loc, path = fields["check"], f"{path}.check"
        text = self.string(loc, path)
        if text is None:
            return None
        return parse_hypothesis(text, scope, loc.line, self, path, name=name, profiles=hprofiles)

    def profiles(self, loc: Located, path: str) -> tuple[str, ...]:
        items = loc.value if isinstance(loc.value, list) else [loc]
        out = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if isinstance(loc.value, list) else path
            v = self.choice(item, where, PROFILES)
            if v:
                out.append(v)
        return tuple(out)

    def node(self, loc: Located, path: str) -> str | None:
        v = self.string(loc, path)
        if v is not None and not _NODE_RE.match(v):
            self.err(loc.line, path, f"not a node name like api-2 or db-1 (got {describe_value(v)})")
            return None
        return v


def parse_hypothesis(text: str, scope: str, line: int, r: LocatedReader | None = None, path: str = "",
                     *, name: str = "", profiles: tuple[str, ...] = ()) -> Hypothesis | None:
    """One hypothesis from its text; errors go to the reader (or raise ConfigError without one)."""
    own = r is None
    reader = r or LocatedReader("<hypothesis>")
    t = " ".join(text.split())
    shown = describe_value(t)

    def fail(msg: str) -> None:
        reader.err(line, path or "hypothesis", msg)
        if own:
            raise ConfigError(reader.errors)

    def scope_of(word: str | None) -> str | None:
        if word is None:
            return scope
        if word not in ("step", "run"):
            fail(f"{shown}: 'over' takes step or run (got {describe_value(word)})")
            return None
        if word == "step" and scope == "run":
            fail(f"{shown}: 'over step' belongs under a step's expect:, not in the top-level hypotheses")
            return None
        return word

    m = _METRIC_RE.match(t)
    if m:
        metric = m["metric"]
        if metric not in METRICS:
            import difflib

            hint = difflib.get_close_matches(metric, METRICS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(METRICS)}"
            fail(f"{shown}: unknown metric {describe_value(metric)}{extra}")
            return None
        unit = METRICS[metric][0]
        value = float(m["value"])
        if m["unit"] and m["unit"] != unit:
            if unit == "s" and m["unit"] == "ms":
                value /= 1000.0
            elif unit == "ms" and m["unit"] == "s":
                value *= 1000.0
            else:
                fail(f"{shown}: {metric} is measured in {unit or 'plain numbers'}, not {m['unit']!r}")
                return None
        if unit == "%" and not 0 <= value <= 100:
            fail(f"{shown}: a percentage must be between 0 and 100 (got {value:g})")
            return None
        sc = scope_of(m["scope"])
        if sc is None:
            return None
        return Hypothesis(text=t, kind="metric", scope=sc, line=line, name=name, profiles=profiles,
                          metric=metric, op=m["op"], value=value)
    m = _NODE_HYP_RE.match(t)
    if m:
        if not _NODE_RE.match(m["node"]):
            fail(f"{shown}: not a node name like api-2 (got {describe_value(m['node'])})")
            return None
        return Hypothesis(text=t, kind="node", scope=scope, line=line, name=name, profiles=profiles,
                          node=m["node"], state=m["state"], back=bool(m["back"]),
                          within_s=float(m["within"]))
    m = _STUCK_RE.match(t)
    if m:
        sc = scope_of(m["scope"])
        if sc is None:
            return None
        return Hypothesis(text=t, kind="writes-stuck", scope=sc, line=line, name=name, profiles=profiles,
                          metric="write_availability", op="<=", value=WRITES_STUCK_MAX_PCT)
    fail(f"{shown}: not a hypothesis; write e.g. 'read_availability >= 99.9 %', 'error_window_s <= 2', "
         "'node api-2 back UP within 60 s', 'failed_pages == 0' or 'writes stuck'")
    return None


def _condition(r: LocatedReader, loc: Located, path: str) -> str | None:
    v = r.string(loc, path)
    if v is None:
        return None
    t = " ".join(v.split())
    m = _COND_NODE_RE.match(t)
    if m:
        if not _NODE_RE.match(m["node"]):
            r.err(loc.line, path, f"not a node name like api-2 (got {describe_value(m['node'])})")
            return None
        return t
    if t in ("detected", "recovered") or _COND_STEADY_RE.match(t):
        return t
    r.err(loc.line, path, f"unknown condition {describe_value(t)}: use 'node api-2 DOWN', 'node api-2 UP', "
          "'detected', 'recovered' or 'steady 5 s'")
    return None


def _read_step(r: _ScenarioReader, loc: Located, i: int, profiles: tuple[str, ...]) -> Step | None:
    path = f"steps[{i}]"
    if not isinstance(loc.value, dict):
        r.err(loc.line, path, f"must be a mapping with one action ({', '.join(ACTIONS)}) "
              f"(got {describe_kind(loc.value)} {describe_value(loc.value)})")
        return None
    fields = r.mapping(loc, path, STEP_KEYS)
    acts = [k for k in fields if k in ACTIONS]
    said = [k for k in fields if k in NARRATION_KEYS]
    if not acts and said:
        acts = ["say"]  # a narration step: says, pauses or shows, and does nothing to the lab
    if not acts:
        r.err(loc.line, path, f"needs one action: {', '.join(ACTIONS)} (or say:, pause:, show:)")
        return None
    if len(acts) > 1:
        r.err(fields[acts[1]].line, path, f"one action per step (got {' and '.join(acts)})")
        return None
    action = acts[0]
    a = fields[action] if action != "say" else fields[said[0]]
    where = f"{path}.{action}"
    args: dict[str, Any] = {}
    n_err = len(r.errors)
    say, pause, show = _narration(r, fields, path)
    if action == "traffic":
        if a.value == "stop":
            args["stop"] = True
        elif a.value == "start" or a.value is None:
            pass
        else:
            f = r.mapping(a, where, ("rate",)) if isinstance(a.value, dict) else {}
            if not isinstance(a.value, dict):
                r.err(a.line, where, f"must be {{rate: N}}, start or stop (got {describe_value(a.value)})")
            elif "rate" in f:
                v = r.number(f["rate"], f"{where}.rate", MIN_RATE, MAX_RATE)
                if v is not None:
                    args["rate"] = v
    elif action == "wait":
        if isinstance(a.value, int | float) and not isinstance(a.value, bool):
            v = r.number(a, where, 0, 86400)
            if v is not None:
                args["seconds"] = v
        elif isinstance(a.value, dict):
            f = r.mapping(a, where, ("seconds", "until", "timeout"))
            if ("seconds" in f) == ("until" in f):
                r.err(a.line, where, "give either seconds: N or until: CONDITION")
            if "seconds" in f:
                if "timeout" in f:
                    r.err(f["timeout"].line, f"{where}.timeout", "only with until:")
                v = r.number(f["seconds"], f"{where}.seconds", 0, 86400)
                if v is not None:
                    args["seconds"] = v
            if "until" in f:
                c = _condition(r, f["until"], f"{where}.until")
                if c is not None:
                    args["until"] = c
                args["timeout"] = 120.0
                if "timeout" in f:
                    v = r.number(f["timeout"], f"{where}.timeout", 1, 86400)
                    if v is not None:
                        args["timeout"] = v
        else:
            r.err(a.line, where, f"must be seconds or {{until: CONDITION, timeout: N}} "
                  f"(got {describe_kind(a.value)} {describe_value(a.value)})")
    elif action == "fault":
        f = r.mapping(a, where, ("action", "node", "host", "params"))
        if "action" not in f and isinstance(a.value, dict):
            r.err(a.line, where, "missing action")
        if "action" in f:
            args["action"] = r.choice(f["action"], f"{where}.action", FAULT_ACTIONS)
        on_host = args.get("action") in fault_kinds.HOST_ACTIONS
        want, other = ("host", "node") if on_host else ("node", "host")
        if want not in f and isinstance(a.value, dict):
            r.err(a.line, where, f"missing {want}" + (f" ({args['action']} acts on a host of lab.yaml "
                                                       "hosts:)" if on_host else ""))
        if other in f:
            r.err(f[other].line, f"{where}.{other}", f"{args.get('action')} takes {want}:, not {other}:")
        if "node" in f and not on_host:
            args["node"] = r.node(f["node"], f"{where}.node")
        if "host" in f and on_host:
            v = r.string(f["host"], f"{where}.host")
            if v is not None and not re.match(r"^[a-z][a-z0-9-]{0,14}$", v):  # or `last`
                r.err(f["host"].line, f"{where}.host",
                      f"not a host name like rack2 (got {describe_value(v)})")
            elif v is not None:
                args["host"] = v
        params: dict[str, Any] = {}
        if "params" in f:
            allowed = FAULT_PARAMS.get(args.get("action") or "", {})
            pf = r.mapping(f["params"], f"{where}.params", tuple(allowed)) if allowed else {}
            if not allowed and f["params"].value:
                r.err(f["params"].line, f"{where}.params", f"{args.get('action')} takes no params")
            for key, (typ, lo, hi) in allowed.items():
                if key in pf:
                    p = f"{where}.params.{key}"
                    v = (r.number(pf[key], p, lo, hi) if typ == "number" else
                         r.string(pf[key], p) if typ == "string" else r.boolean(pf[key], p))
                    if v is not None:
                        params[key] = v
        if args.get("action") == "netem" and not (params.get("delay_ms") or params.get("loss_pct")):
            r.err(a.line, where, "netem needs params.delay_ms or params.loss_pct")
        args["params"] = params
    elif action == "revive":
        if isinstance(a.value, dict):  # {node: api-2, from: ready | cold}
            f = r.mapping(a, where, ("node", "from"))
            if "node" not in f:
                r.err(a.line, where, "needs node: NODE")
            else:
                v = r.node(f["node"], f"{where}.node")
                if v is not None:
                    args["node"] = v
            if "from" in f:
                src = r.string(f["from"], f"{where}.from")
                if src == "cold":
                    args["warm"] = False
                elif src is not None and not re.match(r"^[a-z0-9][a-z0-9._-]{0,39}$", src):
                    r.err(f["from"].line, f"{where}.from",
                          f"a checkpoint name (e.g. ready) or cold (got {describe_value(src)})")
                elif src is not None:
                    args["warm"], args["checkpoint"] = True, src
        else:
            v = r.node(a, where)
            if v is not None:
                args["node"] = v
    elif action == "reset":
        v = "ready" if a.value is None else r.string(a, where)
        if v is not None and not re.match(r"^[a-z0-9][a-z0-9._-]{0,39}$", v):
            r.err(a.line, where, f"a checkpoint name, e.g. ready (got {describe_value(v)})")
        elif v is not None:
            args["checkpoint"] = v
    elif action == "undo":
        if a.value in ("last", None):
            pass
        else:
            f = r.mapping(a, where, ("node", "action"))
            if "node" in f:
                args["node"] = r.node(f["node"], f"{where}.node")
            if "action" in f:
                args["action"] = r.choice(f["action"], f"{where}.action", FAULT_ACTIONS)
    elif action == "restore":
        if a.value not in ("all", None, True):
            r.err(a.line, where,
                  f"restore takes no argument (write `restore: all`), got {describe_value(a.value)}")
    elif action == "preset":
        v = r.choice(a, where, HAPROXY_PRESETS)
        if v is not None:
            args["preset"] = v
    elif action == "measure":
        v = r.choice(a, where, ("start", "end"))
        if v is not None:
            args["what"] = v
    elif action == "mark":
        v = r.string(a, where)
        if v is not None:
            args["text"] = v
    name = ""
    if "name" in fields:
        name = r.string(fields["name"], f"{path}.name") or ""
    expect: list[Hypothesis] = []
    if "expect" in fields:
        e = fields["expect"]
        items = e.value if isinstance(e.value, list) else None
        if items is None:
            r.err(e.line, f"{path}.expect", f"must be a list of hypotheses (got {describe_kind(e.value)})")
        else:
            for j, item in enumerate(items):
                h = r.hypothesis(item, f"{path}.expect[{j}]", "step", profiles)
                if h is not None:
                    expect.append(h)
    if action == "say" and expect:
        r.err(fields["expect"].line, f"{path}.expect", "a narration step (say/pause/show only) "
              "does nothing to measure; put expect: on a step that acts or waits")
    if len(r.errors) > n_err:
        return None
    return Step(index=i + 1, action=action, line=a.line, args=args, name=name, expect=tuple(expect),
                say=say, pause=pause, show=show)


def _narration(r: _ScenarioReader, fields: dict[str, Located], path: str) -> tuple[str, bool, str]:
    """The story-mode keys of a step: ``say: TEXT``, ``pause: true``, ``show: PANEL``."""
    say, pause, show = "", False, ""
    if "say" in fields:
        v = r.string(fields["say"], f"{path}.say")
        if v is not None:
            v = " ".join(v.split())
            if not v:
                r.err(fields["say"].line, f"{path}.say", "empty narration; leave say: out instead")
            elif len(v) > SAY_MAX:
                r.err(fields["say"].line, f"{path}.say",
                      f"{len(v)} characters; at most {SAY_MAX} fit a projector (split it over steps)")
            else:
                say = v
    if "pause" in fields:
        pause = bool(r.boolean(fields["pause"], f"{path}.pause"))
    if "show" in fields:
        show = r.choice(fields["show"], f"{path}.show", SHOW_PANELS) or ""
    return say, pause, show


def parse_scenario(text: str, fname: str = "scenario.yaml") -> Scenario:
    """Parse and validate scenario text. Raises ConfigError listing every problem (file:line: field:)."""
    root = compose_located(text, fname)
    r = _ScenarioReader(fname)
    if root is None:
        raise ConfigError([f"{fname}:1: (top level): empty scenario; it needs at least `steps:`"])
    top = r.mapping(root, "", TOP_KEYS)
    if r.errors and not isinstance(root.value, dict):
        raise ConfigError(r.errors)
    stem = Path(fname).stem
    name = stem if _NAME_RE.match(stem) else "scenario"
    if "name" in top:
        v = r.string(top["name"], "name")
        if v is not None:
            if _NAME_RE.match(v):
                name = v
            else:
                r.err(top["name"].line, "name",
                      f"{describe_value(v)}: lowercase letters, digits and '-' only")
    description = ""
    if "description" in top:
        description = r.string(top["description"], "description") or ""
    profiles: tuple[str, ...] = ()
    if "profile" in top:
        profiles = r.profiles(top["profile"], "profile")
    preset = None
    if "preset" in top:
        preset = r.choice(top["preset"], "preset", HAPROXY_PRESETS)
    hyps: list[Hypothesis] = []
    if "hypotheses" in top:
        h = top["hypotheses"]
        if not isinstance(h.value, list):
            r.err(h.line, "hypotheses", f"must be a list (got {describe_kind(h.value)})")
        else:
            for j, item in enumerate(h.value):
                hyp = r.hypothesis(item, f"hypotheses[{j}]", "run", profiles)
                if hyp is not None:
                    hyps.append(hyp)
    steps: list[Step] = []
    if "steps" not in top:
        r.err(root.line, "steps", "missing: a scenario needs at least one step")
    elif not isinstance(top["steps"].value, list) or not top["steps"].value:
        r.err(top["steps"].line, "steps",
              f"must be a non-empty list (got {describe_kind(top['steps'].value)})")
    else:
        for i, item in enumerate(top["steps"].value):
            s = _read_step(r, item, i, profiles)
            if s is not None:
                steps.append(s)
    if not r.errors:
        _check_flow(r, steps)
    if r.errors:
        raise ConfigError(sorted(r.errors, key=_line_of))
    return Scenario(name=name, description=description, profiles=profiles, preset=preset,
                    hypotheses=tuple(hyps), steps=tuple(steps), source=fname)


def _line_of(message: str) -> int:
    m = re.match(r"^.*?:(\d+): ", message)
    return int(m.group(1)) if m else 0


def _check_flow(r: LocatedReader, steps: list[Step]) -> None:
    """What can be checked without a lab: undo without a fault, waits on nothing, measures of nothing."""
    active: list[tuple[str, str]] = []
    seen_fault = False
    traffic = False
    for s in steps:
        p = f"steps[{s.index - 1}]"
        a = s.args
        if s.action == "traffic":
            traffic = not a.get("stop")
        elif s.action == "fault":
            seen_fault = True
            if a.get("action") in UNDO:
                active.append((a["action"], a.get("host") or a.get("node", "")))
        elif s.action in ("revive", "undo"):
            match = [f for f in active if (not a.get("node") or f[1] == a["node"])
                     and (not a.get("action") or f[0] == a["action"])]
            if not match:
                what = " ".join(str(a[k]) for k in ("action", "node") if a.get(k)) or "any fault"
                r.err(s.line, f"{p}.{s.action}", f"no earlier fault step to undo ({what})")
            else:
                active.remove(match[-1])
        elif s.action in ("restore", "reset"):
            active.clear()
        elif s.action == "wait" and a.get("until") in ("detected", "recovered") and not seen_fault:
            r.err(s.line, f"{p}.wait.until", f"{a['until']!r} needs an earlier fault step")
        elif s.action == "wait" and str(a.get("until", "")).startswith("steady") and not traffic:
            r.err(s.line, f"{p}.wait.until", "'steady' needs traffic started by an earlier step")
        for h in s.expect:
            if h.kind == "metric" and METRICS[h.metric][2] == "measure" and not seen_fault:
                r.err(h.line, f"{p}.expect", f"{h.text!r}: no fault before this step to measure")


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        if not p.exists() and not p.suffix and (SCENARIO_DIR / f"{p}.yaml").is_file():
            p = SCENARIO_DIR / f"{p}.yaml"  # a built-in by name: `scenario run api-node-loss`
    except (OSError, ValueError):  # a name too long, a NUL byte: read_definition says so
        pass
    return parse_scenario(read_definition(p), str(p))


def builtin_scenarios(directory: Path | None = None) -> list[Path]:
    d = directory or SCENARIO_DIR
    return sorted(d.glob("*.yaml")) if d.is_dir() else []


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


def _fmt(v: float | None, unit: str = "") -> str:
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
    expected = f"{h.op} {_fmt(h.value, unit)}"
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
        reason = (f"{h.metric} {_fmt(value, '%')} ({len(failed)} of {n} failed), expected {expected}")
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
    reason = f"{h.metric} {_fmt(value, 'ms')}, expected {expected}"
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
            return broken(at, f"{h.metric} {_fmt(v, 's' if h.metric.endswith('_s') else '')} for "
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
            val = f" (value {_fmt(h.value)})" if h.value is not None and h.held else ""
            out.append(f"  {mark} [{h.scope}] {h.label}{when}{val}" + (f": {h.reason}" if h.reason else ""))
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  note: {n}" for n in self.notes]
        return out


def with_preset(cfg: LabConfig, preset: str) -> LabConfig:
    """The same lab with HAProxy's health checks set to a preset's values."""
    return replace(cfg, haproxy=HAProxySettings(preset=preset, **HAPROXY_PRESET_VALUES[preset]))


SshRun = Callable[[str, str], tuple[int, str, str]]


def push_haproxy_config(cfg: LabConfig, ssh: SshRun, secrets: Any | None = None) -> list[str]:
    """Render haproxy.cfg for ``cfg`` (its ``haproxy`` settings), install it on every HAProxy node
    after `haproxy -c`, and reload HAProxy (no dropped connections). Returns the nodes done."""
    from halab.lab.haproxy_config import render_haproxy_cfg
    from halab.lab.secrets import load_or_create_secrets

    text = render_haproxy_cfg(cfg, secrets or load_or_create_secrets(cfg))
    blob = base64.b64encode(text.encode()).decode()
    path, tmp = "/etc/haproxy/haproxy.cfg", "/etc/haproxy/haproxy.cfg.halab-new"
    cmd = (f"set -e; echo {shlex.quote(blob)} | base64 -d > {tmp}; chmod 0640 {tmp}; chgrp haproxy {tmp}; "
           f"haproxy -c -q -f {tmp}; mv {tmp} {path}; systemctl reload haproxy")
    done = []
    for node in (n.name for n in cfg.nodes() if n.role == "haproxy"):
        rc, _out, err = ssh(node, cmd)
        if rc != 0:
            raise HalabError(f"preset {cfg.haproxy.preset}: installing haproxy.cfg on {node} failed "
                             f"(rc {rc}): "
                             f"{err.strip()[:300]}")
        done.append(node)
    return done


PresetSwitch = Callable[[LabConfig], None]  # installs cfg.haproxy on the lab


class StepFailed(HalabError):
    """A strict run's ``wait`` step marked ``required`` did not reach its condition."""

    def __init__(self, step: Step, detail: str):
        super().__init__(detail)
        self.step = step


class ScenarioRunner:
    """Runs one scenario against a lab (real or simulated): steps in order, faults undone at the
    end whatever happens, then every hypothesis evaluated over the record.

    ``strict`` (a built-in experiment such as ``measure``): the first step that raises, or a
    ``wait`` with ``required`` that times out (StepFailed), ends the run with that exception after
    the clean-up. ``leave_faults``: the clean-up leaves the faults in place (``measure --no-revive``).
    ``cancel``: once set (the TUI quits, the engine closes), every wait ends, no further step runs and
    the run cleans up as at its end (faults undone, the traffic it started stopped)."""

    def __init__(self, lab: LabHandles, scenario: Scenario, *, switch_preset: PresetSwitch | None = None,
                 progress: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.1, tail_s: float = 1.0,
                 reset_lab: Callable[[str], str] | None = None, strict: bool = False,
                 leave_faults: bool = False, story: Story | None = None,
                 presenter_timeout_s: float = 3600.0, cancel: threading.Event | None = None):
        self.lab = lab
        self.cancel = cancel or threading.Event()
        self.story = story  # story mode: narration, presenter pauses, live hypotheses
        self.presenter_timeout_s = presenter_timeout_s
        self._story_at = 0.0
        self.sc = scenario
        self.switch_preset = switch_preset
        self.reset_lab = reset_lab  # checkpoint name -> what happened (a `reset:` step)
        self.strict, self.leave_faults = strict, leave_faults
        self.say = progress or (lambda _m: None)
        self.clock, self.sleep, self.poll_s, self.tail_s = clock, sleep, poll_s, tail_s
        self.cfg = lab.cfg
        self.faults: list[AppliedFault] = []
        self.measure_ends: list[float] = []
        self.problems: list[str] = []
        self.steps: list[StepResult] = []
        self.step_spans: list[tuple[Step, float, float]] = []
        self.steady_at: float | None = None
        self.notes: list[str] = []

    @property
    def tl(self) -> Timeline:
        return self.lab.timeline

    def _rel(self, at: float) -> float:
        return round(at - self.t0, 3)

    def _fault_event(self, fe: Any) -> None:
        if not any(e.at == fe.at and e.node == fe.node for e in self.tl.events(kind="fault")):
            self.tl.on_fault(fe)

    def _set_preset(self, preset: str) -> None:
        if preset == self.cfg.haproxy.preset and self.cfg.haproxy == with_preset(self.cfg, preset).haproxy:
            return
        if self.switch_preset is None:
            raise UsageError("this run cannot switch the HAProxy preset (no SSH to the HAProxy nodes)")
        new = with_preset(self.cfg, preset)
        self.switch_preset(new)
        self.cfg = new
        self.tl.note(f"HAProxy preset {preset}: haproxy.cfg re-rendered and reloaded", source="preset",
                     preset=preset)

    def run(self) -> ScenarioResult:
        sc, lab = self.sc, self.lab
        sc.check_lab(lab.cfg)
        if not self.tl.keep_requests:
            raise UsageError("a scenario needs a Timeline(keep_requests=True)")
        self.t0 = self.clock()
        original = lab.cfg
        started_traffic = False
        start_preset = self.cfg.haproxy.preset
        self.tl.note(f"scenario {sc.name} started", source="scenario")
        try:
            if lab.probes is not None:
                lab.probes.start()
            if sc.preset:
                self._set_preset(sc.preset)
            start_preset = self.cfg.haproxy.preset
            for i, step in enumerate(sc.steps):
                if self.cancel.is_set():
                    self.problems.append(f"cancelled before step {step.index}; the remaining "
                                         f"{len(sc.steps) - i} step(s) did not run")
                    break
                self.tl.note(f"step {step.index}/{len(sc.steps)}: {step.label}", source=STEP_SOURCE,
                             **step_data(step, len(sc.steps)))
                if self.story is not None:
                    self._presenter(step)
                at = self.clock()
                self.say(f"step {step.index}/{len(sc.steps)}: {step.label}")
                ok, detail = True, ""
                try:
                    ok, detail = self._do(step)
                    if step.action == "traffic" and not step.args.get("stop"):
                        started_traffic = True
                except HalabError as exc:
                    if self.strict:
                        raise
                    ok, detail = False, str(exc)
                    self.problems.append(f"step {step.index} ({sc.source}:{step.line}) {step.label}: {exc}")
                if not ok and self.strict and step.args.get("required"):
                    raise StepFailed(step, detail)
                end = self.clock()
                self.steps.append(StepResult(step.index, step.action, step.label, step.line, self._rel(at),
                                             self._rel(end), ok, detail))
                self.step_spans.append((step, at, end))
                if (ok and self.steady_at is None and not self.faults and step.action == "wait"
                        and str(step.args.get("until", "")).startswith("steady")):
                    self.steady_at = end
                self._tell_hypotheses(force=True)
                if not ok and step.action != "wait":
                    if i + 1 < len(sc.steps):
                        self.problems.append(f"stopped after step {step.index}; the remaining "
                                             f"{len(sc.steps) - i - 1} step(s) did not run")
                    break
                if not ok:
                    self.problems.append(f"step {step.index} ({sc.source}:{step.line}) {step.label}: "
                                         f"{detail}")
            self._wait(lambda: False, self.tail_s)
        finally:
            self._cleanup(original)
            if started_traffic or getattr(lab.traffic, "running", False):
                lab.traffic.stop()
            self.tl.flush()
        end = self.clock()
        result = self._result(start_preset, end)
        if self.story is not None:
            self.story.hypotheses(hypothesis_views(result.hypotheses, final=True))
            self.story.finish(result.passed)
        return result

    # -- story mode --
    def _presenter(self, step: Step) -> None:
        """Before a ``pause: true`` step the story waits for the presenter (the timeline keeps
        ticking, so the graphs stay live while the room listens)."""
        story = self.story
        assert story is not None
        story.begin(step.index)
        if story.released(step.index):
            return
        self.tl.note(f"waiting for the presenter before step {step.index}", source=PAUSE_SOURCE,
                     step=step.index, waiting=True)
        if not self._wait(lambda: story.released(step.index), self.presenter_timeout_s):
            if self.cancel.is_set():
                return
            story.run_on()
            self.notes.append(f"step {step.index}: nobody pressed a key for "
                              f"{self.presenter_timeout_s:g} s; the story ran on")
        self.tl.note(f"step {step.index}: the presenter goes on", source=PAUSE_SOURCE, step=step.index,
                     waiting=False)

    def _tell_hypotheses(self, force: bool = False) -> None:
        """The hypotheses as they stand now, for the story panel (every 2 s at most while waiting)."""
        if self.story is None or (not self.step_spans and not force):
            return
        now = self.clock()
        if not force and now - self._story_at < 2.0:
            return
        self._story_at = now
        measurements = self._measure(now, quiet=True)
        ctx = EvalContext(self.lab.cfg, self.tl.events(), self.tl.requests(), self.faults, measurements,
                          self.t0, now, self.steady_at)
        try:
            results = evaluate_all(self.sc, ctx, self.step_spans)
        except HalabError:
            return  # the final evaluation reports it; a live glance may miss one
        self.story.hypotheses(hypothesis_views(results, final=False))

    def _cleanup(self, original: LabConfig) -> None:
        for f in reversed(self.faults):
            if f.undone_at is None and f.action in UNDO and not self.leave_faults:
                try:
                    fe = self.lab.faults.undo(f.action, f.node, **f.params)
                    self._fault_event(fe)
                    f.undone_at = fe.at
                    self.tl.note(f"scenario cleanup: undid {f.action} {f.node}", source="scenario")
                except HalabError as exc:
                    self.problems.append(f"could not undo {f.action} {f.node}: {exc}; "
                                         "`./lab.py restore` will")
        if self.cfg.haproxy != original.haproxy and self.switch_preset is not None:
            try:
                self.switch_preset(original)
                self.cfg = original
                self.tl.note(f"HAProxy preset back to {original.haproxy.preset}", source="preset")
            except HalabError as exc:
                self.problems.append(f"could not put HAProxy back to preset {original.haproxy.preset}: {exc}")

    # -- steps --
    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        end = self.clock() + timeout
        while self.clock() < end and not self.cancel.is_set():
            self.tl.tick(self.clock())
            if cond():
                return True
            self._tell_hypotheses()
            self.sleep(min(self.poll_s, max(0.0, end - self.clock())) or self.poll_s)
        self.tl.tick(self.clock())
        return cond()

    def _last_fault(self) -> AppliedFault:
        if not self.faults:
            raise UsageError("no fault applied yet")
        return self.faults[-1]

    def _condition(self, cond: str, since: float) -> Callable[[], bool]:
        m = _COND_NODE_RE.match(cond)
        if m:
            node, want = m["node"], "up" if m["state"] == "UP" else "down"
            sources = detection_sources(self.cfg, self.cfg.node(node).role)
            refs = [f.undone_at if want == "up" and f.undone_at else f.at
                    for f in self.faults if f.node == node]
            ref = max(refs) if refs else since
            return lambda: any(state_change_matches(e, sources, node, want)
                               for e in self.tl.events(since=ref))
        m = _COND_STEADY_RE.match(cond)
        if m:
            n = int(m["n"])

            return lambda: steady_state(self.tl, since, n, self.lab.probes, self.clock())
        f = self._last_fault()
        if cond == "detected":
            sources = detection_sources(self.cfg, self.cfg.node(f.probe).role)
            return lambda: any(state_change_matches(e, sources, f.probe, "down")
                               for e in self.tl.events(since=f.at))

        def recovered() -> bool:
            if f.undone_at is None:
                return False
            r = measure_failover(f.cfg, self.tl.events(), self.tl.requests(since=f.undone_at), f.action,
                                 f.probe, fault_at=f.at, target=f.target)
            return r.recovered_at is not None
        return recovered

    def _do(self, step: Step) -> tuple[bool, str]:
        a, lab = step.args, self.lab
        if step.action == "traffic":
            if a.get("stop"):
                lab.traffic.stop()
                return True, "stopped"
            lab.traffic.set_rate(a.get("rate") or self.cfg.traffic.rate)
            if not lab.traffic.running:
                lab.traffic.start()
            return True, f"{lab.traffic.rate:g} ops/s"
        if step.action == "wait":
            if "seconds" in a:
                self._wait(lambda: False, a["seconds"])
                return True, ""
            start = self.clock()
            if self._wait(self._condition(a["until"], start), a["timeout"]):
                return True, f"reached after {self.clock() - start:.1f} s"
            why = not_steady_why(lab.probes) if str(a["until"]).startswith("steady") else ""
            self.tl.note(f"{a['until']!r} not reached within {a['timeout']:g} s{why}", source="scenario")
            return False, f"{a['until']!r} not reached within {a['timeout']:g} s{why}"
        if step.action == "fault":
            target, watch = a.get("host") or a["node"], ""
            if "host" in a:
                if target == "last" and self.cfg.hosts:  # the built-in host-loss: any host names
                    target = self.cfg.hosts[-1].name
                if not self.cfg.hosts:
                    raise UsageError(f"{a['action']} needs a lab over several hosts (lab.yaml hosts:)")
                self.cfg.host(target)
                watch = host_watch_node(self.cfg, target)
            else:
                self.cfg.node(target)
            fe = lab.faults.apply(a["action"], target, **a["params"])
            self._fault_event(fe)
            self.faults.append(AppliedFault(a["action"], target, fe.at, dict(a["params"]), self.cfg,
                                            step.index, watch=watch))
            return True, fe.message
        if step.action in ("revive", "undo"):
            match = [f for f in self.faults if f.undone_at is None and f.action in UNDO
                     and (not a.get("node") or f.node == a["node"])
                     and (not a.get("action") or f.action == a["action"])]
            if not match:
                raise UsageError(f"nothing to undo for {step.label}")
            f = match[-1]
            how = {k: a[k] for k in ("warm", "checkpoint") if k in a and step.action == "revive"}
            fe = lab.faults.undo(f.action, f.node, **f.params, **how)
            self._fault_event(fe)
            f.undone_at = fe.at
            return True, fe.message
        if step.action == "restore":
            events, problems = lab.faults.restore()
            for fe in events:
                self._fault_event(fe)
            now = self.clock()
            for f in self.faults:
                if f.undone_at is None:
                    f.undone_at = next((fe.at for fe in events if fe.node == f.node), now)
            if problems:
                raise HalabError("; ".join(problems))
            return True, f"{len(events)} fault(s) undone"
        if step.action == "reset":
            if self.reset_lab is None:
                raise UsageError("a reset step needs a real lab with checkpoints")
            now = self.clock()
            detail = self.reset_lab(a["checkpoint"])
            for f in self.faults:
                if f.undone_at is None:
                    f.undone_at = now
            self.tl.event("fault", f"reset to checkpoint {a['checkpoint']} ({detail})", source="reset",
                          at=now, action="reset", checkpoint=a["checkpoint"])
            return True, detail
        if step.action == "preset":
            self._set_preset(a["preset"])
            return True, f"preset {a['preset']}"
        if step.action == "measure":
            if a["what"] == "end":
                self.measure_ends.append(self.clock())
            self.tl.note(f"measure {a['what']}", source="measure-marker")
            return True, ""
        if step.action == "say":
            return True, ""  # the step-start note carries the narration
        self.tl.note(a.get("text", ""), source="mark")
        return True, ""

    # -- result --
    def _measure(self, end: float, quiet: bool = False) -> list[tuple[AppliedFault, MeasureResult]]:
        out = []
        events, requests = self.tl.events(), self.tl.requests()
        for i, f in enumerate(self.faults):
            if f.action not in UNDO:
                continue
            limits = [g.at for g in self.faults[i + 1:]] + [t for t in self.measure_ends if t > f.at] + [end]
            try:
                m = measure_failover(f.cfg, events, requests, f.action, f.probe, fault_at=f.at,
                                     until=min(limits), target=f.target)
            except HalabError as exc:
                if not quiet:
                    self.problems.append(f"measuring {f.action} {f.node}: {exc}")
                continue
            out.append((f, m))
        return out

    def _result(self, preset: str, end: float) -> ScenarioResult:
        measurements = self._measure(end)
        ctx = EvalContext(self.lab.cfg, self.tl.events(), self.tl.requests(), self.faults, measurements,
                          self.t0, end, self.steady_at)
        results = evaluate_all(self.sc, ctx, self.step_spans)
        if self.steady_at is not None:
            early = [r for r in self.tl.requests() if self.t0 <= r.scheduled < self.steady_at and not r.ok]
            if early:
                self.notes.append(
                    f"{len(early)} request(s) failed while the lab warmed up, before the steady state at "
                    f"t={self._rel(self.steady_at)} s; run hypotheses count from there")
        traffic = [b.point().shifted(self.t0) for b in self.tl.buckets() if b.second + 1 >= self.t0]
        events = [{"t": self._rel(e.at), "kind": e.kind, "message": e.message, "node": e.node,
                   "source": e.source} for e in self.tl.events(since=self.t0 - 1)]
        mdicts = []
        for f, m in measurements:
            d = m.to_dict()
            d.update(preset=f.cfg.haproxy.preset, step=f.step,
                     **{f"{k}_rel": self._rel(v) if v is not None else None
                        for k, v in (("fault_at", m.fault_at), ("detected_at", m.detected_at),
                                     ("revive_at", m.revive_at), ("recovered_at", m.recovered_at))})
            mdicts.append(d)
        return ScenarioResult(
            scenario=self.sc.name, source=self.sc.source, description=self.sc.description,
            lab=self.lab.cfg.name, profile=self.lab.cfg.profile, preset=preset, started_at=self.t0,
            duration_s=round(end - self.t0, 3),
            steps=self.steps, hypotheses=results, measurements=mdicts, problems=self.problems,
            traffic=traffic, events=events, notes=self.notes)


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


def run_loaded(lab: LabHandles, scenario: Scenario, **kw: Any) -> ScenarioResult:
    return ScenarioRunner(lab, scenario, **kw).run()


def lab_resetter(cfg: LabConfig) -> Callable[[str], str]:
    """What a `reset:` step (and `scenario run --reset`) does on the real lab."""

    def reset(name: str) -> str:
        from halab.lab.checkpoint import reset as reset_lab

        res = reset_lab(cfg, name)
        health = "healthy" if res.healthy else "not healthy yet: " + "; ".join(res.problems[:3])
        return f"{len(res.nodes)} nodes in {res.seconds.get('total', 0):.1f} s, {health}"

    return reset


def detection_ratio(a: ScenarioResult, b: ScenarioResult) -> float | None:
    """b's worst detection time over a's (e.g. kolla over fast): how many times slower b noticed."""
    da = [m["detection_s"] for m in a.measurements if m.get("detection_s") is not None]
    db = [m["detection_s"] for m in b.measurements if m.get("detection_s") is not None]
    if not da or not db or max(da) <= 0:
        return None
    return round(max(db) / max(da), 2) if math.isfinite(max(db) / max(da)) else None
