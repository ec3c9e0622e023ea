"""A recorded scenario run without VMs: the built-in mq story on the simulated lab of
tests/unit/test_scenarios.py, written as `scenario run --report DIR` writes it (NAME.json beside
NAME.timeline.jsonl). Replay tests and the browser test play it back."""

from __future__ import annotations

from pathlib import Path

from halab.chaos.scenario import load_scenario
from halab.chaos.story import Story
from halab.report.writer import write_report


def record_run(directory: Path, name: str = "story-mq-loss") -> Path:
    """Run ``name`` on the simulated lab and write its report and timeline; returns the timeline."""
    from tests.unit.test_scenarios import run_sim

    story = Story.for_scenario(load_scenario(name), auto=True)
    result, _sim, tl = run_sim(name, story=story)
    write_report(result, directory)
    path = Path(directory) / f"{result.scenario}.timeline.jsonl"
    tl.write_jsonl(path)
    return path
