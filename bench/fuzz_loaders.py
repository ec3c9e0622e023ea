#!/usr/bin/env python3
"""Issue 15's acceptance run: 10,000 generated lab files and 4,000 generated scenarios, each written
to a file and loaded the way the CLI loads it; counts tracebacks (any exception but ConfigError) and
checks that every refusal names its file and line. Prints JSON; exit 1 on any traceback.

    .venv/bin/python bench/fuzz_loaders.py [--labs 10000] [--scenarios 4000] [--seed 15]

The documents come from tests/support/yaml_fuzz.py (explicit tags, integers of thousands of digits,
control characters, ~user and over-long paths, NaN/inf, program-running libvirt URIs, aliases, deep
nesting, random splices), the same strategies the default-tier property tests draw a few hundred from.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from halab.chaos.scenario import load_scenario  # noqa: E402
from halab.errors import ConfigError  # noqa: E402
from halab.lab.config import load_config  # noqa: E402
from tests.support.yaml_fuzz import lab_texts, scenario_texts  # noqa: E402


def run(kind: str, strategy, count: int, loader, workdir: Path, rng_seed: int) -> dict:
    stats: Counter[str] = Counter()
    tracebacks: list[str] = []
    unlocated: list[str] = []
    n = [0]

    @seed(rng_seed)
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(text: str) -> None:
        n[0] += 1
        path = workdir / f"{kind}-{n[0]:05d}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        located = re.compile(rf"^{re.escape(str(path))}:\d+: \S")
        try:
            loader(path)
            stats["accepted"] += 1
        except ConfigError as exc:
            stats["refused"] += 1
            if exc.errors and all(located.match(e) for e in exc.errors):
                stats["refused, every message file:line"] += 1
            elif exc.errors and all(e.startswith(f"{path}: ") for e in exc.errors):
                stats["refused as a whole file (size, encoding)"] += 1
            else:
                unlocated.append(exc.errors[0][:300] if exc.errors else "(no message)")
            stats["messages"] += len(exc.errors)
            stats["longest message"] = max(stats["longest message"], *(len(e) for e in exc.errors))
        except BaseException:  # what is being counted
            stats["traceback"] += 1
            tracebacks.append(f"{path}:\n{traceback.format_exc()[-1500:]}")
        finally:
            if not tracebacks or not tracebacks[-1].startswith(str(path)):
                path.unlink()

    start = time.monotonic()
    one()
    return {"files": n[0], "seconds": round(time.monotonic() - start, 1), **stats,
            "tracebacks": tracebacks[:5], "unlocated": unlocated[:5]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labs", type=int, default=10_000)
    ap.add_argument("--scenarios", type=int, default=4_000)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="halab-fuzz-") as tmp:
        w = Path(tmp)
        out = {
            "lab_files": run("lab", lab_texts, args.labs, load_config, w, args.seed),
            "scenarios": run("scenario", scenario_texts, args.scenarios, load_scenario, w, args.seed),
        }
    print(json.dumps(out, indent=2))
    bad = sum(r.get("traceback", 0) + len(r["unlocated"]) for r in out.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
