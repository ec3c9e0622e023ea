"""Story mode: a scenario run told to a room, step by step.

The runner tells a ``Story`` where it is (``begin``/``end``), asks it before a ``pause: true`` step
whether the presenter has let it go on (``released``), and hands it the hypotheses as they stand
(``hypotheses``). Front ends read one immutable ``StoryView`` from the lab's snapshot; the
presenter's keys call ``next`` and ``run_on``. Nothing here blocks or prints: the runner's own
wait loop polls ``released`` so the timeline keeps ticking while the room waits.

A recorded run rebuilds the same view from its timeline's step notes (``story_from_events``), so a
replay tells the story the live run told.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

STEP_SOURCE = "step"  # timeline notes the runner writes at each step start carry this source
PAUSE_SOURCE = "story"  # ... and these when the story waits for the presenter / goes on


@dataclass(frozen=True)
class HypothesisView:
    """A claim and where it stands: pending (its step has not run), holding (so far), held, broken."""

    label: str
    scope: str
    status: str  # "pending" | "holding" | "held" | "broken"
    value: float | None = None
    at_s: float | None = None  # broken at, seconds from the start of the run
    reason: str = ""


@dataclass(frozen=True)
class StepView:
    index: int
    label: str
    say: str = ""
    pause: bool = False
    show: str = ""


@dataclass(frozen=True)
class StoryView:
    """What the story panel shows."""

    title: str
    description: str
    steps: tuple[StepView, ...]
    current: int = 0  # 1-based index of the step running (0: not started)
    waiting: bool = False  # the story waits for the presenter before ``current``
    auto: bool = False  # run on without pauses
    done: bool = False
    passed: bool | None = None
    hypotheses: tuple[HypothesisView, ...] = ()
    show: str = ""  # the panel the current (or last) step put on stage

    @property
    def step(self) -> StepView | None:
        return self.steps[self.current - 1] if 0 < self.current <= len(self.steps) else None

    @property
    def next_step(self) -> StepView | None:
        return self.steps[self.current] if self.current < len(self.steps) else None

    @property
    def narration(self) -> str:
        """The newest narration said so far: a step without ``say:`` leaves the last one up."""
        for s in reversed(self.steps[: max(0, self.current)]):
            if s.say:
                return s.say
        return self.description

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoryView:
        d = dict(d)
        d["steps"] = tuple(StepView(**s) for s in d.get("steps", ()))
        d["hypotheses"] = tuple(HypothesisView(**h) for h in d.get("hypotheses", ()))
        return cls(**d)


@dataclass
class Story:
    """The live side of a story run (one per run). Thread-safe: the runner's thread writes, the
    presenter's keys and the snapshot readers come from others."""

    title: str
    description: str
    steps: tuple[StepView, ...]
    auto: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _current: int = 0
    _waiting: bool = False
    _released: set[int] = field(default_factory=set)
    _done: bool = False
    _passed: bool | None = None
    _hyps: tuple[HypothesisView, ...] = ()
    _show: str = ""

    @classmethod
    def for_scenario(cls, scenario: Any, auto: bool = False) -> Story:
        steps = tuple(StepView(s.index, s.label, s.say, s.pause, s.show) for s in scenario.steps)
        pending = tuple(HypothesisView(h.label, "run", "pending") for h in scenario.hypotheses)
        story = cls(scenario.name, scenario.description, steps, auto=auto)
        story._hyps = pending
        return story

    # -- the runner's side --
    def begin(self, index: int) -> None:
        with self._lock:
            self._current = index
            step = self.steps[index - 1]
            self._waiting = step.pause and not self.auto and index not in self._released
            if step.show:
                self._show = step.show

    def released(self, index: int) -> bool:
        """May step ``index`` go on? (Always, unless it pauses and the presenter has not said so.)"""
        with self._lock:
            ok = self.auto or not self.steps[index - 1].pause or index in self._released
            if ok and self._current == index:
                self._waiting = False
            return ok

    def hypotheses(self, views: Iterable[HypothesisView]) -> None:
        with self._lock:
            self._hyps = tuple(views)

    def finish(self, passed: bool) -> None:
        with self._lock:
            self._done, self._passed, self._waiting = True, passed, False

    # -- the presenter's side --
    def next(self) -> bool:
        """Let the waiting step go on; False when nothing waits."""
        with self._lock:
            if not self._waiting:
                return False
            self._released.add(self._current)
            self._waiting = False
            return True

    def run_on(self) -> None:
        """No more pauses for this run."""
        with self._lock:
            self.auto = True
            self._waiting = False

    def view(self) -> StoryView:
        with self._lock:
            return StoryView(self.title, self.description, self.steps, self._current, self._waiting,
                             self.auto, self._done, self._passed, self._hyps, self._show)


def hypothesis_views(results: Sequence[Any], *, final: bool) -> tuple[HypothesisView, ...]:
    """``scenarios.HypothesisResult`` rows as the story shows them: while the run goes on a run-wide
    claim that holds is "holding", and a step's claim whose step has not run is "pending"."""
    out = []
    for r in results:
        if not final and r.reason == "its step never ran":
            status = "pending"
        elif not r.held:
            status = "broken"
        else:
            status = "held" if final or r.scope != "run" else "holding"
        out.append(HypothesisView(r.label, r.scope, status, r.value, r.broken_at_s,
                                  r.reason if status == "broken" else ""))
    return tuple(out)


def step_data(step: Any, total: int) -> dict[str, Any]:
    """What a step-start note carries, so a recorded run can tell the story again."""
    return {"step": step.index, "total": total, "label": step.label, "say": step.say,
            "pause": step.pause, "show": step.show}
