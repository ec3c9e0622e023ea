"""The story panel: the scenario's title, the step with its narration, what comes next, and each
claim with its verdict, so the room knows where the story is and whether it holds."""

from __future__ import annotations

from textual.content import Content
from textual.markup import escape
from textual.widgets import Static

from halab.chaos.story import HypothesisView, StoryView

MARK = {"pending": ("·", "$text-muted"), "holding": ("○", "$accent"), "held": ("✔", "$success"),
        "broken": ("✘", "$error")}


def _hyp_line(h: HypothesisView) -> str:
    sign, style = MARK.get(h.status, ("?", "$text-muted"))
    text = f"[{style}]{sign} {escape(h.label)}[/] [$text-muted]{h.status}[/]"
    if h.status == "broken":
        when = f" at t={h.at_s:.1f} s" if h.at_s is not None else ""
        value = f" (value {h.value:g})" if h.value is not None else ""
        text += f"[$error]{escape(when + value)}[/]"
        if h.reason:
            text += f" [$text-muted]{escape(h.reason[:80])}[/]"
    return text


def story_lines(v: StoryView | None, *, keys: bool = True) -> list[str]:
    """The panel's markup lines (tests read them too)."""
    if v is None:
        return ["[$text-muted]No story yet: x runs a scenario as a story (say:, pause:, show: steps).[/]"]
    total = len(v.steps)
    if v.done:
        verdict = "[b $success]PASSED[/]" if v.passed else "[b $error]FAILED[/]"
        where = f"[b]{escape(v.title)}[/]  finished: {verdict}"
    else:
        where = f"[b]{escape(v.title)}[/]  step {v.current}/{total}"
    lines = [where, ""]
    narration = v.narration
    if narration:
        lines.append(f"[b $foreground]{escape(narration)}[/]")
        lines.append("")
    step = v.step
    if step is not None and not v.done and not (step.say and step.label.rstrip("…") in step.say):
        lines.append(f"[$accent]▶ {escape(step.label)}[/]")
    if v.waiting:
        hint = "  (space: go on, a: run on without pauses)" if keys else ""
        lines.append(f"[b reverse $warning] waiting for the presenter [/][$text-muted]{hint}[/]")
    nxt = v.next_step
    if nxt is not None and not v.done:
        lines.append(f"[$text-muted]next: {escape(nxt.label)}{' (pauses)' if nxt.pause else ''}[/]")
    if v.hypotheses:
        lines.append("")
        lines += [_hyp_line(h) for h in v.hypotheses]
    if keys:
        lines.append("[$text-muted]v projector layout · f quiet events · ? every key[/]")
    return lines


class StoryPanel(Static):
    def __init__(self, keys: bool = True, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.keys = keys
        self._text = ""

    @property
    def text(self) -> str:
        return self._text

    def show(self, v: StoryView | None) -> None:
        text = "\n".join(story_lines(v, keys=self.keys))
        if text != self._text:
            self._text = text
            self.update(Content.from_markup(text))
