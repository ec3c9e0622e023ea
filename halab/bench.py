"""`lab.py bench`: one run measuring `up` (its phases), failover detection and client impact for
each fault (kill an API node, the database, the broker) under each HAProxy preset, and `down` — as
one JSON document. Numbers, not pass/fail: a benchmark reports what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halab.config import HAPROXY_PRESETS, LabConfig
from halab.errors import HalabError
from halab.measure import LabHandles, MeasurePlan, run_measurement

# One of each role whose loss tells a different story: HAProxy routes around an API node; the
# default lab's single database is an outage; losing the broker stops writes, not reads.
BENCH_FAULTS: tuple[tuple[str, str], ...] = (("kill", "api-2"), ("kill", "db-1"), ("kill", "mq-1"))

Say = Callable[[str], None]


def bench_faults(cfg: LabConfig) -> list[tuple[str, str]]:
    """The benchmark's faults whose node this lab has."""
    names = {n.name for n in cfg.nodes()}
    return [(fault, node) for fault, node in BENCH_FAULTS if node in names]


def measure_matrix(
    cfg: LabConfig,
    handles_for: Callable[[LabConfig], LabHandles],
    install: Callable[[LabConfig], Any],
    faults: list[tuple[str, str]],
    presets: tuple[str, ...] = HAPROXY_PRESETS,
    plan: MeasurePlan | None = None,
    say: Say = lambda _m: None,
    measure: Callable[..., Any] = run_measurement,
) -> dict[str, Any]:
    """Every fault under every preset, on one running lab. A measurement that fails is recorded as
    a problem and the next one still runs; the lab's own preset is installed again at the end,
    whatever happened."""
    from halab.scenarios import with_preset

    failover: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    try:
        for preset in presets:
            pcfg = with_preset(cfg, preset)
            say(f"preset {preset}: installing haproxy.cfg")
            try:
                install(pcfg)
            except HalabError as exc:
                problems.append(f"{preset}: {exc}")
                continue
            for fault, node in faults:
                name = f"{fault} {node}"
                try:
                    r = measure(handles_for(pcfg), fault, node, plan or MeasurePlan(rate=cfg.traffic.rate),
                                progress=lambda m, p=preset, n=name: say(f"{p} {n}: {m}"))
                except HalabError as exc:
                    problems.append(f"{preset} {name}: {exc}")
                    continue
                failover.setdefault(preset, {})[name] = r.to_dict()
                say(f"{preset} {name}: {r.summary}")
    finally:
        try:
            install(cfg)
        except HalabError as exc:
            problems.append(f"putting back the lab's own preset {cfg.haproxy.preset}: {exc}")
    return {"failover": failover, "detection_ratio": detection_ratios(failover, presets),
            "problems": problems}


def detection_ratios(failover: dict[str, dict[str, Any]],
                     presets: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per fault: each preset's detection time over the first preset's (how much slower it saw)."""
    out: dict[str, dict[str, float]] = {}
    base = failover.get(presets[0], {})
    for name, row in base.items():
        b = row.get("detection_s")
        if not b:
            continue
        for preset in presets:
            v = failover.get(preset, {}).get(name, {}).get("detection_s")
            if v is not None:
                out.setdefault(name, {})[preset] = round(v / b, 2)
    return out


def run_bench(cfg: LabConfig, progress: Say | None = None, *, keep: bool = False,
              presets: tuple[str, ...] = HAPROXY_PRESETS, plan: MeasurePlan | None = None,
              timeline_path: str | Path | None = None) -> dict[str, Any]:
    """``timeline_path``: the whole run's events, traffic and requests as JSON Lines, to see why a
    number came out as it did."""
    from halab import lifecycle
    from halab.runtime import open_live_lab, ssh_runner
    from halab.scenarios import push_haproxy_config

    say = progress or (lambda _m: None)
    faults = bench_faults(cfg)
    out: dict[str, Any] = {"lab": cfg.name, "profile": cfg.profile, "started_at": time.time(),
                           "faults": [f"{f} {n}" for f, n in faults], "presets": list(presets),
                           "up": None, "failover": {}, "detection_ratio": {}, "down": None, "problems": []}
    t = time.monotonic()
    res = lifecycle.up(cfg, progress=lambda p: say(f"up {p.phase}: {p.message}"))
    out["up"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": res.phases_s, "accel": res.accel,
                 "terraform_changes": res.terraform_changes}
    try:
        with open_live_lab(cfg) as live:
            live.start_observing(traffic=True)
            run = ssh_runner(cfg, live.ssh)

            def handles_for(pcfg: LabConfig) -> LabHandles:
                handles = live.handles()
                handles.cfg = pcfg
                return handles

            try:
                out.update(measure_matrix(cfg, handles_for, lambda c: push_haproxy_config(c, run), faults,
                                          presets, plan, say))
            finally:
                if timeline_path is not None:
                    try:
                        live.timeline.write_jsonl(timeline_path)
                    except OSError as exc:  # the lab still goes down below
                        out["problems"].append(f"timeline not written to {timeline_path}: {exc}")
    except HalabError as exc:
        out["problems"].append(str(exc))
    if not keep:
        t = time.monotonic()
        phases = lifecycle.down(cfg, progress=lambda p: say(f"down {p.phase}: {p.message}"))
        out["down"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": phases}
    return out
