"""`lab.py doctor [--json] [--refresh]`: is this host ready for the lab?"""

from __future__ import annotations

import argparse
import sys
import time

from cli.common import config_from, print_json
from halab.lab.doctor import all_required_ok, chosen_accel, run_checks


def register(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check the host: terraform, libvirt, QEMU, KVM, disk, memory",
        description="Check that this host can run the lab. Every failed check prints its fix. "
        "KVM is judged by booting a kernel under it (cached per host). Exit status 1 when a "
        "required check fails; warnings (e.g. KVM unusable, TCG used) do not fail.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--refresh", action="store_true",
                   help="run the KVM probe again instead of using the cached verdict")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    started = time.monotonic()

    def progress(msg: str) -> None:
        if not args.json:
            print(f"… {msg}", file=sys.stderr, flush=True)

    checks = run_checks(cfg, refresh=args.refresh, progress=progress)
    ok = all_required_ok(checks)
    used = chosen_accel(checks, cfg)
    if args.json:
        print_json({"ok": ok, "accel": used, "elapsed_s": round(time.monotonic() - started, 2),
                    "checks": [c.to_dict() for c in checks]})
        return 0 if ok else 1
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"{mark}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            print(f"      {'':<{width}}  fix: {c.fix}")
    print(f"accelerator: {used.upper()}")
    if not ok:
        print("doctor: a required check failed (see the fixes above)", file=sys.stderr)
    return 0 if ok else 1
