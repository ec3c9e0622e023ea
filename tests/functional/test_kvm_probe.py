"""The KVM probe against the real QEMU and a real kernel. Seconds, no VMs left behind.

The verdict is cached per host (host-facts.json in the halab cache), so only the first run on a
host pays the probe's deadline; the kernel is fetched once into the cache as well.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from halab.lab import accel
from halab.lab.config import parse_config

pytestmark = pytest.mark.skipif(shutil.which(accel.QEMU) is None, reason="QEMU not installed")


@pytest.fixture(scope="module")
def kernel() -> Path:
    try:
        return accel.probe_kernel()
    except accel.ProbeKernelError as exc:
        pytest.skip(f"no kernel to probe with: {exc}")


def test_real_kernel_reaches_the_panic_under_tcg(kernel, tmp_path):
    """The success path on real console output: the same command with KVM swapped for TCG must be
    recognised as "booted" (a working KVM prints exactly this, only faster)."""
    wrapper = tmp_path / "qemu-tcg"
    wrapper.write_text(f'#!/bin/sh\nfor a; do shift; [ "$a" = kvm ] && a=tcg; set -- "$@" "$a"; done\n'
                       f'exec {shutil.which(accel.QEMU)} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    device = tmp_path / "kvm"
    device.write_text("")
    v = accel.run_probe(kernel, qemu=str(wrapper), deadline_s=15, device=str(device))
    assert v.usable, v.output_tail
    assert "VFS: Unable to mount root fs" in v.output_tail or "Kernel panic" in v.output_tail


def expected_accel() -> str:
    """What this host must get, from facts the probe never reads: $HALAB_EXPECT_ACCEL for a host
    known otherwise; no KVM device: tcg; a CPU that shows no hardware virtualisation (no vmx/svm
    flag, as in the nested guests this project's machines are, where /dev/kvm exists and a guest
    kernel hangs): tcg; else kvm."""
    forced = os.environ.get("HALAB_EXPECT_ACCEL")
    if forced:
        return forced
    if not Path(accel.KVM_DEVICE).exists():
        return "tcg"
    flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    return "kvm" if flags & {"vmx", "svm"} else "tcg"


def test_this_host_gets_a_verdict_quickly(kernel):
    want = expected_accel()
    started = time.monotonic()
    v = accel.kvm_verdict()
    took = time.monotonic() - started
    assert took < accel.PROBE_DEADLINE_S + 5
    assert v.accel == want, f"{v.reason} (expected {want}; set HALAB_EXPECT_ACCEL if this host differs)"
    if want == "kvm":
        assert v.kind == "ok" and v.usable
    elif Path(accel.KVM_DEVICE).exists():
        assert v.kind in {"hung", "failed", "no-permission"} and not v.usable, v.kind
    else:
        assert v.kind == "no-device"
    assert accel.resolve_accel(parse_config("", host_mem_mib=1 << 20)) == v.accel
    again = accel.kvm_verdict()
    assert again.cached and again.kind == v.kind
