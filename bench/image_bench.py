#!/usr/bin/env python3
"""Base image benchmark: cold build seconds, warm (cache hit) seconds, image size. Prints JSON.

    .venv/bin/python bench/image_bench.py            # warm only (builds first if the cache is empty)
    .venv/bin/python bench/image_bench.py --cold     # cold build into a temporary $HALAB_CACHE too

Warm is measured twice: `ensure_image()` in this process, and `./lab.py image build` as a user runs
it (interpreter start-up and imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halab.lab import image  # noqa: E402
from halab.paths import cache_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="also time a cold build in a temporary cache")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache of --cold")
    args = ap.parse_args()

    tmp = None
    result: dict = {"recipe_hash": image.recipe_hash(), "host_cpus": os.cpu_count()}
    if args.cold:
        tmp = tempfile.mkdtemp(prefix="halab-image-bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
        os.environ["HALAB_CACHE"] = tmp
    try:
        t0 = time.monotonic()
        built = image.find_image() is None
        img = image.ensure_image()
        first = time.monotonic() - t0
        result["cold_build_seconds"] = round(first, 1) if built else None
        if built:
            result["phase_seconds"] = img.manifest.get("phase_seconds")

        t0 = time.monotonic()
        image.ensure_image()
        result["warm_seconds"] = round(time.monotonic() - t0, 4)

        t0 = time.monotonic()
        subprocess.run([sys.executable, str(ROOT / "lab.py"), "image", "build"], check=True,
                       stdout=subprocess.DEVNULL, env=os.environ.copy())
        result["warm_cli_seconds"] = round(time.monotonic() - t0, 2)

        sizes = img.manifest.get("sizes", {})
        result.update({
            "image_size_bytes": img.size_bytes,
            "disk_bytes": img.disk.stat().st_size,
            "kernel_bytes": img.kernel.stat().st_size,
            "initrd_bytes": img.initrd.stat().st_size,
            "rootfs_bytes": sizes.get("rootfs_bytes"),
            "filesystem_bytes": sizes.get("filesystem_bytes"),
            "packages": len(img.manifest.get("packages", {})),
            "cache": str(cache_dir()),
        })
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
