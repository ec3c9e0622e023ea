"""Pilot tests for story mode: a scenario told from the TUI (narration, the presenter's space and
`a`, live hypotheses), the projector layout (`v`), quiet events (`f`) and a read-only viewer."""

from __future__ import annotations

import time
from datetime import UTC

from tests.functional.test_tui import settle
from tui import TuiSettings, make_app
from tui.demo import demo_session
from tui.screens.dashboard import DashboardScreen
from tui.widgets.panels import StatusLine, Timeline
from tui.widgets.story import StoryPanel

SIZE = (100, 30)
STORY = """name: tiny-story
hypotheses:
  - errors == 0
steps:
  - say: Welcome to the lab.
    pause: true
    show: events
  - mark: one
  - wait: 0.3
    say: Now we wait.
  - say: Second pause.
    pause: true
"""


def story_lab(tmp_path):
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "tiny-story.yaml").write_text(STORY)
    box = {}

    def factory():
        box["s"] = demo_session(state_dir=tmp_path, scenario_dir=d, clock=time.time, keep_requests=True,
                                history=False)
        return box["s"]

    factory.box = box
    factory.path = d / "tiny-story.yaml"
    return factory


async def until(pilot, app, cond, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        app.request_refresh()
        await pilot.pause(0.05)
        if app.snapshot is not None and cond(app.snapshot):
            return
    raise AssertionError("condition not reached")


async def test_story_waits_for_space_and_shows_the_verdict(tmp_path):
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC, confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("x")
        await pilot.press("enter")  # the only scenario, chosen
        await until(pilot, app, lambda s: s.story is not None and s.story.waiting)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        panel = screen.query_one(StoryPanel)
        assert "Welcome to the lab." in panel.text and "waiting for the presenter" in panel.text
        assert screen.stage == "events" and screen.query_one("#timeline").has_class("-on-stage")
        await pilot.press("space")
        await until(pilot, app, lambda s: s.story.waiting and s.story.current == 4)
        assert "Second pause." in panel.text
        await pilot.press("a")  # run on
        await until(pilot, app, lambda s: s.story.done)
        assert app.snapshot.story.passed
        assert "PASSED" in panel.text and "✔ errors == 0" in panel.text


async def test_projector_layout_and_quiet_events(tmp_path):
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        screen = app.screen
        lab.box["s"].record_event("api-4 health down", kind="probe", node="api-4")
        lab.box["s"].record_event("HAProxy marked api-4 DOWN", kind="probe", node="api-4")
        await settle(pilot, app)
        await pilot.press("v")
        assert screen.has_class("-projector")
        assert screen.query_one("#story").display and not screen.query_one("#bottom").display
        assert screen.query_one("#graphs").display
        await pilot.press("v")
        assert not screen.has_class("-projector") and screen.query_one("#bottom").display
        tl = screen.query_one(Timeline)
        assert "health down" in tl.text
        await pilot.press("f")
        assert "health down" not in tl.text and "HAProxy marked api-4 DOWN" in tl.text


async def test_a_viewer_has_no_key_that_acts(tmp_path):
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC, confirm_destructive=False), read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        before = [n.state for n in app.snapshot.nodes]
        for key in "1krpbnlsutx":
            await pilot.press(key)
        await pilot.press("space")
        await settle(pilot, app)
        assert [n.state for n in app.snapshot.nodes] == before
        assert not lab.box["s"].engine.faults.active()
        await pilot.press("v")
        assert app.screen.has_class("-projector")


async def test_replay_plays_the_recorded_story_in_the_tui(tmp_path):
    from halab.live.replay import ReplaySession, read_recording
    from tests.support.recorded import record_run

    rec = read_recording(record_run(tmp_path))
    app = make_app(lambda: ReplaySession(rec, speed=1000), TuiSettings(tz=UTC, confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, app, lambda s: s.story is not None and s.story.done)
        panel = app.screen.query_one(StoryPanel)
        assert "story-mq-loss" in panel.text and "PASSED" in panel.text and "✔ read-only cloud" in panel.text
        assert "replay of story-mq-loss.timeline.jsonl" in app.snapshot.problems[0]
        await pilot.press("7", "k")  # mq-1: a recording refuses
        await settle(pilot, app)
        assert app.snapshot.node("mq-1").state == "running"


async def test_the_presenters_tui_publishes_its_snapshots(tmp_path, monkeypatch):
    import asyncio

    from halab.live.feed import FeedClient, ViewerSession, feed_paths

    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC, publish=True))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        for _ in range(100):
            if app.feed is not None:
                break
            await pilot.pause(0.05)
        sock, token_file = feed_paths("demo")
        assert (sock.stat().st_mode & 0o777) == 0o600 and (token_file.stat().st_mode & 0o777) == 0o600
        viewer = ViewerSession(FeedClient(sock, token_file.read_text().strip()))
        seen = await asyncio.to_thread(viewer.snapshot)
        assert seen.lab == "demo" and [n.name for n in seen.nodes] == [n.name for n in app.snapshot.nodes]
        viewer.close()
    assert not sock.exists()  # the presenter quit: nothing left listening


async def test_a_snapshot_that_arrives_while_the_app_quits_is_dropped(tmp_path):
    """Quitting removes the dashboard's panels while a last snapshot may still be delivered: that
    snapshot must not crash the app (seen under load: NoMatches for StatusLine at exit)."""
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC, confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        snap = app.snapshot
        before = screen.applied
        await screen.query_one(StatusLine).remove()
        screen.show_snapshot(snap)  # raised NoMatches before
        assert screen.applied == before


async def test_quitting_while_the_story_waits_ends_the_run_and_its_traffic(tmp_path):
    """`q` at a `pause: true` step: the session's close cancels the scenario (it cleans up as at
    its end) and stops the traffic, so nothing keeps the process alive (it hung here: the runner
    waited an hour for the presenter in a worker thread the interpreter joins at exit)."""
    lab = story_lab(tmp_path)
    app = make_app(lab, TuiSettings(tz=UTC, confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("t")  # traffic on, as a presenter would have it
        await until(pilot, app, lambda s: s.traffic.running)
        await pilot.press("x")
        await pilot.press("enter")
        await until(pilot, app, lambda s: s.story is not None and s.story.waiting)
        await pilot.press("q")
    session = lab.box["s"]
    story = session.engine.story
    assert story is not None
    deadline = time.monotonic() + 5.0
    while not story.view().done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert story.view().done and not story.view().passed
    assert not session.engine.traffic.running
