"""The TUI's view model over one ``LabEngine``: the TUI's keys as commands (each answered by an
``ActionResult`` it can show), the user's own lines for the timeline, and the engine's snapshots
and change feed passed through. It never imports Textual and never prints; the engine owns the lab.

Thread safety: as the engine's. Commands block and are meant for worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from halab.chaos.scenario import load_scenario
from halab.chaos.story import Story
from halab.errors import UsageError
from halab.lab.config import PROFILE_COUNTS, PROFILES, LabConfig, parse_config
from halab.lab.lifecycle import Progress as UpProgress  # one progress shape: `up`'s own
from halab.lab.lifecycle import UpResult, up
from halab.live.engine import LabEngine
from halab.live.view import (
    HOST_KEY_MISMATCH,
    ActionResult,
    Change,
    EventView,
    FailoverView,
    LabSnapshot,
    NodeView,
    TrafficPoint,
    TrafficState,
)

__all__ = ["HOST_KEY_MISMATCH", "ActionResult", "Change", "EventView", "FailoverView", "LabSession",
           "LabSnapshot", "NodeView", "TrafficPoint", "TrafficState", "UpProgress", "config_with_profile",
           "synthetic_points"]


def config_with_profile(cfg: LabConfig, profile: str) -> LabConfig:
    """The same lab definition with another profile's node counts (memory, network, presets kept)."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == cfg.profile:
        return cfg
    d = cfg.to_dict()
    d["profile"] = profile
    for role, count in PROFILE_COUNTS[profile].items():
        d["roles"][role]["count"] = count
    if d.get("image") == "builtin":
        d.pop("image")
    return parse_config(yaml.safe_dump(d), cfg.source)


