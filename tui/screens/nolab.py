"""No lab yet: choose a profile, bring it up, and watch every step (Terraform resources, cloud-init
per node, elapsed per phase). Errors are shown in full."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Button, DataTable, Label, RadioButton, RadioSet, Static

from halab.lab.config import PROFILE_COUNTS
from halab.live.session import LabSnapshot, UpProgress
from tui.keys import APP_KEYS, KeySpec
from tui.widgets.panels import KeyBar

UP_KEYS = (KeySpec("enter", "up", "bring it up", "Bring the lab up", "Enter"), *APP_KEYS)


def _profile_text(profile: str) -> str:
    c = PROFILE_COUNTS[profile]
    extra = " (Galera, RabbitMQ cluster, keepalived VIP)" if profile == "ha" else ""
    return (f"{profile}: {c['haproxy']} HAProxy, {c['api']} API, {c['db']} DB, {c['mq']} MQ — "
            f"{sum(c.values())} VMs{extra}")


class NoLabScreen(Screen):
    BINDINGS = [
        Binding("enter", "up", "bring it up", show=False),
        Binding("question_mark,f1", "help", "help", show=False),
        Binding("q", "quit", "quit", show=False),
    ]

    def __init__(self, snapshot: LabSnapshot | None, profile: str) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.profile = profile
        self.running = False
        self._phase_start: dict[str, float] = {}
        self._phase_rows: set[str] = set()
        self._res_rows: set[str] = set()
        self._node_rows: set[str] = set()
        self._log: list[str] = []

    def compose(self) -> ComposeResult:
        s = self.snapshot
        where = f"lab [b]{escape(s.lab)}[/] on {escape(s.libvirt_uri)}" if s else "this lab"
        with VerticalScroll(id="nolab"):
            yield Static(Content.from_markup(f"No {where} yet. Choose a profile and bring it up "
                                             "(image, Terraform, cloud-init)."), id="nolab-intro")
            with Horizontal(id="nolab-choose"):
                with RadioSet(id="profile"):
                    for p in PROFILE_COUNTS:
                        yield RadioButton(_profile_text(p), value=p == self.profile, id=f"profile-{p}")
                yield Button("Bring it up", variant="success", id="up")
            yield Static("", id="up-error")
            with Horizontal(id="nolab-tables"):
                with Vertical():
                    yield Label("[b]phases[/]")
                    yield DataTable(id="phases", show_cursor=False)
                    yield Label("[b]cloud-init per node[/]")
                    yield DataTable(id="nodes", show_cursor=False)
                with Vertical():
                    yield Label("[b]Terraform resources[/]")
                    yield DataTable(id="resources", show_cursor=False)
            yield Label("[b]log[/]")
            yield Static("", id="up-log")
        yield KeyBar(UP_KEYS, id="keybar")

    def on_mount(self) -> None:
        self.query_one("#phases", DataTable).add_columns("phase", "elapsed", "state")
        self.query_one("#nodes", DataTable).add_columns("node", "elapsed", "cloud-init")
        self.query_one("#resources", DataTable).add_columns("resource", "elapsed", "state")
        self.query_one("#up", Button).focus()

    def chosen_profile(self) -> str:
        pressed = self.query_one("#profile", RadioSet).pressed_button
        return str(pressed.id).removeprefix("profile-") if pressed is not None else self.profile

    @on(Button.Pressed, "#up")
    def action_up(self) -> None:
        if self.running:
            self.notify("`up` is already running", severity="warning")
            return
        self.running = True
        self.query_one("#up", Button).disabled = True
        self.query_one("#up-error", Static).update("")
        self.app.bring_up(self.chosen_profile())

    def action_help(self) -> None:
        from tui.screens.dialogs import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        self.app.action_quit()

    # ---- progress ----------------------------------------------------------------------------
    def _upsert(self, table_id: str, rows: set[str], key: str, *cells: str) -> None:
        table = self.query_one(f"#{table_id}", DataTable)
        if key in rows:
            for col, value in zip(table.columns, cells, strict=False):
                table.update_cell(key, col, value, update_width=True)
        else:
            rows.add(key)
            table.add_row(*cells, key=key)

    def show_progress(self, p: UpProgress) -> None:
        if p.phase:
            start = self._phase_start.setdefault(p.phase, p.elapsed_s)
            state = "done" if p.done and not p.node and not p.resource else "running"
            self._upsert("phases", self._phase_rows, p.phase, p.phase, f"{p.elapsed_s - start:6.1f} s", state)
        if p.resource:
            self._upsert("resources", self._res_rows, p.resource, p.resource, f"{p.elapsed_s:6.1f} s",
                         p.message)
        if p.node:
            self._upsert("nodes", self._node_rows, p.node, p.node, f"{p.elapsed_s:6.1f} s", p.message)
        self._log.append(f"{p.elapsed_s:7.1f} s  {p.phase}: {p.message}")
        self.query_one("#up-log", Static).update("\n".join(self._log[-12:]))

    def show_failure(self, error: str) -> None:
        self.running = False
        self.query_one("#up", Button).disabled = False
        self.query_one("#up-error", Static).update(
            Content.from_markup("[b $error]up failed:[/]\n$error\n\n[$text-muted]Fix the cause and press "
                                "Enter to try again; `up` converges from where it stopped.[/]",
                                error=error))
        self.query_one("#up-error").scroll_visible()
