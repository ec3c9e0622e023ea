"""`lab.py bench`: one run measuring `up` (its phases), failover detection and client impact for
each fault (kill an API node, the database, the broker) under each HAProxy preset, and `down` — as
one JSON document. Numbers, not pass/fail: a benchmark reports what it measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halab.chaos.experiments import MeasurePlan, run_measurement
from halab.chaos.measure import LabHandles
from halab.errors import HalabError
from halab.lab.config import HAPROXY_PRESETS, LabConfig
from halab.live.engine import LabEngine
from halab.live.matrix import run_matrix

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
    """Every fault under every preset, on one running lab (the shared matrix runner). A measurement
    that fails is recorded as a problem and the next one still runs; the lab's own preset is
    installed again at the end, whatever happened."""
    by_name = {f"{fault} {node}": (fault, node) for fault, node in faults}

    def one(pcfg: LabConfig, name: str) -> Any:
        fault, node = by_name[name]
        preset = pcfg.haproxy.preset
        r = measure(handles_for(pcfg), fault, node, plan or MeasurePlan(rate=cfg.traffic.rate),
                    progress=lambda m: say(f"{preset} {name}: {m}"))
        say(f"{preset} {name}: {r.summary}")
        return r

    m = run_matrix(cfg, presets, list(by_name), one, install, say=say)
    failover = {p: {name: r.to_dict() for name, r in row.items()} for p, row in m.results.items()}
    return {"failover": failover, "detection_ratio": detection_ratios(failover, presets),
            "problems": m.problems}


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


def up_waves(cfg: LabConfig, accel: str, phases: dict[str, float]) -> list[dict[str, Any]]:
    """The cold up's boot by wave: which nodes, and how long each wave took to be ready."""
    from halab.lab.lifecycle import boot_waves

    waves = boot_waves(cfg, accel)
    if len(waves) == 1:
        return [{"nodes": waves[0], "boot_s": phases.get("boot")}]
    return [{"nodes": w, "boot_s": phases.get(f"boot wave {i}")} for i, w in enumerate(waves, 1)]


def measure_warm(cfg: LabConfig, up_s: float, say: Say) -> dict[str, Any]:
    """`checkpoint save`, `reset` to it, `stop` and `start` on the lab just brought up, and how
    many times faster a reset is than the cold `up` before it."""
    from halab.lab import checkpoint as warm

    out: dict[str, Any] = {}
    step = lambda st: say(f"warm {st.phase}: {st.message}")  # noqa: E731
    t = time.monotonic()
    info = warm.save_checkpoint(cfg, "bench", progress=step)
    out["checkpoint_save"] = {"total_s": round(time.monotonic() - t, 2), "phases_s": info.seconds,
                              "size_bytes": info.size_bytes}
    for label, fn in (("reset", lambda: warm.reset(cfg, "bench", progress=step)),
                      ("stop", lambda: warm.stop_lab(cfg, progress=step)),
                      ("start", lambda: warm.start_lab(cfg, progress=step))):
        t = time.monotonic()
        res = fn()
        row: dict[str, Any] = {"total_s": round(time.monotonic() - t, 2)}
        if isinstance(res, warm.RestoreResult):
            row.update(phases_s=res.seconds, healthy=res.healthy, problems=res.problems,
                       max_clock_offset_s=max((abs(v) for v in res.clock_offsets_s.values()), default=None))
        else:
            row["phases_s"] = res
        out[label] = row
        say(f"warm {label}: {row['total_s']:.1f} s")
    warm.delete_checkpoint(cfg, "bench")
    reset_s = out["reset"]["total_s"]
    out["cold_up_over_reset"] = round(up_s / reset_s, 1) if reset_s > 0 else None
    return out


def run_bench(cfg: LabConfig, progress: Say | None = None, *, keep: bool = False,
              presets: tuple[str, ...] = HAPROXY_PRESETS, plan: MeasurePlan | None = None,
              timeline_path: str | Path | None = None, warm: bool = True, failover: bool = True
              ) -> dict[str, Any]:
    """``timeline_path``: the whole run's events, traffic and requests as JSON Lines, to see why a
    number came out as it did. ``warm``: also checkpoint save, reset, stop and start (before the
    failover measurements, on the fresh lab)."""
    from halab.lab import lifecycle

    say = progress or (lambda _m: None)
    faults = bench_faults(cfg)
    out: dict[str, Any] = {"lab": cfg.name, "profile": cfg.profile, "started_at": time.time(),
                           "faults": [f"{f} {n}" for f, n in faults], "presets": list(presets),
                           "up": None, "failover": {}, "detection_ratio": {}, "down": None, "problems": []}
    t = time.monotonic()
    res = lifecycle.up(cfg, progress=lambda p: say(f"up {p.phase}: {p.message}"))
    out["up"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": res.phases_s, "accel": res.accel,
                 "terraform_changes": res.terraform_changes,
                 "waves": up_waves(cfg, res.accel, res.phases_s)}
    if warm:
        try:
            cold = res.phases_s.get("total", out["up"]["total_s"]) - res.phases_s.get("checkpoint", 0.0)
            out["warm"] = measure_warm(cfg, cold, say)
        except HalabError as exc:
            out["problems"].append(f"warm: {exc}")
    if failover:
        measured = _failover(cfg, faults, presets, plan, say, timeline_path)
        problems = out["problems"] + measured.pop("problems", [])
        out.update(measured, problems=problems)
    if not keep:
        t = time.monotonic()
        phases = lifecycle.down(cfg, progress=lambda p: say(f"down {p.phase}: {p.message}"))
        out["down"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": phases}
    return out


def _failover(cfg: LabConfig, faults: list[tuple[str, str]], presets: tuple[str, ...],
              plan: MeasurePlan | None, say: Say, timeline_path: str | Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {"problems": []}
    try:
        with LabEngine.open(cfg) as live:
            live.start_observing()
            try:
                matrix = measure_matrix(cfg, live.handles, live.install_haproxy, faults, presets, plan, say)
                out["problems"] += matrix.pop("problems", [])
                out.update(matrix)
            finally:
                if timeline_path is not None:
                    try:
                        live.timeline.write_jsonl(timeline_path)
                    except OSError as exc:  # the lab still goes down
                        out["problems"].append(f"timeline not written to {timeline_path}: {exc}")
    except HalabError as exc:
        out["problems"].append(str(exc))
    return out
