"""The KVM probe against the real QEMU and a real kernel. Seconds, no VMs left behind.

The verdict is cached per host (host-facts.json in the halab cache), so only the first run on a
host pays the probe's deadline; the kernel is fetched once into the cache as well.
"""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import pytest

from halab import accel
from halab.config import parse_config

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


def test_this_host_gets_a_verdict_quickly(kernel):
    started = time.monotonic()
    v = accel.kvm_verdict()
    took = time.monotonic() - started
    assert v.kind in {"ok", "hung", "failed", "no-device", "no-permission"}
    assert took < accel.PROBE_DEADLINE_S + 5
    assert v.accel == ("kvm" if v.kind == "ok" else "tcg")
    assert accel.resolve_accel(parse_config("", host_mem_mib=1 << 20)) == v.accel
    again = accel.kvm_verdict()
    assert again.cached and again.kind == v.kind
