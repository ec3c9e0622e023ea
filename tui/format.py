"""Pure formatting of the session's view into text (no widgets here, easy to test)."""

from __future__ import annotations

from datetime import datetime, tzinfo

from textual.markup import escape

from halab.live.session import EventView, FailoverView, LabSnapshot, NodeView

FOLLOW_UP_S = 300.0  # events this soon after a fault are shown as "+x.x s" after it


def clock(t: float, tz: tzinfo | None, millis: bool = True) -> str:
    dt = datetime.fromtimestamp(t, tz)
    return dt.strftime("%H:%M:%S") + (f".{dt.microsecond // 1000:03d}" if millis else "")


STORY_WORDS = ("HAProxy", "detect", "recover", "step ", "scenario", "presenter", "VIP", "preset", "reset")


def story_events(events: tuple[EventView, ...]) -> tuple[EventView, ...]:
    """Only the events that change the story: what was done to the lab (faults, traffic, steps),
    failed actions, HAProxy's verdicts, detection and recovery; health flaps are left out."""
    return tuple(e for e in events if e.kind in ("fault", "error")
                 or any(w in e.text for w in STORY_WORDS))


def event_lines(events: tuple[EventView, ...], tz: tzinfo | None) -> list[str]:
    """Timeline lines as Content markup: faults in bold with their time; what followed as
    "+1.4 s" after the fault."""
    out: list[str] = []
    last_fault: float | None = None
    for ev in events:
        when = clock(ev.t, tz)
        text = escape(ev.text)
        if ev.kind == "fault":
            last_fault = ev.t
            out.append(f"[$text-muted]{when}[/] [b $warning]{text}[/]")
            continue
        style = {"error": "$error", "probe": "$accent", "traffic": "$foreground"}.get(ev.kind, "$foreground")
        if last_fault is not None and 0 <= ev.t - last_fault <= FOLLOW_UP_S:
            delta = f"+{ev.t - last_fault:.1f} s"
            out.append(f"[$text-muted]{when}[/] [$text-muted]{delta:>8}[/] [{style}]{text}[/]")
        else:
            out.append(f"[$text-muted]{when}[/] [{style}]{text}[/]")
    return out


STATE_STYLE = {"running": "$success", "paused": "$warning", "shut off": "$error", "crashed": "$error",
               "missing": "$text-muted", "unknown": "$text-muted"}
HEALTH_STYLE = {"ok": "$success", "degraded": "$warning", "down": "$error", "host key mismatch": "$error"}
BACKEND_STYLE = {"UP": "$success", "DOWN": "$error", "MAINT": "$warning", "NOLB": "$warning",
                 "DRAIN": "$warning"}


def styled(value: str, table: dict[str, str]) -> str:
    style = table.get(value) or table.get(value.split(" ")[0], "$text-muted")
    return f"[{style}]{escape(value)}[/]"


def share(n: NodeView) -> str:
    if n.share is None:
        return "[$text-muted]—[/]"
    pct = round(n.share * 100)
    return f"[{'$text-muted' if pct == 0 else '$foreground'}]{pct:>3d}%[/]"


def faults(n: NodeView) -> str:
    return f"[b $error]{escape(', '.join(n.faults))}[/]" if n.faults else ""


def failover_lines(fo: FailoverView | None, expected: float | None) -> list[str]:
    """Measured next to expected, narrow enough for a 28-column panel."""
    exp = f"{expected:.2f} s" if expected is not None else "?"
    if fo is None:
        return ["[$text-muted]none measured yet[/]", f"expected detection ≤ [b]{exp}[/]",
                "[$text-muted]inter + (fall-1) x fastinter[/]"]
    det = "…" if fo.detection_s is None else f"{fo.detection_s:.2f} s"
    exp_fo = fo.expected_detection_s if fo.expected_detection_s is not None else expected
    exp_s = f"≤{exp_fo:.2f}" if exp_fo is not None else "?"
    slow = fo.detection_s is not None and exp_fo is not None and fo.detection_s > exp_fo + 0.5
    failed = fo.failed_reads + fo.failed_writes + fo.failed_pages
    lat = "—" if fo.max_latency_ms is None else f"{fo.max_latency_ms:.0f} ms"
    rec = "…" if fo.recovery_s is None else f"{fo.recovery_s:.1f} s"
    return [
        f"[b]{escape(fo.fault)} {escape(fo.node)}[/]" + ("" if fo.complete else " [$text-muted]measuring[/]"),
        f"detect  [b {'$error' if slow else '$success'}]{det}[/] [$text-muted]exp {exp_s}[/]",
        f"failed  [b {'$error' if failed else '$success'}]r{fo.failed_reads} w{fo.failed_writes} "
        f"p{fo.failed_pages}[/]",
        f"errors  [b]{fo.error_window_s:.1f} s[/] window",
        f"max lat [b]{lat}[/]",
        f"recover [b]{rec}[/]",
    ]


def status_line(s: LabSnapshot, tz: tzinfo | None) -> str:
    tr = s.traffic
    if not tr.available:
        traffic = "[$text-muted]traffic n/a[/]"
    elif tr.running:
        traffic = f"[b $success]▶ {tr.rate:g} ops/s[/]"
    else:
        traffic = f"[$text-muted]■ traffic off ({tr.rate:g}/s)[/]"
    last = s.series[-1] if s.series else None
    figures = ""
    if last is not None:
        err = f"[b $error]{last.errors} err[/]" if last.errors else "[$success]0 err[/]"
        figures = f" · {last.ok} ok {err}"
    return (f"[b]{escape(s.lab)}[/] ({escape(s.profile)}) · VIP {s.vip} · {traffic}"
            f"{figures} · {clock(s.taken_at, tz, millis=False)}")


_VAR = __import__("re").compile(r"\$[a-z][a-z-]*")


def theme_styles(variables: dict[str, str]) -> dict[str, str]:
    """Theme variables usable in a Rich style (for widgets that render Rich text, like DataTable)."""
    out = {f"${k}": v for k, v in variables.items() if isinstance(v, str) and v.startswith("#")}
    out["$text-muted"] = "dim"
    out["$foreground"] = "default"
    return out


def to_rich(markup: str, styles: dict[str, str]):
    """Our Content markup as a Rich Text, with theme variables resolved from ``styles``."""
    from rich.text import Text

    return Text.from_markup(_VAR.sub(lambda m: styles.get(m.group(0), "default"), markup))
