#!/usr/bin/env python3
"""Traffic generator benchmark: can it keep an open-loop schedule at 200 requests/s on this host?

Runs the fake lab API (tests/support/fake_api.py) in a separate process on 127.0.0.1, so the CPU
figure is the generator's alone, and prints JSON: per run the target rate, achieved operation and
HTTP-call rates, schedule lag (how late operations started versus their slot), latency, errors and
the generator's CPU as a fraction of one core.

"200 requests/s" is measured both ways: 200 operations/s (reads, writes and 8-call page loads, so
~2.4 HTTP calls per operation) and 200 HTTP calls/s.

    .venv/bin/python bench/traffic_bench.py [--seconds 10] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halab.lab.config import TrafficSettings  # noqa: E402
from halab.observe.timeline import Timeline, percentile  # noqa: E402
from halab.observe.traffic import TrafficGenerator  # noqa: E402
from tests.support.fake_api import fake_api_process  # noqa: E402


def run_once(port: int, rate: float, seconds: float, settings: TrafficSettings) -> dict:
    tl = Timeline()
    gen = TrafficGenerator("127.0.0.1", port, settings, tl.add_request, rate=rate)
    cpu0, t0 = time.process_time(), time.monotonic()
    gen.start()
    time.sleep(seconds)
    scheduled = gen.stats().scheduled
    gen.stop()
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    recs = tl.requests()
    lags = [r.lag_ms for r in recs]
    lat = [r.latency_ms for r in recs]
    span = (max(r.scheduled for r in recs) - min(r.scheduled for r in recs)) if len(recs) > 1 else 0
    return {
        "target_ops_per_s": rate,
        "seconds": seconds,
        "scheduled": scheduled,
        "completed": len(recs),
        "achieved_ops_per_s": round((len(recs) - 1) / span, 1) if span else None,
        "http_calls_per_s": round(gen.stats().http_calls / elapsed, 1),
        "errors": sum(not r.ok for r in recs),
        "lag_ms": {"p50": round(percentile(lags, 50), 2), "p99": round(percentile(lags, 99), 2),
                   "max": round(max(lags), 2)},
        "latency_ms": {"p50": round(percentile(lat, 50), 2), "p99": round(percentile(lat, 99), 2)},
        "generator_cpu_core_fraction": round(cpu / elapsed, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args()
    settings = TrafficSettings()
    calls_per_op = settings.read_share + settings.write_share + settings.page_share * settings.page_calls
    with fake_api_process() as port:
        runs = [run_once(port, args.rate, args.seconds, settings),
                run_once(port, round(args.rate / calls_per_op, 1), args.seconds, settings)]
    print(json.dumps({"host_cpus": os.cpu_count(), "http_calls_per_op": calls_per_op, "runs": runs},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
