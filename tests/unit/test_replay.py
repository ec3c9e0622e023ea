"""Replay: a recorded run read back (bad files refused at file:line) and played as snapshots."""

from __future__ import annotations

import json

import pytest

from halab.errors import ConfigError
from halab.live.replay import ReplayReadOnly, ReplaySession, read_recording
from tests.support.recorded import record_run


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return record_run(tmp_path_factory.mktemp("rec"))


def test_replay_tells_the_recorded_story(recording):
    rec = read_recording(recording)
    assert rec.report is not None and rec.duration_s > 30
    clock = Clock()
    s = ReplaySession(rec, speed=4.0, clock=clock)
    first = s.snapshot()
    assert first.lab == "lab1" and {n.state for n in first.nodes} == {"running"}
    assert first.story is not None and first.story.title == "story-mq-loss"
    kill = next(e["at"] for e in rec.events if e["kind"] == "fault" and e["data"].get("action") == "kill")
    clock.t = (kill - rec.start) / 4.0 + 0.5  # 4x: a quarter of the recorded time
    mid = s.snapshot()
    assert mid.node("mq-1").state == "shut off" and "kill" in mid.node("mq-1").faults
    assert mid.story.current >= 5 and not mid.story.done
    assert any(h.status in ("holding", "pending") for h in mid.story.hypotheses)
    clock.t = 10_000
    end = s.snapshot()
    assert end.story.done and end.story.passed
    assert end.node("mq-1").state == "running" and not end.node("mq-1").faults
    assert all(h.status == "held" for h in end.story.hypotheses)
    assert end.failover is not None and end.failover.node == "mq-1"
    assert "replay of story-mq-loss.timeline.jsonl" in end.problems[0]


def test_step_by_step_stops_at_each_step_until_space(recording):
    clock = Clock()
    s = ReplaySession(read_recording(recording), speed=1.0, step=True, clock=clock)
    clock.t = 5000
    assert s.snapshot().story.current == 1  # stopped at the first step's start
    s.story_next()
    clock.t = 10_000
    assert s.snapshot().story.current == 2
    s.story_run_on()
    clock.t = 20_000
    assert s.snapshot().story.done


def test_a_replay_refuses_every_action(recording):
    s = ReplaySession(read_recording(recording))
    for call in (lambda: s.kill("api-2"), lambda: s.start_traffic(), lambda: s.run_scenario("x")):
        with pytest.raises(ReplayReadOnly, match=r"this is a replay of story-mq-loss\.timeline\.jsonl"):
            call()


def test_bad_recordings_are_located(tmp_path, recording):
    lines = recording.read_text().splitlines()
    cut = tmp_path / "cut.timeline.jsonl"
    cut.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])
    with pytest.raises(ConfigError) as e:
        read_recording(cut)
    assert e.value.errors == [f"{cut}:6: truncated (the run was cut off while writing?): not a timeline row"]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"name": "lab"}) + "\n")
    with pytest.raises(ConfigError, match=r"other\.jsonl:1: not a timeline row"):
        read_recording(other)
    yaml_file = tmp_path / "lab.yaml"
    yaml_file.write_text("name: demo\n")
    with pytest.raises(ConfigError, match=r"lab\.yaml:1: not JSON: not a timeline row"):
        read_recording(yaml_file)
    empty = tmp_path / "empty.timeline.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty: no events and no traffic"):
        read_recording(empty)
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        read_recording(tmp_path / "missing.timeline.jsonl")
    bad_report = tmp_path / "x.timeline.jsonl"
    bad_report.write_text(recording.read_text())
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"x\.json:1: not a scenario report"):
        read_recording(bad_report)
