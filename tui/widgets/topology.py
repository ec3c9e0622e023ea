"""The lab by role: HAProxy → API (N) → DB / MQ, one row per node, the cursor selects the node."""

from __future__ import annotations

from textual.widgets import DataTable

from halab.live.session import LabSnapshot
from tui import format as fmt

ROLE_LABEL = {"haproxy": "HAProxy", "api": "→ API", "db": "→ DB", "mq": "→ MQ"}
# Fixed widths: the table never jumps as values change, and fits 80 columns.
COLUMNS = (("#", "num", 2), ("tier", "tier", 7), ("node", "node", 9), ("libvirt", "state", 8),
           ("health", "health", 8), ("HAProxy", "backend", 7), ("share", "share", 5),
           ("faults", "faults", 16))


def topology_title(s: LabSnapshot) -> str:
    counts: dict[str, int] = {}
    for n in s.nodes:
        counts[n.role] = counts.get(n.role, 0) + 1
    part = {r: f"{ROLE_LABEL[r].lstrip('→ ')} \u00d7{c}" if c > 1 else ROLE_LABEL[r].lstrip("→ ")
            for r, c in counts.items()}
    return f"{part.get('haproxy', 'HAProxy')} → {part.get('api', 'API')} → {part.get('db', 'DB')} / " \
           f"{part.get('mq', 'MQ')}"


class Topology(DataTable):
    """Node table; updates cells in place so the cursor (the selected node) never jumps."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._rows: tuple[str, ...] = ()
        self._last: dict[str, tuple[str, ...]] = {}
        self._styles: dict[str, str] = {}

    def on_mount(self) -> None:
        for label, key, width in COLUMNS:
            self.add_column(label, key=key, width=width)
        self._styles = fmt.theme_styles(self.app.theme_variables)
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, _theme: object) -> None:
        self._styles = fmt.theme_styles(self.app.theme_variables)
        self._last.clear()
        if self.app.snapshot is not None:
            self.show(self.app.snapshot)

    @property
    def selected(self) -> str | None:
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= len(self._rows):
            return None
        return self._rows[self.cursor_row]

    def select_index(self, index: int) -> bool:
        if 0 <= index < len(self._rows):
            self.move_cursor(row=index)
            return True
        return False

    def show(self, s: LabSnapshot) -> None:
        names = tuple(n.name for n in s.nodes)
        if names != self._rows:
            keep = self.selected
            self.clear()
            self._last.clear()
            self._rows = names
            for i, n in enumerate(s.nodes):
                self.add_row(*([""] * len(COLUMNS)), key=n.name, label=None)
                del i
            if keep in names:
                self.move_cursor(row=names.index(keep))
        seen_roles: set[str] = set()
        for i, n in enumerate(s.nodes):
            tier = "" if n.role in seen_roles else ROLE_LABEL.get(n.role, n.role)
            seen_roles.add(n.role)
            cells = (
                f"[$text-muted]{i + 1}[/]" if i < 9 else "",
                f"[b]{tier}[/]",
                f"[b]{n.name}[/]" + (f" [$text-muted]@{n.host}[/]" if n.host else ""),
                fmt.styled(n.state, fmt.STATE_STYLE),
                fmt.styled(n.health, fmt.HEALTH_STYLE),
                fmt.styled(n.backend, fmt.BACKEND_STYLE),
                fmt.share(n),
                fmt.faults(n),
            )
            if self._last.get(n.name) == cells:
                continue
            old = self._last.get(n.name, ("",) * len(cells))
            for (_label, key, _width), new, prev in zip(COLUMNS, cells, old, strict=True):
                if new != prev:
                    self.update_cell(n.name, key, fmt.to_rich(new, self._styles))
            self._last[n.name] = cells
