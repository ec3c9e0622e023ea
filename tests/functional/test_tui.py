"""Pilot tests: every action path of the TUI (confirm yes / no / skipped) on a lab defined on
libvirt's test:///default driver, with recorded samples and a fixed clock."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from halab.errors import NotAvailableYet
from halab.live.engine import LabEngine
from halab.live.session import LabSession, UpProgress
from tests.support.recorder import Recorder
from tui import TuiSettings, make_app
from tui.demo import T0, define_domains, demo_session
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import ConfirmScreen, HelpScreen, LatencyScreen, ScenarioScreen
from tui.screens.nolab import NoLabScreen
from tui.widgets.panels import KeyBar, Timeline

SIZE = (100, 30)


def settings(**kw) -> TuiSettings:
    return TuiSettings(tz=UTC, **kw)


async def settle(pilot, app, timeout: float = 5.0) -> None:
    """Wait until action workers are done and a snapshot taken after them is on screen."""
    loops = int(timeout / 0.02)
    for _ in range(loops):
        busy = [w for w in app.workers if w.group.startswith(("action-", "up", "session")) and w.is_running]
        if not busy and app.session is not None:
            break
        await pilot.pause(0.02)
    ticket = app.request_refresh()
    for _ in range(loops):
        if app.applied_ticket >= ticket:
            break
        await pilot.pause(0.02)
    await pilot.pause()
    assert app.applied_ticket >= ticket, "no snapshot reached the screen"


def timeline_text(app) -> str:
    return "\n".join(e.text for e in app.snapshot.events)


@pytest.fixture
def lab(tmp_path):
    rec = Recorder()
    box: dict[str, LabSession] = {}

    def factory() -> LabSession:
        box["s"] = demo_session(state_dir=tmp_path, recorder=rec, scenario_dir=tmp_path / "scenarios")
        return box["s"]

    factory.recorder = rec  # type: ignore[attr-defined]
    factory.box = box  # type: ignore[attr-defined]
    return factory


async def start(app, pilot) -> None:
    await settle(pilot, app)
    assert isinstance(app.screen, DashboardScreen)


async def select(pilot, app, node: str) -> None:
    index = [n.name for n in app.snapshot.nodes].index(node)
    await pilot.press(str(index + 1))


async def test_kill_confirm_yes(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-3")
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot, app)
        assert app.snapshot.node("api-3").state == "shut off"
        assert app.snapshot.node("api-3").faults == ("kill",)
        assert "kill api-3" in app.screen.query_one(Timeline).text


async def test_kill_confirm_no(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-3")
        await pilot.press("k", "n")
        await settle(pilot, app)
        assert isinstance(app.screen, DashboardScreen)
        assert app.snapshot.node("api-3").state == "running"
        assert "kill api-3" not in timeline_text(app)


async def test_kill_confirm_with_mouse(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-1")
        await pilot.press("k")
        await pilot.click("#yes")
        await settle(pilot, app)
        assert app.snapshot.node("api-1").state == "shut off"


async def test_kill_skips_confirm_when_disabled(lab):
    app = make_app(lab, settings(confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-3")
        await pilot.press("k")
        assert not isinstance(app.screen, ConfirmScreen)
        await settle(pilot, app)
        assert app.snapshot.node("api-3").state == "shut off"
        await pilot.press("r")  # revive never asks
        await settle(pilot, app)
        assert app.snapshot.node("api-3").state == "running"
        assert app.snapshot.node("api-3").faults == ()


async def test_pause_then_resume(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "db-1")
        await pilot.press("p", "y")
        await settle(pilot, app)
        assert app.snapshot.node("db-1").state == "paused"
        await pilot.press("p")  # resume: no confirmation
        assert not isinstance(app.screen, ConfirmScreen)
        await settle(pilot, app)
        assert app.snapshot.node("db-1").state == "running"


async def test_pause_confirm_no(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "db-1")
        await pilot.press("p", "escape")
        await settle(pilot, app)
        assert app.snapshot.node("db-1").state == "running"


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_reboot(lab, answer):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "mq-1")
        await pilot.press("b", answer)
        await settle(pilot, app)
        assert ("reboot mq-1" in timeline_text(app)) is (answer == "y")
        assert app.snapshot.node("mq-1").state == "running"


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_netcut(lab, answer):
    """The test driver cannot change links live: the failure must reach the screen in full."""
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-4")
        await pilot.press("n", answer)
        await settle(pilot, app)
        text = timeline_text(app)
        if answer == "y":
            assert "netcut api-4 failed" in text and "libvirt refused" in text
        else:
            assert "netcut" not in text


async def test_latency_prompt_apply_and_clear(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-2")
        await pilot.press("l")
        assert isinstance(app.screen, LatencyScreen)
        await pilot.press("backspace", "backspace", "backspace", "3", "5", "0", "enter")
        await settle(pilot, app)
        assert app.snapshot.node("api-2").faults == ("netem 350 ms",)
        assert lab.recorder.host[-1][:3] == ["tc", "qdisc", "replace"]
        assert "350ms" in lab.recorder.host[-1]
        await pilot.press("l")  # active: clears at once
        await settle(pilot, app)
        assert app.snapshot.node("api-2").faults == ()
        assert lab.recorder.host[-1][:3] == ["tc", "qdisc", "del"]


async def test_latency_prompt_cancel(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("l", "escape")
        await settle(pilot, app)
        assert lab.recorder.host == []


async def test_latency_without_confirm_uses_default(lab):
    app = make_app(lab, settings(confirm_destructive=False, netem_delay_ms=120))
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-1")
        await pilot.press("l")
        await settle(pilot, app)
        assert app.snapshot.node("api-1").faults == ("netem 120 ms",)


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_stop_and_start_service(lab, answer):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-1")
        await pilot.press("s", answer)
        await settle(pilot, app)
        if answer == "n":
            assert lab.recorder.ssh == []
            return
        assert lab.recorder.ssh == [("api-1", "systemctl stop halab-api")]
        assert app.snapshot.node("api-1").faults == ("stop-service halab-api",)
        await pilot.press("s")  # start again: no confirmation
        await settle(pilot, app)
        assert lab.recorder.ssh[-1] == ("api-1", "systemctl start halab-api")
        assert app.snapshot.node("api-1").faults == ()


async def test_restore_all(lab):
    app = make_app(lab, settings(confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-1")
        await pilot.press("k")
        await settle(pilot, app)
        await select(pilot, app, "db-1")
        await pilot.press("p")
        await settle(pilot, app)
        assert {n.name for n in app.snapshot.nodes if n.faults} == {"api-1", "db-1"}
        await pilot.press("u")
        await settle(pilot, app)
        assert all(n.state == "running" and not n.faults for n in app.snapshot.nodes)
        assert "restore all: 2 fault(s) undone" in timeline_text(app)


async def test_traffic_start_stop_and_rate(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("t")
        await settle(pilot, app)
        assert app.snapshot.traffic.running
        await pilot.press("plus", "plus")
        await settle(pilot, app)
        await pilot.press("plus")
        await settle(pilot, app)
        assert app.snapshot.traffic.rate == 80
        await pilot.press("minus")
        await settle(pilot, app)
        assert app.snapshot.traffic.rate == 70
        await pilot.press("t")
        await settle(pilot, app)
        assert not app.snapshot.traffic.running
        text = timeline_text(app)
        assert "traffic started at 50 ops/s" in text and "traffic stopped" in text


async def test_scenario_none_available(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)  # no picker, no confirmation
        warnings = [n for n in app._notifications if n.severity == "warning"]
        assert [n.message for n in warnings] == [f"No scenarios (*.yaml) in {lab.box['s'].scenario_dir}"]


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_scenario_pick_and_confirm(lab, tmp_path, monkeypatch, answer):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "api-node-loss.yaml").write_text("steps: []\n")
    ran: list[Path] = []

    def fake_run(self, path):
        ran.append(Path(path))
        raise NotAvailableYet("running scenarios is not available yet (tracked in issue 8)")

    monkeypatch.setattr(LabSession, "run_scenario", fake_run)
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("x")
        assert isinstance(app.screen, ScenarioScreen)
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(answer)
        await settle(pilot, app)
        if answer == "y":
            assert [p.stem for p in ran] == ["api-node-loss"]
            assert "not available yet" in timeline_text(app)
        else:
            assert ran == []


async def test_help_lists_every_key(lab):
    from tui.keys import ALL_KEYS

    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-keys").render())
        for spec in ALL_KEYS:
            assert spec.help in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


def keybar_offset(app, text: str) -> tuple[int, int]:
    """Where ``text`` stands in the key bar as drawn (x, y within the widget, past its padding)."""
    bar = app.screen.query_one(KeyBar)
    pad_x, pad_y = bar.content_region.x - bar.region.x, bar.content_region.y - bar.region.y
    for y in range(bar.content_region.height):
        x = bar.render_line(y).text.find(text)
        if x >= 0:
            return pad_x + x, pad_y + y
    raise AssertionError(f"{text!r} is not in the key bar")


async def test_keybar_click_acts(lab):
    """A mouse click on a key in the bar does what the key does: help opens, kill asks first."""
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        assert await pilot.click(KeyBar, offset=keybar_offset(app, "? help"))
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
        await select(pilot, app, "api-2")
        assert await pilot.click(KeyBar, offset=keybar_offset(app, "k kill"))
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "api-2" in str(app.screen.question)


async def test_quit_leaves_lab_running(lab):
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("q")
        await pilot.pause()
    assert "./lab.py down" in app.exit_note
    session = lab.box["s"]
    assert all(n.state == "running" for n in session.snapshot().nodes)


async def test_no_lab_then_up(tmp_path, monkeypatch):
    import libvirt

    conn = libvirt.open("test:///default")
    # test:///default is shared by the whole process and this test leaves its lab's domains
    # defined: a name of its own (id(conn) was reused by the next test's connection).
    lab_name = f"empty{uuid.uuid4().hex[:8]}"
    box: dict[str, LabSession] = {}

    def factory() -> LabSession:
        from halab.chaos.faults import Faults
        from halab.lab.virt import LabVirt
        from tui.demo import demo_config

        cfg = demo_config(name=lab_name)
        virt = LabVirt(cfg, conn)
        box["s"] = LabSession(LabEngine(cfg, virt=virt, faults=Faults(cfg, virt, state_dir=tmp_path),
                                        clock=lambda: T0))
        return box["s"]

    def fake_up(self, profile=None, progress_cb=None):
        assert profile == "ha"
        steps = [UpProgress("image", "base image cached", 0.1),
                 UpProgress("terraform", "libvirt_network.lab: created", 2.0, resource="libvirt_network.lab"),
                 UpProgress("cloud-init", "api-1: finished", 95.0, node="api-1")]
        for s in steps:
            progress_cb(s)
        define_domains(conn, self.cfg)
        return None

    monkeypatch.setattr(LabSession, "up", fake_up)
    app = make_app(factory, settings())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert isinstance(app.screen, NoLabScreen)
        await pilot.click("#profile-ha")
        await pilot.click("#up")
        await settle(pilot, app)
        assert isinstance(app.screen, DashboardScreen)
        assert app.snapshot.exists


async def test_no_lab_up_failure_is_shown_in_full(tmp_path):
    import libvirt

    conn = libvirt.open("test:///default")
    lab_name = f"empty{uuid.uuid4().hex[:8]}"

    def factory() -> LabSession:
        from halab.chaos.faults import Faults
        from halab.lab.virt import LabVirt
        from tui.demo import demo_config

        cfg = demo_config(name=lab_name)
        virt = LabVirt(cfg, conn)
        engine = LabEngine(cfg, virt=virt, faults=Faults(cfg, virt, state_dir=tmp_path), clock=lambda: T0)
        return LabSession(engine)

    def failing_up(self, profile=None, progress_cb=None):
        progress_cb(UpProgress("terraform", "apply started", 1.0))
        raise NotAvailableYet("terraform apply failed:\nline one of the error\nline two of the error")

    app = make_app(factory, settings())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LabSession, "up", failing_up)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, app)
            await pilot.press("enter")
            await settle(pilot, app)
            assert isinstance(app.screen, NoLabScreen)
            text = str(app.screen.query_one("#up-error").render())
            assert "line one of the error" in text and "line two of the error" in text


def test_events_are_shown_in_time_order(lab):
    """A probe reports a change stamped with its sample time, which can come before an action
    logged a moment earlier: the timeline must read in time order, and a late-arriving older event
    must still count as new for the screen's change detection."""
    session = lab()
    before = session.snapshot().last_event_seq
    session.record_event("kill api-3", kind="fault", node="api-3", t=T0 + 10.0)
    seq_after_kill = session.snapshot().last_event_seq
    session.record_event("HAProxy marked api-4 DOWN", kind="probe", node="api-4", t=T0 + 9.5)
    snap = session.snapshot()
    ours = [e.text for e in snap.events if e.text in ("kill api-3", "HAProxy marked api-4 DOWN")]
    assert ours == ["HAProxy marked api-4 DOWN", "kill api-3"]
    assert [e.t for e in snap.events] == sorted(e.t for e in snap.events)
    assert before < seq_after_kill < snap.last_event_seq


