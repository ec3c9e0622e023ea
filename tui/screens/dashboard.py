"""The dashboard: topology, live graphs, timeline, last failover, and the keys that break things."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen

from halab import fault_kinds
from halab.live.session import LabSnapshot, NodeView
from tui.keys import ALL_KEYS, STORY_KEYS, VIEW_KEYS, VIEWER_KEYS, KeySpec, bindings
from tui.screens.dialogs import ConfirmScreen, HelpScreen, LatencyScreen, ScenarioScreen
from tui.widgets.graphs import LatencyGraph, RequestsGraph
from tui.widgets.panels import FailoverPanel, KeyBar, ServersPanel, StatusLine, Timeline
from tui.widgets.story import StoryPanel
from tui.widgets.topology import Topology, topology_title

STAGES = ("topology", "graphs", "events", "failover", "story", "servers")  # what a `show:` may name
PANEL_IDS = {"topology": "topology-box", "graphs": "graphs", "events": "timeline", "failover": "failover",
             "story": "story", "servers": "servers"}

# What each confirmation explains: the fault registry's words, plus the lab-wide actions'.
WHY = {k.name: k.why for k in fault_kinds.KINDS if k.why} | {
    "scenario": "Runs the scripted scenario unattended; it injects faults of its own.",
    "reset": "Every node back to the `ready` checkpoint, together (seconds): servers created, faults "
             "and data written since are gone.",
}


class DashboardScreen(Screen):
    KEYS: tuple[KeySpec, ...] = ALL_KEYS
    READ_ONLY = False
    BINDINGS = [
        *bindings(ALL_KEYS),
        *[Binding(str(i), f"select({i - 1})", show=False) for i in range(1, 10)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0
        self.projector = False
        self.stage = ""  # the panel a story step put on stage (`show:`); none until one does

    def compose(self) -> ComposeResult:
        tz = self.app.settings.tz
        seconds = self.app.settings.graph_seconds
        yield StatusLine(tz, id="status")
        with Vertical(id="topology-box"):
            yield Topology(id="topology")
        yield StoryPanel(keys=not self.READ_ONLY, id="story")
        with Horizontal(id="graphs"):
            yield RequestsGraph(seconds, id="requests")
            yield LatencyGraph(seconds, id="latency")
        with Horizontal(id="bottom"):
            yield Timeline(tz, id="timeline")
            yield ServersPanel(id="servers")
            yield FailoverPanel(id="failover")
        # The story and view keys are in the story panel's hint and the help screen: the bar keeps
        # its two lines at 80 columns.
        yield KeyBar(tuple(k for k in self.KEYS if k not in STORY_KEYS + VIEW_KEYS) or self.KEYS,
                     id="keybar")

    def on_mount(self) -> None:
        self.query_one("#topology-box").border_title = "lab"
        self.query_one("#timeline").border_title = "events"
        self.query_one("#failover").border_title = "last failover"
        self.query_one("#story").border_title = "story"
        self.query_one("#servers").border_title = "one server, two APIs"
        self.query_one(Topology).focus()
        self.set_projector(self.app.settings.projector)
        if self.app.snapshot is not None:
            self.show_snapshot(self.app.snapshot)

    # ---- layout: projector, stage, quiet events ------------------------------------------------
    def set_projector(self, on: bool) -> None:
        """Fewer, larger panels for a room: topology, the story and one panel on stage."""
        self.projector = on
        self.set_class(on, "-projector")
        self._apply_stage()

    def set_stage(self, panel: str) -> None:
        if panel in STAGES and panel != self.stage:
            self.stage = panel
            self._apply_stage()

    def _apply_stage(self) -> None:
        for name in STAGES:
            self.set_class(name == self.stage, f"-stage-{name}")
            self.query_one(f"#{PANEL_IDS[name]}").set_class(name == self.stage and not self.projector,
                                                            "-on-stage")

    def action_projector(self) -> None:
        self.set_projector(not self.projector)
        self.notify("projector layout" if self.projector else "full layout", timeout=2)

    def action_quiet_events(self) -> None:
        tl = self.query_one(Timeline)
        tl.set_quiet(not tl.quiet)
        self.query_one("#timeline").border_title = "events (story only)" if tl.quiet else "events"
        self.notify("events: only what changes the story" if tl.quiet else "events: everything", timeout=2)

    def show_snapshot(self, s: LabSnapshot) -> None:
        if not self.is_mounted:
            return
        # The app may be quitting: panels are being removed while a last snapshot arrives.
        with contextlib.suppress(NoMatches):
            self._show(s)

    def _show(self, s: LabSnapshot) -> None:
        self.query_one(StatusLine).show(s)
        self.query_one("#topology-box").border_title = topology_title(s)
        self.query_one(Topology).show(s)
        self.query_one(RequestsGraph).show(s)
        self.query_one(LatencyGraph).show(s)
        self.query_one(Timeline).show(s)
        self.query_one(FailoverPanel).show(s)
        if self.stage == "servers" or (s.story is not None and s.story.show == "servers"):
            self.query_one(ServersPanel).show(s)
        self.set_class(s.story is not None, "-story")
        self.query_one(StoryPanel).show(s.story)
        if s.story is not None and s.story.show:
            self.set_stage(s.story.show)
        self.applied += 1

    # ---- selection ---------------------------------------------------------------------------
    def selected(self) -> NodeView | None:
        name = self.query_one(Topology).selected
        snap = self.app.snapshot
        if name is None or snap is None:
            self.notify("No node selected: pick one with ↑ ↓ or its number", severity="warning")
            return None
        return snap.node(name)

    def action_select(self, index: int) -> None:
        self.query_one(Topology).select_index(index)

    # ---- doing things ------------------------------------------------------------------------
    def _do(self, action: str, node: str | None, *, confirm: str | None = None, why: str = "",
            **params: Any) -> None:
        """Run a session action in a worker, after a confirmation if it is destructive."""
        app = self.app
        if self.READ_ONLY:
            self.notify("This is a viewer: it cannot change the lab.", severity="warning", timeout=3)
            return
        if confirm and app.settings.confirm_destructive:
            def answered(ok: bool | None) -> None:
                if ok:
                    app.perform(action, node, **params)
                else:
                    self.notify(f"{confirm.rstrip('?')}: cancelled", timeout=2)
            self.app.push_screen(ConfirmScreen(confirm, why), answered)
        else:
            app.perform(action, node, **params)

    def action_kill(self) -> None:
        if n := self.selected():
            self._do("kill", n.name, confirm=f"Kill {n.name}?", why=WHY["kill"])

    def action_revive(self) -> None:
        if n := self.selected():
            self._do("revive", n.name)

    def action_revive_warm(self) -> None:
        if n := self.selected():
            self._do("revive", n.name, warm=True)

    def action_reset(self) -> None:
        self._do("reset", None, confirm="Reset the lab to 'ready'?", why=WHY["reset"])

    def action_pause(self) -> None:
        if n := self.selected():
            if n.state == "paused" or n.has_fault("pause"):
                self._do("resume", n.name)
            else:
                self._do("pause", n.name, confirm=f"Pause {n.name}?", why=WHY["pause"])

    def action_reboot(self) -> None:
        if n := self.selected():
            self._do("reboot", n.name, confirm=f"Reboot {n.name}?", why=WHY["reboot"])

    def action_netcut(self) -> None:
        if n := self.selected():
            if n.has_fault("netcut"):
                self._do("netrestore", n.name)
            else:
                self._do("netcut", n.name, confirm=f"Cut {n.name}'s network?", why=WHY["netcut"])

    def action_latency(self) -> None:
        n = self.selected()
        if n is None:
            return
        if n.has_fault("netem"):
            self._do("netem", n.name, delay_ms=0.0, loss_pct=0.0)
            return
        if not self.app.settings.confirm_destructive:
            self._do("netem", n.name, delay_ms=self.app.settings.netem_delay_ms, loss_pct=0.0)
            return

        def chosen(values: tuple[float, float] | None) -> None:
            if values is not None:
                self.app.perform("netem", n.name, delay_ms=values[0], loss_pct=values[1])

        self.app.push_screen(LatencyScreen(n.name, self.app.settings.netem_delay_ms), chosen)

    def action_service(self) -> None:
        if n := self.selected():
            if n.has_fault("stop-service"):
                self._do("start_service", n.name)
            else:
                self._do("stop_service", n.name, confirm=f"Stop {n.name}'s service?",
                         why=WHY["stop-service"])

    def action_restore(self) -> None:
        self._do("restore_all", None)

    def action_traffic(self) -> None:
        snap = self.app.snapshot
        if snap is not None and snap.traffic.running:
            self._do("stop_traffic", None)
        else:
            self._do("start_traffic", None)

    def _rate(self, sign: int) -> None:
        snap = self.app.snapshot
        current = snap.traffic.rate if snap is not None else 0.0
        step = self.app.settings.rate_step
        self._do("set_rate", None, rate=max(step if sign > 0 else 1.0, current + sign * step))

    def action_rate_up(self) -> None:
        self._rate(+1)

    def action_rate_down(self) -> None:
        self._rate(-1)

    def action_scenario(self) -> None:
        paths = self.app.session.scenarios() if self.app.session is not None else []
        if not paths:
            where = self.app.session.scenario_dir if self.app.session is not None else "scenarios/"
            self.notify(f"No scenarios (*.yaml) in {where}", severity="warning")
            return

        def chosen(path) -> None:
            if path is not None:
                self._do("run_scenario", None, confirm=f"Run scenario {path.stem}?", why=WHY["scenario"],
                         path=path)

        self.app.push_screen(ScenarioScreen(paths), chosen)

    def action_story_next(self) -> None:
        self._do("story_next", None)

    def action_story_auto(self) -> None:
        self._do("story_run_on", None)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.KEYS))

    def action_quit(self) -> None:
        self.app.action_quit()


class ViewerDashboard(DashboardScreen):
    """The dashboard a browser viewer gets: the same panels, only keys that change the view (no key
    that acts on the lab is bound, and ``_do`` refuses in any case)."""

    KEYS = VIEWER_KEYS
    READ_ONLY = True
    INHERIT_BINDINGS = False
    ALLOWED = frozenset({*(k.action for k in VIEWER_KEYS), "select"})
    BINDINGS = [
        *bindings(VIEWER_KEYS),
        *[Binding(str(i), f"select({i - 1})", show=False) for i in range(1, 10)],
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Belt and braces: an action reached any other way (a click, the palette) is refused."""
        return action in self.ALLOWED
