"""Modal dialogs: confirm a destructive action, ask for latency, pick a scenario, help."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.keys import ALL_KEYS, MOVE_KEYS, KeySpec


class ConfirmScreen(ModalScreen[bool]):
    """Yes / no for a destructive action. y or Enter confirms; n or Esc cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes", show=False),
        Binding("n,escape", "answer(False)", "no", show=False),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm"):
            yield Label(self.question, id="question")
            if self.detail:
                yield Static(escape(self.detail), id="detail", markup=True)
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class LatencyScreen(ModalScreen[tuple[float, float] | None]):
    """Ask for the delay (ms) and loss (%) to add to one node."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, node: str, delay_ms: float) -> None:
        super().__init__()
        self.node = node
        self.delay_ms = delay_ms

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(f"Latency towards {self.node} (tc netem on its host-side interface)")
            with Grid(classes="form"):
                yield Label("delay ms")
                yield Input(f"{self.delay_ms:g}", id="delay", type="number")
                yield Label("loss %")
                yield Input("0", id="loss", type="number")
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply (Enter)", variant="error", id="apply")
                yield Button("Cancel (Esc)", variant="primary", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#delay", Input).focus()

    def _values(self) -> tuple[float, float] | None:
        try:
            delay = float(self.query_one("#delay", Input).value or 0)
            loss = float(self.query_one("#loss", Input).value or 0)
        except ValueError:
            self.query_one("#error", Static).update("numbers only")
            return None
        if delay < 0 or not 0 <= loss <= 100 or (delay == 0 and loss == 0):
            self.query_one("#error", Static).update("delay ≥ 0 ms, loss 0-100 %, and one of them > 0")
            return None
        return delay, loss

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        values = self._values()
        if values is not None:
            self.dismiss(values)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ScenarioScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Run which scenario? (Enter runs, Esc cancels)")
            yield OptionList(*[Option(p.stem, id=str(i)) for i, p in enumerate(self.paths)], id="scenarios")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.paths[int(event.option.id or 0)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "close", show=False)]

    def __init__(self, keys: tuple[KeySpec, ...] = ALL_KEYS) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        rows = [f"[b $accent]{escape(s.shown):>5}[/]  {escape(s.help)}"
                + ("  [$text-muted](asks first)[/]" if s.destructive else "") for s in self.keys]
        rows += [f"[b $accent]{escape(k):>5}[/]  {escape(h)}" for k, h in MOVE_KEYS]
        with Vertical(id="dialog", classes="dialog help"):
            yield Label("[b]halab keys[/]  (Esc closes)")
            with VerticalScroll():
                yield Static("\n".join(rows), id="help-keys")
            yield Static("Quitting leaves the lab running; [b]./lab.py down[/] removes it. "
                         "Set confirm_destructive: false in ~/.config/halab/tui.yaml to skip the "
                         "confirmations in demos.", id="help-foot")

    def action_close(self) -> None:
        self.dismiss(None)
