"""Story mode: say/pause/show steps (parsing, located errors) and the runner telling a story on the
simulated lab (presenter pauses, live hypotheses, the notes a replay reads)."""

from __future__ import annotations

import pytest

from halab.chaos.scenario import load_scenario, parse_scenario
from halab.chaos.story import PAUSE_SOURCE, STEP_SOURCE, Story
from tests.unit.test_scenarios import errors_of, run_sim

STORY = """name: tiny
hypotheses:
  - errors == 0
steps:
  - say: Welcome.
    pause: true
    show: topology
  - traffic: {rate: 10}
    say: Clients start.
    show: graphs
  - wait: 2
  - pause: true
  - mark: done
"""


def test_narration_keys_parse_on_any_step_or_alone():
    sc = parse_scenario(STORY, "tiny.yaml")
    s = sc.steps
    assert [(x.action, x.say, x.pause, x.show) for x in s] == [
        ("say", "Welcome.", True, "topology"), ("traffic", "Clients start.", False, "graphs"),
        ("wait", "", False, ""), ("say", "", True, ""), ("mark", "", False, "")]
    assert s[0].line == 5 and s[0].label == "Welcome." and s[3].label == "presenter pause"


def test_narration_errors_are_located():
    text = ("steps:\n  - say: 5\n  - show: graph\n  - pause: 1\n  - say: hello\n    expect: [errors == 0]\n"
            f"  - say: {'x' * 401}\n  - say: '   '\n")
    assert errors_of(text, "n.yaml") == [
        "n.yaml:2: steps[0].say: must be a string (got integer 5)",
        "n.yaml:3: steps[1].show: must be one of topology, graphs, events, failover, story, servers "
        "(got 'graph'); did you mean 'graphs'?",
        "n.yaml:4: steps[2].pause: must be true or false (got integer 1)",
        "n.yaml:6: steps[3].expect: a narration step (say/pause/show only) does nothing to measure; put "
        "expect: on a step that acts or waits",
        "n.yaml:7: steps[4].say: 401 characters; at most 400 fit a projector (split it over steps)",
        "n.yaml:8: steps[5].say: empty narration; leave say: out instead",
    ]


def test_the_builtin_story_parses():
    sc = load_scenario("story-mq-loss")
    assert sum(s.pause for s in sc.steps) == 3
    assert all(s.say for s in sc.steps if s.action == "say")


def presenter_after(story: Story, sim, seconds: float):
    """The presenter presses space ``seconds`` (virtual) after the story starts waiting."""
    original = sim.sleep
    since: dict[str, float] = {}
    presses: list[int] = []

    def sleep(dt: float) -> None:
        v = story.view()
        if v.waiting:
            since.setdefault("t", sim.now)
            if sim.now - since["t"] >= seconds:
                presses.append(v.current)
                story.next()
                since.clear()
        original(dt)

    sim.sleep = sleep
    return presses


def test_a_story_waits_for_the_presenter_and_tells_the_verdict(monkeypatch):
    sc = parse_scenario(STORY, "tiny.yaml")
    story = Story.for_scenario(sc)
    from tests.unit import test_scenarios as ts

    real = ts.SimLab.__init__

    def init(self, *a, **kw):
        real(self, *a, **kw)
        self._presses = presenter_after(story, self, 3.0)

    monkeypatch.setattr(ts.SimLab, "__init__", init)
    result, sim, tl = run_sim(sc, story=story)
    assert result.passed, result.summary_lines()
    assert sim._presses == [1, 4]
    v = story.view()
    assert v.done and v.passed and not v.waiting
    assert [(h.label, h.status) for h in v.hypotheses] == [("errors == 0", "held")]
    assert v.show == "graphs" and v.narration == "Clients start."
    steps = [e for e in tl.events() if e.source == STEP_SOURCE]
    assert [e.data["step"] for e in steps] == [1, 2, 3, 4, 5]
    assert steps[0].data["say"] == "Welcome." and steps[0].data["pause"] is True
    waits = [e for e in tl.events() if e.source == PAUSE_SOURCE]
    assert [e.data["waiting"] for e in waits] == [True, False, True, False]
    # the step's clock starts when the presenter lets it go: step 1 took no time of its own
    assert result.steps[0].ended_s - result.steps[0].started_s < 0.5


def test_run_on_skips_every_pause_and_a_silent_room_times_out():
    sc = parse_scenario(STORY, "tiny.yaml")
    story = Story.for_scenario(sc, auto=True)
    result, _sim, tl = run_sim(sc, story=story)
    assert result.passed and not [e for e in tl.events() if e.source == PAUSE_SOURCE]
    story = Story.for_scenario(sc)
    result, _sim, _tl = run_sim(sc, story=story, presenter_timeout_s=5)
    assert result.passed
    assert result.notes == ["step 1: nobody pressed a key for 5 s; the story ran on"]


@pytest.mark.parametrize("name", ["story-mq-loss"])
def test_builtin_story_runs_on_the_simulated_lab(name):
    story = Story.for_scenario(load_scenario(name), auto=True)
    result, _sim, _ = run_sim(name, story=story)
    assert result.passed, result.summary_lines()
    labels = [h.label for h in story.view().hypotheses]
    assert "read-only cloud" in labels and all(h.status == "held" for h in story.view().hypotheses)


def test_the_two_apis_story_runs_on_the_simulated_lab():
    sc = load_scenario("story-two-apis")
    assert [s.show for s in sc.steps].count("servers") == 1 and sum(s.pause for s in sc.steps) == 2
    story = Story.for_scenario(sc, auto=True)
    result, _sim, _ = run_sim("story-two-apis", story=story)
    assert result.passed, result.summary_lines()
    assert [h.status for h in story.view().hypotheses] == ["held"]
