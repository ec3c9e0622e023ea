"""SVG snapshots of the main screens at 80x24 and 160x48: a lab on test:///default with recorded
traffic and events, a fixed clock and UTC, so the pictures are the same on every run.
Review changes with `pytest --snapshot-update` and look at the SVGs before committing them."""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halab.live.engine import LabEngine
from halab.live.session import LabSession, UpProgress
from tui import TuiSettings, make_app
from tui.demo import T0, demo_config, demo_session

SIZES = [(80, 24), (160, 48)]


async def _settled(pilot) -> None:
    app = pilot.app
    for _ in range(250):
        if app.session is not None and app.snapshots_applied:
            break
        await pilot.pause(0.02)
    ticket = app.request_refresh()
    for _ in range(250):
        if app.applied_ticket >= ticket:
            break
        await pilot.pause(0.02)
    await pilot.pause(0.1)


def _app(tmp_path, profile: str = "default", **kw):
    return make_app(lambda: demo_session(profile, state_dir=tmp_path), TuiSettings(tz=UTC, **kw))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=_settled)


def test_dashboard_ha_profile_large(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path, "ha"), terminal_size=(160, 48), run_before=_settled)


def test_dashboard_light_theme(snap_compare, tmp_path):
    assert snap_compare(_app(tmp_path, theme="textual-light"), terminal_size=(80, 24), run_before=_settled)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_confirm_kill(snap_compare, tmp_path, size):
    async def before(pilot):
        await _settled(pilot)
        await pilot.press("4", "k")
        await pilot.pause(0.1)

    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=before)


def test_help(snap_compare, tmp_path):
    async def before(pilot):
        await _settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.1)

    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=before)


def _nolab_app(tmp_path):
    import libvirt

    from halab.chaos.faults import Faults
    from halab.lab.virt import LabVirt

    def factory() -> LabSession:
        cfg = demo_config(name="fresh")
        virt = LabVirt(cfg, libvirt.open("test:///default"))
        engine = LabEngine(cfg, virt=virt, faults=Faults(cfg, virt, state_dir=tmp_path), clock=lambda: T0)
        return LabSession(engine)

    return make_app(factory, TuiSettings(tz=UTC))


STEPS = [
    UpProgress("image", "base image 3f2a9c cached", 0.2),
    UpProgress("image", "image done in 0.2s", 0.2, done=True),
    UpProgress("terraform", "terraform apply", 0.4),
    UpProgress("terraform", "creation complete", 3.1, resource="libvirt_network.lab"),
    UpProgress("terraform", "creation complete", 5.8, resource="libvirt_volume.node[\"api-1\"]"),
    UpProgress("terraform", "creating…", 9.0, resource="libvirt_domain.node[\"api-1\"]"),
    UpProgress("terraform", "terraform done in 24.6s", 25.0, done=True),
    UpProgress("cloud-init", "waiting for SSH", 25.1, node="api-1"),
    UpProgress("cloud-init", "finished", 118.4, node="haproxy-1"),
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_lab_progress_and_error(snap_compare, tmp_path, size):
    async def before(pilot):
        await _settled(pilot)
        screen = pilot.app.screen
        for step in STEPS:
            screen.show_progress(step)
        screen.show_failure("cloud-init on api-2 did not finish within 600 s:\n"
                            "  last line of cloud-init-output.log: 'Job for halab-api.service failed'\n"
                            "  ssh root@10.77.0.13 to look, then run ./lab.py up again")
        await pilot.pause(0.1)

    assert snap_compare(_nolab_app(tmp_path), terminal_size=size, run_before=before)


def _story_session(tmp_path):
    """The demo lab in the middle of the built-in mq story: waiting for the presenter at step 4."""
    from halab.chaos.scenario import load_scenario
    from halab.chaos.story import HypothesisView, Story

    session = demo_session(state_dir=tmp_path)
    story = Story.for_scenario(load_scenario("story-mq-loss"))
    for i in (1, 2, 3, 4):
        story.begin(i)
    story.hypotheses([HypothesisView("read_availability >= 99.9 %", "run", "holding"),
                      HypothesisView("failed_pages == 0", "run", "holding"),
                      HypothesisView("read-only cloud", "step 7", "pending")])
    session.engine.show_story(story)
    return session


def test_story_panel(snap_compare, tmp_path):
    app = make_app(lambda: _story_session(tmp_path), TuiSettings(tz=UTC))
    assert snap_compare(app, terminal_size=(100, 30), run_before=_settled)


def test_projector_layout(snap_compare, tmp_path):
    app = make_app(lambda: _story_session(tmp_path), TuiSettings(tz=UTC, projector=True))
    assert snap_compare(app, terminal_size=(100, 30), run_before=_settled)
