"""A recorded scenario run, played back as if it were live: no lab, no libvirt.

``scenario run --report DIR`` writes ``DIR/NAME.timeline.jsonl`` (events, per-second traffic,
requests) and ``DIR/NAME.json`` (steps, hypotheses, measurements). A ``ReplaySession`` reads both
and answers ``snapshot()`` like a ``LabSession`` does, for a moment of the recording that moves at
1x, 4x (any speed) or step by step, so the TUI (and browser viewers) show the same screens and
the same story the live run showed. Node states are rebuilt from the recorded faults and probe
state changes. Every action is refused: a recording cannot be changed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halab.chaos.story import PAUSE_SOURCE, STEP_SOURCE, HypothesisView, StepView, StoryView
from halab.errors import ConfigError, UsageError
from halab.lab.config import LabConfig, parse_config
from halab.live.session import (
    ActionResult,
    Change,
    EventView,
    FailoverView,
    LabSnapshot,
    NodeView,
    TrafficPoint,
    TrafficState,
)

MAX_BYTES = 256 << 20
ROW_TYPES = ("event", "traffic", "request")


class ReplayReadOnly(UsageError):
    """Someone asked a recording to do something."""


@dataclass(frozen=True)
class Recording:
    """What a run left behind, times as recorded (wall-clock seconds)."""

    source: str
    events: tuple[dict[str, Any], ...]
    traffic: tuple[dict[str, Any], ...]
    report: dict[str, Any] | None
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start


def read_recording(path: str | Path) -> Recording:
    """Read a ``NAME.timeline.jsonl`` (and ``NAME.json`` beside it, if there). Anything that is not
    a timeline is refused with ``file:line``, never a traceback."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.timeline.jsonl"))
        if len(found) != 1:
            raise ConfigError([f"{p}: give one NAME.timeline.jsonl ({len(found)} in this directory)"])
        p = found[0]
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError([f"{p}: {p.stat().st_size} bytes; a recording is at most "
                               f"{MAX_BYTES >> 20} MiB"])
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{p}:{line}: not UTF-8 text: not a timeline"]) from None
    if p.suffix == ".json" and text.lstrip().startswith("{"):
        raise ConfigError([f"{p}:1: a scenario report, not its timeline: give "
                           f"{p.name.removesuffix('.json')}.timeline.jsonl beside it"])
    events: list[dict[str, Any]] = []
    traffic: list[dict[str, Any]] = []
    lines = text.split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            last = n == len(lines) or all(not x.strip() for x in lines[n:])
            why = "truncated (the run was cut off while writing?)" if last and not text.endswith("\n") \
                else "not JSON"
            raise ConfigError([f"{p}:{n}: {why}: not a timeline row"]) from None
        typ = row.get("type") if isinstance(row, dict) else None
        if typ not in ROW_TYPES:
            raise ConfigError([f"{p}:{n}: not a timeline row (a JSON object with type event, traffic or "
                               f"request; got {type(row).__name__}{' ' + repr(typ) if typ else ''})"])
        try:
            if typ == "event":
                events.append({"at": float(row["at"]), "kind": str(row["kind"]),
                               "message": str(row["message"]), "node": row.get("node"),
                               "source": row.get("source"),
                               "data": dict(row.get("data") or {})})
            elif typ == "traffic":
                traffic.append(_point(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError([f"{p}:{n}: a {typ} row without a usable {exc}: not a timeline row"]) from None
    if not events and not traffic:
        raise ConfigError([f"{p}:1: empty: no events and no traffic to replay"])
    report = _report_beside(p)
    times = [e["at"] for e in events] + [t["t"] for t in traffic] + [t["t"] + 1 for t in traffic]
    start = min(times)
    if report is not None:
        start = min(start, float(report.get("started_at", start)))
    end = max(times)
    if report is not None:
        end = max(end, float(report.get("started_at", start)) + float(report.get("duration_s", 0)))
    events.sort(key=lambda e: e["at"])
    traffic.sort(key=lambda t: t["t"])
    return Recording(str(p), tuple(events), tuple(traffic), report, start, end)


def _point(row: dict[str, Any]) -> dict[str, Any]:
    def ks(k: str, f: str) -> int:
        return int((row.get(k) or {}).get(f, 0))

    return {"t": float(row["second"]), "reads_ok": ks("read", "ok"), "reads_err": ks("read", "errors"),
            "writes_ok": ks("write", "ok"), "writes_err": ks("write", "errors"), "pages_ok": ks("page", "ok"),
            "pages_err": ks("page", "errors"), "p50_ms": row.get("p50_ms"), "p99_ms": row.get("p99_ms"),
            "max_ms": row.get("max_ms"), "share": dict(row.get("share") or {})}


def _report_beside(p: Path) -> dict[str, Any] | None:
    name = p.name.removesuffix(".timeline.jsonl")
    rp = p.with_name(name + ".json")
    if name == p.name or not rp.is_file():
        return None
    try:
        d = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{rp}:1: the report beside the timeline is not JSON ({exc})"]) from None
    if not isinstance(d, dict) or "steps" not in d or "hypotheses" not in d:
        raise ConfigError([f"{rp}:1: not a scenario report (no steps and hypotheses)"])
    return d


# ---- node states from the record ------------------------------------------------------------------

_STATE_OF_FAULT = {"kill": "shut off", "pause": "paused", "resume": "running", "revive": "running",
                   "reboot": "running"}
_LASTING = ("netcut", "netem", "stop-service")
_UNDO_OF = {"netrestore": "netcut", "netem-clear": "netem", "start-service": "stop-service"}


def _apply(ev: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> None:
    node = ev.get("node")
    data = ev.get("data") or {}
    if ev["kind"] == "fault":
        action = str(data.get("action") or ev.get("source") or "")
        if action == "reset":
            for n in nodes.values():
                n.update(state="running", faults=[])
            return
        if node not in nodes:
            return
        n = nodes[node]
        if action in _STATE_OF_FAULT:
            n["state"] = _STATE_OF_FAULT[action]
            n["faults"] = [f for f in n["faults"] if f not in ("kill", "pause")]
            if action in ("kill", "pause"):
                n["faults"].append(action)
        elif action in _LASTING and action not in n["faults"]:
            n["faults"].append(action)
        elif action in _UNDO_OF:
            n["faults"] = [f for f in n["faults"] if f != _UNDO_OF[action]]
        return
    if ev["kind"] != "probe" or node not in nodes:
        return
    key, new = str(data.get("key", "")), data.get("new")
    if new is None:
        return
    n = nodes[node]
    if key.startswith("haproxy:") and "/" in key:
        n["backend"] = str(new)
    elif key.startswith("libvirt:"):
        n["state"] = str(new)
    elif key.startswith("health:"):
        n["health"] = str(new)


def lab_of(rec: Recording) -> LabConfig:
    r = rec.report or {}
    names = {e["node"] for e in rec.events if e.get("node")}
    profile = r.get("profile") or ("ha" if names & {"db-2", "mq-2", "haproxy-2"} else "default")
    lab = r.get("lab") or "replay"
    return parse_config(f"name: {lab}\nprofile: {profile}\nlibvirt_uri: 'test:///default'\n",
                        f"<replay of {rec.source}>", host_mem_mib=1 << 20)


# ---- the session ----------------------------------------------------------------------------------


class ReplaySession:
    """Plays a ``Recording`` back. ``speed`` is recorded seconds per wall second; ``step`` stops at
    every step start until ``story_next`` (space). ``story_run_on`` (a) plays on."""

    read_only = True

    def __init__(self, rec: Recording, *, speed: float = 1.0, step: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        if not 0.1 <= speed <= 1000:
            raise UsageError(f"--speed must be between 0.1 and 1000 (got {speed:g})")
        self.rec = rec
        self.cfg = lab_of(rec)
        self.speed = speed
        self.step_mode = step
        self.clock = clock
        self._lock = threading.Lock()
        self._pos = rec.start  # recorded time at _wall
        self._wall = clock()
        self._playing = True
        self._subs: list[Callable[[Change], None]] = []
        # (at, step index) of every step start; several can share a moment (a say: step takes none)
        self._steps = [(e["at"], int(e["data"].get("step", 0))) for e in rec.events
                       if e.get("source") == STEP_SOURCE]
        self._k = 0 if step and self._steps else None  # step mode: the step the replay stops at
        self._stop_at = self._steps[0][0] if self._k is not None else None

    # -- the clock of the recording --
    def position(self) -> float:
        """The recorded moment on screen now."""
        with self._lock:
            if not self._playing:
                return self._pos
            t = self._pos + (self.clock() - self._wall) * self.speed
            if self._stop_at is not None and t >= self._stop_at:
                self._pos, self._wall, self._playing = self._stop_at, self.clock(), False
                return self._pos
            if t >= self.rec.end:
                self._pos, self._wall, self._playing = self.rec.end, self.clock(), False
                return self.rec.end
            return t

    def story_next(self) -> ActionResult:
        """Space: on to the next step of the story (from a stop, or while playing)."""
        t = self.position()
        with self._lock:
            if self._k is not None:
                self._k += 1
                k = self._k
            else:
                cur = max((i for i, (at, _n) in enumerate(self._steps) if at <= t + 1e-6), default=-1)
                k = cur + 1
            nxt = self._steps[k][0] if k < len(self._steps) else None
            self._wall = self.clock()
            if self.step_mode and nxt is not None:  # play on to the next step's start, stop there
                self._pos, self._stop_at, self._playing = t, nxt, True
            else:  # playing: jump to the next step
                self._pos = max(t, nxt) if nxt is not None else self.rec.end
                self._k, self._stop_at, self._playing = None, None, nxt is not None
        self._notify()
        return ActionResult("replay-next", None, "replay: next step" if nxt else "replay: the end",
                            self.clock())

    def story_run_on(self) -> ActionResult:
        """`a`: play on to the end, no more stops."""
        t = self.position()
        with self._lock:
            self.step_mode = False
            self._stop_at, self._k = None, None
            self._pos, self._wall, self._playing = t, self.clock(), True
        self._notify()
        return ActionResult("replay-play", None, f"replay: playing at {self.speed:g}x", self.clock())

    # -- the LabSession surface the TUI uses --
    def subscribe(self, cb: Callable[[Change], None]) -> Callable[[], None]:
        self._subs.append(cb)
        return lambda: self._subs.remove(cb) if cb in self._subs else None

    def _notify(self) -> None:
        for cb in list(self._subs):
            cb(Change("replay", self.clock()))

    def scenarios(self) -> list[Path]:
        return []

    def record_event(self, text: str, **_kw: Any) -> None:
        """A recording is not written to."""

    def close(self) -> None:
        """Nothing runs: a replay has no lab, probes or traffic."""

    def expected_detection_s(self) -> float:
        return self.cfg.haproxy.expected_detection_s()

    def __getattr__(self, name: str) -> Callable[..., ActionResult]:
        if name.startswith("_"):
            raise AttributeError(name)

        def refuse(*_a: Any, **_kw: Any) -> ActionResult:
            raise ReplayReadOnly(f"{name.replace('_', ' ')}: this is a replay of "
                                 f"{Path(self.rec.source).name}; it cannot change anything")

        return refuse

    def snapshot(self) -> LabSnapshot:
        t = self.position()
        rec = self.rec
        nodes = {n.name: {"state": "running", "health": "ok", "backend": "UP" if n.role == "api" else "—",
                          "faults": []} for n in self.cfg.nodes()}
        shown: list[EventView] = []
        for i, ev in enumerate(rec.events):
            if ev["at"] > t:
                break
            _apply(ev, nodes)
            kind = ev["kind"]
            if kind in ("note", "measure"):
                kind = {"action": "fault", "error": "error"}.get(str(ev.get("source")), "info")
            shown.append(EventView(i + 1, ev["at"], kind, ev["message"], ev.get("node")))
        series = tuple(TrafficPoint(**p) for p in rec.traffic if p["t"] + 1 <= t)
        share = series[-1].share if series else {}
        views = tuple(NodeView(name=n.name, role=n.role, ip=n.ip, state=nodes[n.name]["state"],
                               health=nodes[n.name]["health"], backend=nodes[n.name]["backend"],
                               share=share.get(n.name) if n.role == "api" and series else None,
                               faults=tuple(nodes[n.name]["faults"])) for n in self.cfg.nodes())
        with self._lock:
            playing = self._playing
        state = "playing" if playing else ("at the end" if t >= rec.end else "stopped (space: next step)")
        where = (f"replay of {Path(rec.source).name}: {t - rec.start:.0f} of {rec.duration_s:.0f} s, "
                 f"{self.speed:g}x, {state}")
        return LabSnapshot(
            lab=self.cfg.name, profile=self.cfg.profile, vip=self.cfg.vip, libvirt_uri="(replay)",
            taken_at=t, exists=True, nodes=views, series=series[-180:], events=tuple(shown[-200:]),
            failover=self._failover(t), traffic=TrafficState(False, 0.0, available=False),
            problems=(where,), expected_detection_s=self.expected_detection_s(),
            story=self._story(t, self._cap(t)),
        )

    def _cap(self, t: float) -> int | None:
        """Stopped in step mode: the story shows the step it stopped at, not later ones that
        started at the same moment."""
        with self._lock:
            k, stop = self._k, self._stop_at
        if k is None or stop is None or k >= len(self._steps) or t < stop - 1e-6:
            return None
        return self._steps[k][1]

    def _failover(self, t: float) -> FailoverView | None:
        r = self.rec.report
        if not r:
            return None
        t0 = float(r.get("started_at", self.rec.start))
        ms = [m for m in r.get("measurements", []) if m.get("fault_at") is not None and m["fault_at"] <= t]
        if not ms:
            return None
        m = ms[-1]

        def seen(key: str) -> Any:
            at = m.get(f"{key.removesuffix('_s')}_at".replace("detection", "detected")
                       .replace("recovery", "recovered"))
            return m.get(key) if at is not None and at <= t else None

        done = m.get("recovered_at") is not None and m["recovered_at"] <= t
        return FailoverView(
            fault=str(m.get("fault", "?")), node=str(m.get("node", "?")), started=float(m["fault_at"]),
            detection_s=seen("detection_s"), expected_detection_s=m.get("expected_detection_s"),
            failed_reads=int(m.get("failed_reads", 0)) if done else 0,
            failed_writes=int(m.get("failed_writes", 0)) if done else 0,
            failed_pages=int(m.get("failed_pages", 0)) if done else 0,
            error_window_s=float(m.get("error_window_s") or 0.0) if done else 0.0,
            max_latency_ms=m.get("max_latency_ms") if done else None,
            recovery_s=seen("recovery_s"), complete=done and t0 <= t)

    def _story(self, t: float, cap: int | None = None) -> StoryView | None:
        notes = [e for e in self.rec.events if e.get("source") == STEP_SOURCE]
        r = self.rec.report
        if not notes and not r:
            return None
        by_index: dict[int, dict[str, Any]] = {}
        for e in notes:
            by_index.setdefault(int(e["data"].get("step", 0)), e["data"])
        if r:
            def view(s: dict[str, Any]) -> StepView:
                d = by_index.get(int(s["index"]), {})
                return StepView(int(s["index"]), str(s["label"]), str(d.get("say", "")),
                                bool(d.get("pause", False)), str(d.get("show", "")))

            steps = tuple(view(s) for s in r["steps"])
            title, description = str(r.get("scenario", "")), str(r.get("description", ""))
            t0 = float(r.get("started_at", self.rec.start))
        else:
            steps = tuple(StepView(i, str(d.get("label", "")), str(d.get("say", "")), bool(d.get("pause")),
                                   str(d.get("show", ""))) for i, d in sorted(by_index.items()))
            title, description, t0 = Path(self.rec.source).name.split(".")[0], "", self.rec.start
        started = [e for e in notes if e["at"] <= t and (cap is None or int(e["data"]["step"]) <= cap)]
        current = int(started[-1]["data"]["step"]) if started else 0
        if r and not notes:  # an older report without step notes: its steps' recorded starts
            current = max((int(s["index"]) for s in r["steps"] if t0 + float(s["started_s"]) <= t), default=0)
        pauses = [e for e in self.rec.events if e.get("source") == PAUSE_SOURCE and e["at"] <= t]
        waiting = bool(pauses and pauses[-1]["data"].get("waiting"))
        show = next((s.show for s in reversed(steps[:current]) if s.show), "")
        done = t >= self.rec.end
        passed = (not r.get("problems") and all(h["held"] for h in r["hypotheses"])) if r and done else None
        rel = t - t0
        hyps = []
        for h in (r or {}).get("hypotheses", []):
            scope = str(h.get("scope", "run"))
            label = h.get("name") or h["hypothesis"]
            words = scope.split()
            step_no = int(words[1]) if len(words) > 1 and words[0] == "step" and words[1].isdigit() else None
            if not h["held"] and h.get("broken_at_s") is not None and rel >= float(h["broken_at_s"]):
                status = "broken"
            elif step_no is not None and current < step_no:
                status = "pending"
            elif done or (step_no is not None and current > step_no):
                status = "held" if h["held"] else "broken"
            else:
                status = "holding"
            hyps.append(HypothesisView(label, scope, status, h.get("value") if status == "broken" else None,
                                       h.get("broken_at_s") if status == "broken" else None,
                                       str(h.get("reason", "")) if status == "broken" else ""))
        return StoryView(title, description, steps, current, waiting, False, done, passed, tuple(hyps), show)
