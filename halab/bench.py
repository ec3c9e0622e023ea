"""`lab.py bench`: one run measuring `up` (its phases), failover detection and client impact for
``kill api-2`` under each HAProxy preset, and `down` — as one JSON document."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from halab.config import HAPROXY_PRESETS, LabConfig
from halab.errors import HalabError
from halab.measure import MeasurePlan, run_measurement

BENCH_FAULT = ("kill", "api-2")


def run_bench(cfg: LabConfig, progress: Callable[[str], None] | None = None, *, keep: bool = False,
              presets: tuple[str, ...] = HAPROXY_PRESETS, plan: MeasurePlan | None = None) -> dict[str, Any]:
    from halab import lifecycle
    from halab.runtime import open_live_lab, ssh_runner
    from halab.scenarios import push_haproxy_config, with_preset

    say = progress or (lambda _m: None)
    fault, node = BENCH_FAULT
    out: dict[str, Any] = {"lab": cfg.name, "profile": cfg.profile, "started_at": time.time(),
                           "fault": f"{fault} {node}", "up": None, "failover": {}, "down": None,
                           "problems": []}
    t = time.monotonic()
    res = lifecycle.up(cfg, progress=lambda p: say(f"up {p.phase}: {p.message}"))
    out["up"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": res.phases_s, "accel": res.accel,
                 "terraform_changes": res.terraform_changes}
    try:
        with open_live_lab(cfg) as live:
            live.start_observing(traffic=True)
            run = ssh_runner(cfg, live.ssh)
            try:
                for preset in presets:
                    pcfg = with_preset(cfg, preset)
                    say(f"preset {preset}: installing haproxy.cfg")
                    push_haproxy_config(pcfg, run)
                    handles = live.handles()
                    handles.cfg = pcfg
                    r = run_measurement(handles, fault, node, plan or MeasurePlan(rate=cfg.traffic.rate),
                                        progress=lambda m, p=preset: say(f"{p}: {m}"))
                    out["failover"][preset] = r.to_dict()
                    say(f"{preset}: {r.summary}")
            finally:
                push_haproxy_config(cfg, run)
    except HalabError as exc:
        out["problems"].append(str(exc))
    dets = {p: d.get("detection_s") for p, d in out["failover"].items()}
    base = dets.get(presets[0])
    out["detection_ratio"] = {p: round(v / base, 2) for p, v in dets.items()
                              if v is not None and base}
    if not keep:
        t = time.monotonic()
        phases = lifecycle.down(cfg, progress=lambda p: say(f"down {p.phase}: {p.message}"))
        out["down"] = {"total_s": round(time.monotonic() - t, 1), "phases_s": phases}
    return out
