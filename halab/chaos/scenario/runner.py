"""Running a scenario against a lab: steps in order, faults undone at the end, then the verdicts."""

from __future__ import annotations

import base64
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from halab.chaos.measure import (
    LabHandles,
    MeasureResult,
    detection_sources,
    measure_failover,
    not_steady_why,
    state_change_matches,
    steady_state,
)
from halab.chaos.scenario.hypotheses import (
    AppliedFault,
    EvalContext,
    evaluate_all,
    host_watch_node,
)
from halab.chaos.scenario.model import (
    COND_NODE_RE,
    COND_STEADY_RE,
    Scenario,
    Step,
)
from halab.chaos.scenario.result import ScenarioResult, StepResult
from halab.chaos.story import PAUSE_SOURCE, STEP_SOURCE, Story, hypothesis_views, step_data
from halab.errors import HalabError, UsageError
from halab.fault_kinds import UNDO
from halab.lab.config import (
    HAPROXY_PRESET_VALUES,
    HAProxySettings,
    LabConfig,
)
from halab.observe.timeline import Timeline


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
        m = COND_NODE_RE.match(cond)
        if m:
            node, want = m["node"], "up" if m["state"] == "UP" else "down"
            sources = detection_sources(self.cfg, self.cfg.node(node).role)
            refs = [f.undone_at if want == "up" and f.undone_at else f.at
                    for f in self.faults if f.node == node]
            ref = max(refs) if refs else since
            return lambda: any(state_change_matches(e, sources, node, want)
                               for e in self.tl.events(since=ref))
        m = COND_STEADY_RE.match(cond)
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
