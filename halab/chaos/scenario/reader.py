"""Reading a scenario file into the model, with file:line: field errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from halab import fault_kinds
from halab.chaos.scenario.model import (
    ACTIONS,
    COND_NODE_RE,
    COND_STEADY_RE,
    FAULT_ACTIONS,
    FAULT_PARAMS,
    METRICS,
    NARRATION_KEYS,
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
from halab.errors import ConfigError
from halab.fault_kinds import UNDO
from halab.lab.config import (
    HAPROXY_PRESETS,
    MAX_RATE,
    MIN_RATE,
    PROFILES,
    Located,
    LocatedReader,
    compose_located,
    describe_kind,
    describe_value,
    read_definition,
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")  # \Z: "$" would accept a trailing newline
_NODE_RE = re.compile(r"^(haproxy|api|db|mq)-[1-9][0-9]?\Z")

_METRIC_RE = re.compile(
    r"^(?P<metric>[a-z_0-9]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?[0-9]{1,12}(?:\.[0-9]{1,12})?)\s*"
    r"(?P<unit>%|s|ms)?(?:\s+over\s+(?P<scope>\S+))?$")
_NODE_HYP_RE = re.compile(
    r"^node\s+(?P<node>\S+)\s+(?P<back>back\s+)?(?P<state>UP|DOWN)\s+within\s+"
    r"(?P<within>[0-9]{1,9}(?:\.[0-9]{1,9})?)\s*s$")
_STUCK_RE = re.compile(r"^writes\s+stuck(?:\s+in\s+BUILD)?(?:\s+over\s+(?P<scope>\S+))?$")


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
    m = COND_NODE_RE.match(t)
    if m:
        if not _NODE_RE.match(m["node"]):
            r.err(loc.line, path, f"not a node name like api-2 (got {describe_value(m['node'])})")
            return None
        return t
    if t in ("detected", "recovered") or COND_STEADY_RE.match(t):
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
