"""Scenario reports: JSON, Markdown and one self-contained HTML page with an inline SVG chart.

Everything is drawn here from a ``ScenarioResult`` (so a saved JSON report renders again): no
JavaScript, no external stylesheet, no network. The chart shows operations/s that succeeded per kind,
errors per kind (bars), p50/p99 latency, faults, detection and recovery marks, step boundaries and
the moments hypotheses broke.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from halab.atomic import write_atomic
from halab.chaos.scenario import ScenarioResult, detection_ratio

KIND_COLOURS = {"reads": "#1f77b4", "writes": "#2ca02c", "pages": "#9467bd"}
ERROR_COLOURS = {"reads": "#d62728", "writes": "#ff7f0e", "pages": "#8c564b"}
MARK_COLOURS = {"fault": "#d62728", "undo": "#17becf", "detected": "#ff7f0e", "recovered": "#2ca02c",
                "broken": "#e377c2"}


def _num(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "-"
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
    return f"{text} {unit}".strip()


# ---- JSON -----------------------------------------------------------------------------------------


def render_json(result: ScenarioResult) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str) + "\n"


def read_json(path: str | Path) -> ScenarioResult:
    return ScenarioResult.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ---- tables (shared by Markdown and HTML) ---------------------------------------------------------

MEASURE_COLUMNS = ("fault", "preset", "detection", "expected", "failed r/w/p", "error window", "max latency",
                   "recovery")


def measure_rows(result: ScenarioResult) -> list[tuple[str, ...]]:
    rows = []
    for m in result.measurements:
        rows.append((
            f"{m['fault']} {m['node']} (t={_num(m.get('fault_at_rel'), 's', 1)})",
            str(m.get("preset", "")),
            _num(m.get("detection_s"), "s"),
            _num(m.get("expected_detection_s"), "s") if m.get("expected_detection_s") is not None
            else "- (" + str(m.get("expected_basis", "")) + ")",
            f"{m['failed_reads']}/{m['failed_writes']}/{m['failed_pages']}",
            _num(m.get("error_window_s"), "s"),
            _num(m.get("max_latency_ms"), "ms", 0),
            _num(m.get("recovery_s"), "s", 1),
        ))
    return rows


HYP_COLUMNS = ("hypothesis", "scope", "verdict", "value", "broken at", "why")


def hypothesis_rows(result: ScenarioResult) -> list[tuple[str, ...]]:
    return [(h.label if h.label == h.hypothesis else f"{h.label} ({h.hypothesis})", h.scope,
             "held" if h.held else "BROKEN", _num(h.value), _num(h.broken_at_s, "s", 1), h.reason)
            for h in result.hypotheses]


def _md_table(cols: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---- Markdown -------------------------------------------------------------------------------------


def render_markdown(result: ScenarioResult) -> str:
    r = result
    out = [f"# Scenario {r.scenario}: {'PASSED' if r.passed else 'FAILED'}", ""]
    if r.description:
        out += [r.description, ""]
    out += [f"Lab `{r.lab}`, profile `{r.profile}`, HAProxy preset `{r.preset}`, {r.duration_s:.1f} s "
            f"({r.source}).", ""]
    out += ["## Measured vs expected", ""]
    out += [_md_table(MEASURE_COLUMNS, measure_rows(r)) if r.measurements else "No fault was measured.", ""]
    out += ["## Hypotheses", "", _md_table(HYP_COLUMNS, hypothesis_rows(r)) if r.hypotheses
            else "No hypotheses apply to this profile.", ""]
    out += ["## Steps", "", _md_table(("#", "step", "from", "to", "ok", "detail"), [
        (str(s.index), s.label, _num(s.started_s, "s", 1), _num(s.ended_s, "s", 1), "yes" if s.ok else "NO",
         s.detail) for s in r.steps]), ""]
    if r.problems:
        out += ["## Problems", ""] + [f"- {p}" for p in r.problems] + [""]
    if r.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(out)


# ---- SVG ------------------------------------------------------------------------------------------


def render_svg(result: ScenarioResult, width: int = 960) -> str:
    """The timeline chart: operations/s (ok lines, error bars), latency, and marks."""
    r = result
    traffic = [p.to_dict() for p in r.traffic]  # the seconds' fields by name, per operation kind
    left, right, top = 56, 16, 28
    h1, gap, h2, bottom = 220, 34, 110, 40
    height = top + h1 + gap + h2 + bottom
    pw = width - left - right
    span = max(r.duration_s, max((p["t"] + 1 for p in traffic), default=1.0), 1.0)

    def x(t: float) -> float:
        return left + max(0.0, min(t, span)) / span * pw

    rates = [p[f"{k}_ok"] + p[f"{k}_err"] for p in traffic for k in ("reads", "writes", "pages")]
    ymax = max([1, *rates])
    lat = [p[k] for p in traffic for k in ("p50_ms", "p99_ms") if p.get(k) is not None]
    lmax = max([10.0, *lat])

    def y1(v: float) -> float:
        return top + h1 - v / ymax * h1

    y2top = top + h1 + gap

    def y2(v: float) -> float:
        return y2top + h2 - min(v, lmax) / lmax * h2

    e = html.escape
    s: list[str] = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
                    f'width="{width}" height="{height}" font-family="sans-serif" font-size="11" '
                    f'role="img" aria-label="timeline of scenario {e(r.scenario)}">',
                    f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']
    # axes and grids
    for frac in (0, 0.25, 0.5, 0.75, 1):
        yy = top + h1 - frac * h1
        s.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        s.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">{ymax * frac:.0f}</text>')
    for frac in (0, 0.5, 1):
        yy = y2top + h2 - frac * h2
        s.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        s.append(f'<text x="{left - 4}" y="{yy + 4:.1f}" text-anchor="end">{lmax * frac:.0f}</text>')
    s.append(f'<text x="{left}" y="{top - 10}" font-weight="bold">operations/s (lines: ok, bars: errors)'
             '</text>')
    s.append(f'<text x="{left}" y="{y2top - 8}" font-weight="bold">latency ms (p50 thin, p99 thick)</text>')
    step = max(1, int(span // 10) or 1)
    for t in range(0, int(span) + 1, step):
        s.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y2top + h2}" y2="{y2top + h2 + 4}" '
                 'stroke="#444"/>')
        s.append(f'<text x="{x(t):.1f}" y="{y2top + h2 + 16}" text-anchor="middle">{t}s</text>')
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{h1}" fill="none" stroke="#999"/>')
    s.append(f'<rect x="{left}" y="{y2top}" width="{pw}" height="{h2}" fill="none" stroke="#999"/>')
    # step boundaries
    for st in r.steps:
        s.append(f'<line class="step" x1="{x(st.started_s):.1f}" x2="{x(st.started_s):.1f}" y1="{top}" '
                 f'y2="{y2top + h2}" stroke="#ccc" stroke-dasharray="2,3"><title>step {st.index}: '
                 f'{e(st.label)}</title></line>')
    # error bars, stacked per second
    bw = max(1.0, pw / span * 0.8)
    for p in traffic:
        base = 0.0
        for k in ("reads", "writes", "pages"):
            n = p[f"{k}_err"]
            if n:
                s.append(f'<rect class="errors" x="{x(p["t"]):.1f}" y="{y1(base + n):.1f}" '
                         f'width="{bw:.1f}" '
                         f'height="{y1(base) - y1(base + n):.1f}" fill="{ERROR_COLOURS[k]}" opacity="0.8">'
                         f'<title>t={p["t"]:.0f}s {n} {k} failed</title></rect>')
                base += n
    # ok lines
    for k, colour in KIND_COLOURS.items():
        pts = " ".join(f"{x(p['t'] + 0.5):.1f},{y1(p[f'{k}_ok']):.1f}" for p in traffic)
        if pts:
            s.append(f'<polyline class="ok-{k}" points="{pts}" fill="none" stroke="{colour}" '
                     'stroke-width="1.5"/>')
    for key, w in (("p50_ms", 1), ("p99_ms", 2)):
        pts = " ".join(f"{x(p['t'] + 0.5):.1f},{y2(p[key]):.1f}" for p in traffic if p.get(key) is not None)
        if pts:
            s.append(f'<polyline class="latency" points="{pts}" fill="none" stroke="#555" '
                     f'stroke-width="{w}"/>')

    # marks
    def mark(t: float | None, kind: str, label: str) -> None:
        if t is None:
            return
        xx = x(t)
        s.append(f'<line class="mark-{kind}" x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{y2top + h2}" '
                 f'stroke="{MARK_COLOURS[kind]}" stroke-width="1.5" stroke-dasharray="6,3">'
                 f'<title>{e(label)} at {t:.2f} s</title></line>')
        s.append(f'<text x="{xx + 3:.1f}" y="{top + 12 + 12 * list(MARK_COLOURS).index(kind)}" '
                 f'fill="{MARK_COLOURS[kind]}">{e(label[:28])}</text>')

    for ev in r.events:
        if ev["kind"] == "fault":
            undo = ev["source"] in ("revive", "resume", "netrestore", "netem-clear", "start-service")
            mark(ev["t"], "undo" if undo else "fault", ev["message"])
    for m in r.measurements:
        mark(m.get("detected_at_rel"), "detected", f"detected {m['node']} {_num(m.get('detection_s'), 's')}")
        mark(m.get("recovered_at_rel"), "recovered", f"recovered {m['node']}")
    for hres in r.hypotheses:
        if not hres.held and hres.broken_at_s is not None:
            xx = x(hres.broken_at_s)
            s.append(f'<path class="broken" d="M{xx:.1f},{top + h1 - 2} l-6,-10 h12 z" '
                     f'fill="{MARK_COLOURS["broken"]}"><title>broken: {e(hres.label)} at '
                     f'{hres.broken_at_s:.1f} s: {e(hres.reason)}</title></path>')
    # legend
    lx = left
    ly = height - 8
    items = [(f"{k} ok", c, False) for k, c in KIND_COLOURS.items()]
    items += [(f"{k} errors", c, True) for k, c in ERROR_COLOURS.items()]
    items += [(k, c, False) for k, c in MARK_COLOURS.items()]
    for label, colour, box in items:
        if box:
            s.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        else:
            s.append(f'<line x1="{lx}" x2="{lx + 10}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                     'stroke-width="2"/>')
        s.append(f'<text x="{lx + 13}" y="{ly}">{e(label)}</text>')
        lx += 16 + 6.5 * len(label)
    s.append("</svg>")
    return "\n".join(s)


# ---- HTML -----------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 .pass { color: #2ca02c; } h1 .fail { color: #d62728; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.BROKEN, td.NO { color: #d62728; font-weight: bold; }
td.held { color: #2ca02c; } .meta { color: #555; } .side { display: flex; gap: 1em; flex-wrap: wrap; }
"""