class LabSession:
    """The lab as the TUI sees it and drives it."""

    def __init__(self, engine: LabEngine):
        self.engine = engine

    @classmethod
    def open(cls, cfg: LabConfig) -> LabSession:
        """The TUI on the real lab: any lab (the no-lab screen builds it); probes start once it exists."""
        return cls(LabEngine.open(cfg, require_up=False, auto_observe=True))

    @property
    def cfg(self) -> LabConfig:
        return self.engine.cfg

    @property
    def scenario_dir(self) -> Path:
        return self.engine.scenario_dir

    # ---- reading -----------------------------------------------------------------------------
    def snapshot(self) -> LabSnapshot:
        return self.engine.snapshot()

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        return self.engine.subscribe(callback)

    def expected_detection_s(self) -> float:
        return self.engine.expected_detection_s()

    def scenarios(self) -> list[Path]:
        d = self.engine.scenario_dir
        return sorted(d.glob("*.yaml")) if d.is_dir() else []

    # ---- lines and figures for the view (the user's actions; a recorded history) --------------
    def record_event(self, text: str, *, kind: str = "info", node: str | None = None,
                     t: float | None = None) -> None:
        self.engine.note(text, kind=kind, node=node, t=t)

    def record_sample(self, point: TrafficPoint) -> None:
        self.engine.record_sample(point)

    def record_probe(self, node: str, *, health: str | None = None, backend: str | None = None,
                     detail: str | None = None, host_key_mismatch: bool | None = None) -> None:
        self.engine.record_probe(node, health=health, backend=backend, detail=detail,
                                 host_key_mismatch=host_key_mismatch)

    def record_failover(self, view: FailoverView) -> None:
        self.engine.record_failover(view)

    # ---- faults ------------------------------------------------------------------------------
    def _act(self, action: str, node: str, **params: object) -> ActionResult:
        ev = self.engine.apply(action, node, **params)
        return ActionResult(action, node, ev.message, ev.at)

    def kill(self, node: str) -> ActionResult:
        return self._act("kill", node)

    def revive(self, node: str, warm: bool | None = None) -> ActionResult:
        """``warm``: True from the `ready` checkpoint, False a cold boot, None lab.yaml's `revive:`."""
        return self._act("revive", node, **({} if warm is None else {"warm": warm}))

    def pause(self, node: str) -> ActionResult:
        return self._act("pause", node)

    def resume(self, node: str) -> ActionResult:
        return self._act("resume", node)

    def reboot(self, node: str) -> ActionResult:
        return self._act("reboot", node)

    def netcut(self, node: str) -> ActionResult:
        return self._act("netcut", node)

    def netrestore(self, node: str) -> ActionResult:
        return self._act("netrestore", node)

    def netem(self, node: str, delay_ms: float = 200.0, loss_pct: float = 0.0) -> ActionResult:
        """Latency (and loss) towards one node; ``delay_ms=0, loss_pct=0`` clears it."""
        if delay_ms == 0 and loss_pct == 0:
            return self._act("netem-clear", node)
        return self._act("netem", node, delay_ms=delay_ms, loss_pct=loss_pct)

    def stop_service(self, node: str, service: str | None = None) -> ActionResult:
        return self._act("stop-service", node, **({"service": service} if service else {}))

    def start_service(self, node: str, service: str | None = None) -> ActionResult:
        return self._act("start-service", node, **({"service": service} if service else {}))

    def restore_all(self) -> ActionResult:
        done, problems = self.engine.restore()
        at = self.engine.clock()
        msg = f"restore all: {len(done)} fault(s) undone" if done else "restore all: nothing to undo"
        self.record_event(msg + (f", {len(problems)} left" if problems else ""), kind="fault", t=at)
        return ActionResult("restore", None, msg, at, tuple(problems))

    def reset(self, name: str = "ready") -> ActionResult:
        """The whole lab back to a checkpoint (`./lab.py reset`); the fault records follow it."""
        t = self.engine.clock()
        res = self.engine.reset(name)
        at = self.engine.clock()
        msg = f"reset to {name!r} in {res.seconds.get('total', at - t):.1f} s"
        self.record_event(msg + ("" if res.healthy else " (not healthy yet)"), kind="fault", t=at)
        return ActionResult("reset", None, msg, at, tuple(res.problems))

    # ---- traffic -----------------------------------------------------------------------------
    def start_traffic(self, rate: float | None = None) -> ActionResult:
        rate = self.engine.start_traffic(rate)
        at = self.engine.clock()
        self.record_event(f"traffic started at {rate:g} ops/s", kind="fault", t=at)
        return ActionResult("traffic-start", None, f"traffic at {rate:g} ops/s", at)

    def stop_traffic(self) -> ActionResult:
        self.engine.stop_traffic()
        at = self.engine.clock()
        self.record_event("traffic stopped", kind="fault", t=at)
        return ActionResult("traffic-stop", None, "traffic stopped", at)

    def set_rate(self, rate: float) -> ActionResult:
        self.engine.set_rate(rate)
        return ActionResult("traffic-rate", None, f"traffic rate {rate:g} ops/s", self.engine.clock())

    # ---- scenarios -----------------------------------------------------------------------------
    def run_scenario(self, path: str | Path, story: bool = True, auto: bool = False) -> ActionResult:
        """Run a scenario on the lab; as a story (the default in the TUI) its narration, pauses and
        live hypotheses are in every snapshot until the next one starts. Quitting cancels it."""
        current = self.engine.story
        if current is not None and not current.view().done:
            raise UsageError(f"the story {current.title!r} is still running")
        sc = load_scenario(path)
        sc.check_lab(self.cfg)
        told = Story.for_scenario(sc, auto=auto) if story else None
        at = self.engine.clock()
        self.record_event(f"scenario {Path(path).stem} started", kind="fault", t=at)
        result = self.engine.run_scenario(sc, story=told, hold_lock=True)
        msg = f"scenario {Path(path).stem}: {'passed' if result.passed else 'FAILED'}"
        self.record_event(msg, kind="fault" if result.passed else "error")
        return ActionResult("scenario", None, msg, at)

    def story_next(self) -> ActionResult:
        """The presenter's key: the story's paused step goes on."""
        went = self.engine.story_next()
        msg = "story: next step" if went else "story: not waiting (it goes on by itself)"
        return ActionResult("story-next", None, msg, self.engine.clock())

    def story_run_on(self) -> ActionResult:
        """The presenter's key: no more pauses in this run."""
        self.engine.story_run_on()
        return ActionResult("story-auto", None, "story: runs on without pauses", self.engine.clock())

    # ---- life cycle ----------------------------------------------------------------------------
    def up(self, profile: str | None = None,
           progress_cb: Callable[[UpProgress], None] | None = None) -> UpResult:
        """Build the lab (the lifecycle's ``up``) with the chosen profile, reporting progress."""
        cfg = config_with_profile(self.cfg, profile or self.cfg.profile)
        result = up(cfg, progress=progress_cb)  # the lifecycle's own Progress, passed on as it is
        if cfg is not self.cfg:
            self.engine.adopt(cfg)
        return result

    def close(self) -> None:
        """Cancel a running scenario and stop what the engine started; the lab keeps running."""
        self.engine.close()


def synthetic_points(start: float, seconds: int, rate: float = 50.0, *, errors_at: Iterable[int] = (),
                     nodes: Iterable[str] = ("api-1", "api-2", "api-3", "api-4")) -> list[TrafficPoint]:
    """Deterministic per-second figures (tests, demos, benchmarks): 70/10/20 % reads/writes/pages,
    with errors in the seconds listed in ``errors_at``."""
    names = list(nodes)
    err = set(errors_at)
    out = []
    for i in range(seconds):
        total = int(rate)
        reads, writes = int(total * 0.7), int(total * 0.1)
        pages = total - reads - writes
        bad = i in err
        wobble = (i * 7) % 5
        out.append(TrafficPoint(
            t=start + i,
            reads_ok=reads - (3 if bad else 0), reads_err=3 if bad else 0,
            writes_ok=writes - (1 if bad else 0), writes_err=1 if bad else 0,
            pages_ok=pages - (2 if bad else 0), pages_err=2 if bad else 0,
            p50_ms=12.0 + wobble / 2, p99_ms=40.0 + wobble + (900 if bad else 0),
            max_ms=60.0 + 5 * wobble + (1500 if bad else 0),
            share={n: 1 / len(names) for n in names} if names else {},
        ))
    return out
