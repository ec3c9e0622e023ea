"""Property tests: whatever text arrives, parse_scenario returns a Scenario or raises ConfigError,
and every message names the file and a line (issue 15: 26 tracebacks in 4,141 generated files)."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halab.chaos.scenario import Scenario, parse_scenario
from halab.errors import ConfigError
from tests.support.yaml_fuzz import scenario_texts

LOCATED = re.compile(r"^scenario\.yaml:\d+: ")
SETTINGS = settings(max_examples=int(os.environ.get("HALAB_FUZZ_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(text: str) -> None:
    try:
        sc = parse_scenario(text, "scenario.yaml")
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert LOCATED.match(line), line
            assert "\n" not in line and len(line) < 700, line
        return
    assert isinstance(sc, Scenario) and sc.steps
    for step in sc.steps:
        assert step.line >= 1


@SETTINGS
@given(st.text())
def test_random_text(text):
    check(text)


@SETTINGS
@given(scenario_texts)
def test_hostile_scenario_files(text):
    check(text)