def _html_table(cols: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"]
    for row in rows:
        cells = (f'<td class="{e(str(c))}">{e(str(c))}</td>' if c in ("held", "BROKEN", "NO")
                 else f"<td>{e(str(c))}</td>" for c in row)
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _section(result: ScenarioResult, heading: str = "h2") -> str:
    e = html.escape
    r = result
    parts = [f"<{heading}>Timeline</{heading}>", render_svg(r),
             f"<{heading}>Measured vs expected</{heading}>",
             _html_table(MEASURE_COLUMNS, measure_rows(r)) if r.measurements
             else "<p>No fault was measured.</p>",
             f"<{heading}>Hypotheses</{heading}>",
             _html_table(HYP_COLUMNS, hypothesis_rows(r)) if r.hypotheses else "<p>None apply.</p>",
             f"<{heading}>Steps</{heading}>",
             _html_table(("#", "step", "from", "to", "ok", "detail"),
                         [(str(s.index), s.label, _num(s.started_s, "s", 1), _num(s.ended_s, "s", 1),
                           "yes" if s.ok else "NO", s.detail) for s in r.steps])]
    if r.problems:
        parts += [f"<{heading}>Problems</{heading}>", "<ul>" + "".join(f"<li>{e(p)}</li>" for p in r.problems)
                  + "</ul>"]
    if r.notes:
        parts += [f"<{heading}>Notes</{heading}>", "<ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes)
                  + "</ul>"]
    return "\n".join(parts)


def render_html(result: ScenarioResult) -> str:
    e = html.escape
    r = result
    verdict = '<span class="pass">PASSED</span>' if r.passed else '<span class="fail">FAILED</span>'
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>halab scenario {e(r.scenario)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>Scenario {e(r.scenario)}: {verdict}</h1>\n<p>{e(r.description)}</p>\n"
            f"<p class=\"meta\">Lab {e(r.lab)}, profile {e(r.profile)}, HAProxy preset {e(r.preset)}, "
            f"{r.duration_s:.1f} s, from {e(r.source)}.</p>\n{_section(r)}\n</body></html>\n")


def write_report(result: ScenarioResult, directory: str | Path, stem: str | None = None) -> dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    base = stem or result.scenario
    out = {"json": d / f"{base}.json", "markdown": d / f"{base}.md", "html": d / f"{base}.html"}
    write_atomic(out["json"], render_json(result), 0o644)
    write_atomic(out["markdown"], render_markdown(result), 0o644)
    write_atomic(out["html"], render_html(result), 0o644)
    return out


# ---- comparison -----------------------------------------------------------------------------------


def comparison(results: dict[str, ScenarioResult]) -> dict[str, Any]:
    """Side by side, keyed by preset; the detection ratio is each preset's worst detection over the
    first preset's (e.g. kolla 10.1 s / fast 1.3 s = 7.8x)."""
    presets = list(results)
    first = results[presets[0]]
    rows = {}
    for p, r in results.items():
        ms = r.measurements
        det = [m["detection_s"] for m in ms if m.get("detection_s") is not None]
        rows[p] = {
            "passed": r.passed,
            "detection_s": max(det) if det else None,
            "expected_detection_s": max((m["expected_detection_s"] for m in ms
                                         if m.get("expected_detection_s") is not None), default=None),
            "failed_reads": sum(m["failed_reads"] for m in ms),
            "failed_writes": sum(m["failed_writes"] for m in ms),
            "failed_pages": sum(m["failed_pages"] for m in ms),
            "error_window_s": max((m["error_window_s"] for m in ms), default=None),
            "max_latency_ms": max((m["max_latency_ms"] for m in ms if m.get("max_latency_ms") is not None),
                                  default=None),
            "recovery_s": max((m["recovery_s"] for m in ms if m.get("recovery_s") is not None), default=None),
            "hypotheses_broken": [h.label for h in r.hypotheses if not h.held],
            "detection_ratio_vs_" + presets[0]: detection_ratio(first, r),
        }
    return {"scenario": first.scenario, "presets": presets, "baseline": presets[0], "rows": rows,
            "results": {p: r.to_dict() for p, r in results.items()}}


def _compare_table(cmp: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    presets = cmp["presets"]
    keys = [("passed", "verdict"), ("detection_s", "detection (s)"), ("expected_detection_s", "expected (s)"),
            (f"detection_ratio_vs_{cmp['baseline']}", f"detection ratio vs {cmp['baseline']}"),
            ("failed_reads", "failed reads"), ("failed_writes", "failed writes"),
            ("failed_pages", "failed pages"),
            ("error_window_s", "error window (s)"), ("max_latency_ms", "max latency (ms)"),
            ("recovery_s", "recovery (s)"), ("hypotheses_broken", "broken hypotheses")]
    rows = []
    for key, label in keys:
        cells = []
        for p in presets:
            v = cmp["rows"][p][key]
            if key == "passed":
                cells.append("held" if v else "BROKEN")
            elif isinstance(v, list):
                cells.append(", ".join(v) or "none")
            elif key.startswith("detection_ratio"):
                cells.append(f"{v:g}x" if v is not None else "-")
            else:
                cells.append(_num(v))
        rows.append((label, *cells))
    return ("", *presets), rows


def render_compare_markdown(cmp: dict[str, Any]) -> str:
    cols, rows = _compare_table(cmp)
    out = [f"# Scenario {cmp['scenario']}: presets {' vs '.join(cmp['presets'])}", "",
           _md_table(cols, rows), ""]
    for p in cmp["presets"]:
        out += [f"## Preset {p}", "", render_markdown(ScenarioResult.from_dict(cmp["results"][p]))
                .split("\n", 1)[1], ""]
    return "\n".join(out)


def render_compare_html(cmp: dict[str, Any]) -> str:
    e = html.escape
    cols, rows = _compare_table(cmp)
    body = [f"<h1>Scenario {e(cmp['scenario'])}: presets {e(' vs '.join(cmp['presets']))}</h1>",
            _html_table(cols, rows)]
    for p in cmp["presets"]:
        r = ScenarioResult.from_dict(cmp["results"][p])
        body += [f"<h2>Preset {e(p)}: {'PASSED' if r.passed else 'FAILED'}</h2>", _section(r, "h3")]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>halab compare {e(cmp['scenario'])}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_compare(cmp: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    base = f"{cmp['scenario']}-compare"
    out = {"json": d / f"{base}.json", "markdown": d / f"{base}.md", "html": d / f"{base}.html"}
    write_atomic(out["json"], json.dumps(cmp, indent=2, default=str) + "\n", 0o644)
    write_atomic(out["markdown"], render_compare_markdown(cmp), 0o644)
    write_atomic(out["html"], render_compare_html(cmp), 0o644)
    return out
