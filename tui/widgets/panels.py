"""Text panels: the status line, the event timeline, the last failover, the key bar."""

from __future__ import annotations

from datetime import tzinfo

from textual.containers import VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.widgets import Static

from halab.live.session import LabSnapshot
from tui import format as fmt
from tui.keys import KeySpec


class StatusLine(Static):
    def __init__(self, tz: tzinfo | None, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.tz = tz
        self._text = ""

    def show(self, s: LabSnapshot) -> None:
        text = fmt.status_line(s, self.tz)
        if s.problems:
            text += "\n" + "\n".join(f"[$warning]! {escape(p)}[/]" for p in s.problems)
        if text != self._text:
            self._text = text
            self.update(Content.from_markup(text))


class Timeline(VerticalScroll):
    """Events, newest at the bottom; follows the end unless the user scrolled up."""

    def __init__(self, tz: tzinfo | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tz = tz
        self._seq = -1
        self._body = Static("", id="timeline-body")
        self.quiet = False  # only the events that change the story
        self._last: LabSnapshot | None = None

    def set_quiet(self, on: bool) -> None:
        self.quiet = on
        self._seq = -1
        if self._last is not None:
            self.show(self._last)

    def compose(self):
        yield self._body

    @property
    def text(self) -> str:
        return str(self._body.render())

    def show(self, s: LabSnapshot) -> None:
        self._last = s
        seq = s.last_event_seq
        if seq == self._seq:
            return
        self._seq = seq
        follow = self.scroll_y >= self.max_scroll_y - 1
        events = fmt.story_events(s.events) if self.quiet else s.events
        lines = fmt.event_lines(events, self.tz) or ["[$text-muted]No events yet.[/]"]
        self._body.update(Content.from_markup("\n".join(lines)))
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)


class FailoverPanel(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._text = ""

    def show(self, s: LabSnapshot) -> None:
        text = "\n".join(fmt.failover_lines(s.failover, s.expected_detection_s))
        if text != self._text:
            self._text = text
            self.update(Content.from_markup(text))


class KeyBar(Static):
    """The footer: every key with a short label, wrapped to the width, each one clickable."""

    def __init__(self, specs: tuple[KeySpec, ...], **kwargs) -> None:
        super().__init__("", **kwargs)
        self.specs = specs

    def on_mount(self) -> None:
        parts = [f"[@click=screen.{s.action}][b $accent]{escape(s.shown)}[/] {escape(s.label)}[/]"
                 for s in self.specs]
        self.update(Content.from_markup("  ".join(parts)))


class ServersPanel(Static):
    """One server under both API views (a story's ``show: servers``), from the timeline's events:
    what the presenter read through the VIP, so viewers and replays show the same."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._text = ""

    def show(self, s: LabSnapshot) -> None:
        from tui.two_apis import latest

        views: list[str] = []
        verdict: list[str] = []
        for line in latest(s.events):
            head, sep, rest = line.partition(" → ")
            api, _, req = head.partition(" GET ")
            if sep and api in ("OpenStack", "EC2"):
                what, _, by = rest.removesuffix(")").rpartition(" (answered by ")
                views += [f"[b $accent]{escape(api)}[/]  [$text-muted]GET {escape(req)} · "
                          f"{escape(by or '?')} answered[/]", f"  {escape(what or rest)}"]
            else:
                verdict.append(f"[i]{escape(line)}[/]")
        out = verdict + views  # the verdict first: it stays in sight on a small panel
        text = "\n".join(out) or ("[$text-muted]Asking the lab for one server in both views "
                                  "(OpenStack /v2/servers and EC2 /ec2/instances)…[/]")
        if text != self._text:
            self._text = text
            self.update(Content.from_markup(text))
