"""Reports from a scenario run on the simulated lab: JSON round-trip, Markdown tables, a
self-contained HTML page with an inline SVG chart, and the preset comparison."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from halab.chaos.scenario import ScenarioResult
from halab.report.writer import (
    comparison,
    read_json,
    render_compare_markdown,
    render_html,
    render_markdown,
    render_svg,
    write_compare,
    write_report,
)
from tests.unit.test_scenarios import FIX, KOLLA_DETECT, run_sim


@pytest.fixture(scope="module")
def passed() -> ScenarioResult:
    return run_sim("api-node-loss")[0]


@pytest.fixture(scope="module")
def broken() -> ScenarioResult:
    return run_sim(FIX / "broken-on-purpose.yaml")[0]


def test_json_round_trips(passed, broken, tmp_path):
    for result in (passed, broken):
        paths = write_report(result, tmp_path)
        back = read_json(paths["json"])
        assert back.to_dict() == json.loads(json.dumps(result.to_dict(), default=str))
        assert back.passed == result.passed
        assert json.loads(paths["json"].read_text())["passed"] is result.passed


def test_markdown_tables(passed, broken):
    md = render_markdown(passed)
    assert md.startswith("# Scenario api-node-loss: PASSED")
    assert ("| fault | preset | detection | expected | failed r/w/p | error window | max latency | "
            "recovery |") in md
    assert re.search(r"\| kill api-2 \(t=[\d.]+ s\) \| fast \| 1\.25 s \| 2\.25 s \| 0/\d+/0 \|", md)
    assert "| failed_reads == 0 | run | held |" in md
    mdb = render_markdown(broken)
    assert mdb.startswith("# Scenario broken-on-purpose: FAILED")
    assert re.search(r"\| no write ever fails \(failed_writes == 0\) \| run \| BROKEN \| \d+ \| "
                     r"[\d.]+ s \|", mdb)


def test_html_is_self_contained_with_an_svg_chart(passed, broken):
    page = render_html(broken)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    assert not re.search(r"<script|<link|https?://(?!www\.w3\.org/2000/svg)", page)
    svg = render_svg(broken)
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    classes = [el.get("class") for el in root.iter() if el.get("class")]
    assert "ok-reads" in classes and "latency" in classes and "errors" in classes
    assert "mark-fault" in classes and "mark-detected" in classes and "mark-recovered" in classes
    assert "broken" in classes  # the broken hypothesis is marked on the chart
    assert root.tag == f"{ns}svg"
    assert "Measured vs expected" in page and "no write ever fails" in page
    assert "PASSED" in render_html(passed)


def test_compare_reports_the_detection_ratio(tmp_path):
    fast = run_sim("api-node-loss")[0]
    from halab.chaos.scenario import load_scenario
    from halab.lab.config import parse_config

    kolla_cfg = parse_config("name: lab1\nhaproxy: {preset: kolla}\n", "lab.yaml", host_mem_mib=1 << 20)
    kolla = run_sim(load_scenario("api-node-loss"), cfg=kolla_cfg, detect=KOLLA_DETECT)[0]
    cmp = comparison({"fast": fast, "kolla": kolla})
    assert cmp["rows"]["kolla"]["detection_ratio_vs_fast"] == pytest.approx(KOLLA_DETECT / 1.25, abs=0.05)
    assert cmp["rows"]["kolla"]["detection_ratio_vs_fast"] >= 4
    md = render_compare_markdown(cmp)
    assert "| detection ratio vs fast | 1x | 7.6x |" in md
    paths = write_compare(cmp, tmp_path)
    assert "<svg" in paths["html"].read_text() and json.loads(paths["json"].read_text())["baseline"] == "fast"


def test_cli_check_and_list(capsys):
    from cli import main

    assert main(["scenario", "check", str(FIX / "bad-step.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad-step.yaml:5: steps[2].fault.action: must be one of" in err
    assert main(["scenario", "check", "api-node-loss", "mq-loss"]) == 0
    assert "api-node-loss.yaml: ok" in capsys.readouterr().out
    assert main(["scenario", "list"]) == 0
    assert "slow-node" in capsys.readouterr().out