@pytest.mark.parametrize("answer", ["y", "n"])
async def test_reset_asks_first_then_resets_through_the_checkpoint_engine(lab, answer):
    """`R` asks; yes runs session.reset → halab.lab.checkpoint.reset. The demo lab on test:///default
    has no Terraform state, so the real engine refuses it — and that refusal is what reaches the
    timeline (the real reset is exercised on VMs in tests/e2e/test_15_warm.py)."""
    app = make_app(lab, settings())
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press(answer)
        await settle(pilot, app)
        if answer == "y":
            assert "reset failed: lab 'demo' is not up" in timeline_text(app)
        else:
            assert "reset" not in timeline_text(app)


async def test_warm_revive_is_its_own_key(lab):
    """`w` asks for a warm revive of the selected node: without a `ready` checkpoint the real
    Faults refuse it, naming the checkpoint; a stateful node is refused as never warm."""
    app = make_app(lab, settings(confirm_destructive=False))
    async with app.run_test(size=SIZE) as pilot:
        await start(app, pilot)
        await select(pilot, app, "api-2")
        await pilot.press("k")
        await settle(pilot, app)
        await pilot.press("w")
        await settle(pilot, app)
        assert "revive api-2 failed" in timeline_text(app)
        assert "checkpoint 'ready'" in timeline_text(app)
        await select(pilot, app, "db-1")
        await pilot.press("w")
        await settle(pilot, app)
        assert "revive db-1 failed" in timeline_text(app)
        assert "never revived warm" in timeline_text(app)


async def test_kill_refused_while_another_run_changes_the_lab(lab, tmp_path):
    """The lab lock covers TUI actions: while `lab.py up` (here: another process holding the lock)
    changes the lab, a kill is refused with a clear line and the node is untouched."""
    import subprocess

    root = str(Path(__file__).resolve().parents[2])
    code = (f"import sys, time; sys.path.insert(0, {root!r}); from halab.lock import LabLock\n"
            f"with LabLock({str(tmp_path)!r}, 'demo'):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        app = make_app(lab, settings())
        async with app.run_test(size=SIZE) as pilot:
            await start(app, pilot)
            await select(pilot, app, "api-3")
            await pilot.press("k", "y")
            await settle(pilot, app)
            assert app.snapshot.node("api-3").state == "running"
            notes = [str(n.message) for n in app._notifications]
            assert any("being changed by another lab.py run" in m and "wait for it to finish" in m
                       for m in notes), notes
    finally:
        holder.kill()
        holder.wait()
