"""The dashboard: topology, live graphs, timeline, last failover, and the keys that break things."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from halab import fault_kinds
from halab.session import LabSnapshot, NodeView
from tui.keys import ALL_KEYS, bindings
from tui.screens.dialogs import ConfirmScreen, HelpScreen, LatencyScreen, ScenarioScreen
from tui.widgets.graphs import LatencyGraph, RequestsGraph
from tui.widgets.panels import FailoverPanel, KeyBar, StatusLine, Timeline
from tui.widgets.topology import Topology, topology_title

# What each confirmation explains: the fault registry's words, plus the scenario key's.
WHY = {k.name: k.why for k in fault_kinds.KINDS if k.why} | {
    "scenario": "Runs the scripted scenario unattended; it injects faults of its own.",
    "reset": "Every node back to the `ready` checkpoint, together (seconds): servers created, faults "
             "and data written since are gone.",
}


class DashboardScreen(Screen):
    BINDINGS = [
        *bindings(ALL_KEYS),
        *[Binding(str(i), f"select({i - 1})", show=False) for i in range(1, 10)],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0

    def compose(self) -> ComposeResult:
        tz = self.app.settings.tz
        seconds = self.app.settings.graph_seconds
        yield StatusLine(tz, id="status")
        with Vertical(id="topology-box"):
            yield Topology(id="topology")
        with Horizontal(id="graphs"):
            yield RequestsGraph(seconds, id="requests")
            yield LatencyGraph(seconds, id="latency")
        with Horizontal(id="bottom"):
            yield Timeline(tz, id="timeline")
            yield FailoverPanel(id="failover")
        yield KeyBar(ALL_KEYS, id="keybar")

    def on_mount(self) -> None:
        self.query_one("#topology-box").border_title = "lab"
        self.query_one("#timeline").border_title = "events"
        self.query_one("#failover").border_title = "last failover"
        self.query_one(Topology).focus()
        if self.app.snapshot is not None:
            self.show_snapshot(self.app.snapshot)

    def show_snapshot(self, s: LabSnapshot) -> None:
        if not self.is_mounted:
            return
        self.query_one(StatusLine).show(s)
        self.query_one("#topology-box").border_title = topology_title(s)
        self.query_one(Topology).show(s)
        self.query_one(RequestsGraph).show(s)
        self.query_one(LatencyGraph).show(s)
        self.query_one(Timeline).show(s)
        self.query_one(FailoverPanel).show(s)
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

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self.app.action_quit()
