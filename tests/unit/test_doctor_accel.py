"""The KVM probe and its cache, with fake QEMU / apt binaries: no real guest is booted here."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import types
from pathlib import Path

import pytest

from halab.lab import accel
from halab.lab.accel import KvmVerdict, ProbeKernelError
from halab.lab.config import parse_config


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HALAB_CACHE", str(d))
    return d


@pytest.fixture
def device(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    return str(dev)


# ---- run_probe against fake QEMUs --------------------------------------------------------------


def test_guest_that_panics_means_kvm_works(tmp_path, device):
    qemu = script(tmp_path / "qemu", 'echo "[ 0.9] VFS: Unable to mount root fs on unknown-block(0,0)"\n'
                                     'echo "[ 0.9] Kernel panic - not syncing: VFS"\nexit 0\n')
    v = accel.run_probe(tmp_path / "vmlinuz", qemu=str(qemu), deadline_s=5, device=device)
    assert v.usable and v.kind == "ok" and v.accel == "kvm"
    assert v.reason.startswith("KVM works (probe kernel booted in ")
    assert "Kernel panic" in v.output_tail


def test_hung_guest_is_killed_at_the_deadline(tmp_path, device):
    pidfile = tmp_path / "child.pid"
    # The fake QEMU starts a child (as a real one starts threads): the kill must reach the whole group.
    qemu = script(tmp_path / "qemu", f"echo Booting from ROM...\nsleep 60 & echo $! > {pidfile}\nwait\n")
    started = time.monotonic()
    v = accel.run_probe(tmp_path / "vmlinuz", qemu=str(qemu), deadline_s=0.5, device=device)
    took = time.monotonic() - started
    assert not v.usable and v.kind == "hung" and v.accel == "tcg"
    assert v.reason == "KVM unusable (guest kernel hung); using TCG"
    assert took < 5
    assert "Booting from ROM" in v.output_tail
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the probe left its guest running")


def test_qemu_failing_fast_is_reported(tmp_path, device):
    qemu = script(tmp_path / "qemu",
                  'echo "Could not access KVM kernel module: Permission denied" >&2\n'
                  'echo "qemu-system-x86_64: failed to initialize kvm: Permission denied" >&2\n'
                  "exit 1\n")
    v = accel.run_probe(tmp_path / "vmlinuz", qemu=str(qemu), deadline_s=5, device=device)
    assert not v.usable and v.kind == "failed"
    assert v.reason == ("KVM unusable (QEMU failed: qemu-system-x86_64: failed to initialize kvm: "
                        "Permission denied); using TCG")


def test_missing_device(tmp_path):
    v = accel.run_probe(tmp_path / "vmlinuz", qemu="true", device=str(tmp_path / "nokvm"))
    assert (v.usable, v.kind) == (False, "no-device")
    assert "does not exist" in v.reason and v.reason.endswith("using TCG")


def test_device_without_permission(tmp_path, device, monkeypatch):
    monkeypatch.setattr(accel.os, "access", lambda _p, _mode: False)  # root can open anything otherwise
    assert accel.kvm_device_state(device) == "no-permission"
    v = accel.run_probe(tmp_path / "vmlinuz", qemu="true", device=device)
    assert v.kind == "no-permission" and "permission" in v.reason


def test_missing_qemu(tmp_path, device):
    v = accel.run_probe(tmp_path / "vmlinuz", qemu=str(tmp_path / "no-qemu"), device=device)
    assert v.kind == "no-qemu" and not v.usable


def test_probe_argv_matches_the_design():
    argv = accel.probe_argv(Path("/k"), "qemu")
    assert argv[:5] == ["qemu", "-accel", "kvm", "-kernel", "/k"]
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert "-no-reboot" in argv and argv[argv.index("-m") + 1] == "256"


# ---- the cache ---------------------------------------------------------------------------------

KEY = {"kernel_release": "6.1.0-test", "qemu_version": "QEMU emulator version 7.2", "kvm_device": "present"}
HUNG = KvmVerdict(False, "KVM unusable (guest kernel hung); using TCG", "hung", 10.0, "/k", "tail")


@pytest.fixture
def fake_probe(monkeypatch, cache):
    calls = []
    key = dict(KEY)
    monkeypatch.setattr(accel, "host_key", lambda *a, **k: dict(key))
    monkeypatch.setattr(accel, "probe_kernel", lambda progress=None: Path("/k"))

    def run(kernel, **_kw):
        calls.append(kernel)
        return HUNG

    monkeypatch.setattr(accel, "run_probe", run)
    return types.SimpleNamespace(calls=calls, key=key)


def test_verdict_is_probed_once_then_cached(fake_probe, cache):
    first = accel.kvm_verdict()
    assert first == HUNG and not first.cached
    second = accel.kvm_verdict()
    assert second.cached and second.reason == HUNG.reason and second.accel == "tcg"
    assert len(fake_probe.calls) == 1
    facts = json.loads((cache / "host-facts.json").read_text())
    assert facts["kvm"]["key"] == KEY and facts["kvm"]["verdict"]["kind"] == "hung"


def test_host_change_or_refresh_probes_again(fake_probe):
    accel.kvm_verdict()
    fake_probe.key["qemu_version"] = "QEMU emulator version 8.0"
    accel.kvm_verdict()
    accel.kvm_verdict(refresh=True)
    assert len(fake_probe.calls) == 3


@pytest.mark.parametrize("content", ["not json", "[]", '{"kvm": {"key": 1}}',
                                     json.dumps({"kvm": {"key": KEY, "verdict": {"usable": True}}})])
def test_corrupt_cache_means_probe_again(fake_probe, cache, content):
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "host-facts.json").write_text(content)
    assert not accel.kvm_verdict().cached
    assert len(fake_probe.calls) == 1


def test_other_host_facts_are_kept(fake_probe, cache):
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "host-facts.json").write_text('{"other": 1}')
    accel.kvm_verdict()
    assert json.loads((cache / "host-facts.json").read_text())["other"] == 1


def test_no_device_needs_no_kernel(monkeypatch, cache):
    monkeypatch.setattr(accel, "host_key", lambda *a, **k: {**KEY, "kvm_device": "absent"})

    def no_kernel(progress=None):
        raise AssertionError("no kernel should be fetched without /dev/kvm")

    monkeypatch.setattr(accel, "probe_kernel", no_kernel)
    v = accel.kvm_verdict()
    assert v.kind == "no-device" and not v.usable
    assert accel.kvm_verdict().cached


@pytest.mark.parametrize("setting,expected", [("kvm", "kvm"), ("tcg", "tcg")])
def test_resolve_accel_obeys_the_config(setting, expected, monkeypatch):
    monkeypatch.setattr(accel, "kvm_verdict", lambda **k: pytest.fail("no probe when the config decides"))
    cfg = parse_config(f"accel: {setting}\n", host_mem_mib=1 << 20)
    assert accel.resolve_accel(cfg) == expected


def test_resolve_accel_auto_uses_the_probe(fake_probe):
    cfg = parse_config("", host_mem_mib=1 << 20)
    assert accel.resolve_accel(cfg) == "tcg"
    assert accel.resolve_accel(cfg) == "tcg"
    assert len(fake_probe.calls) == 1


def test_resolve_accel_auto_without_kernel_is_tcg(monkeypatch, cache):
    def fail(**_k):
        raise ProbeKernelError("offline")

    monkeypatch.setattr(accel, "kvm_verdict", fail)
    assert accel.resolve_accel(parse_config("", host_mem_mib=1 << 20)) == "tcg"


# ---- where the probe kernel comes from ----------------------------------------------------------


def test_image_kernel_preferred(monkeypatch, tmp_path):
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"k")
    fake = types.ModuleType("halab.lab.image")
    fake.find_image = lambda: types.SimpleNamespace(kernel=k)
    monkeypatch.setitem(sys.modules, "halab.lab.image", fake)
    monkeypatch.setattr(accel, "fetch_probe_kernel", lambda **k: pytest.fail("must not fetch"))
    assert accel.probe_kernel() == k


@pytest.mark.parametrize("module", [None, "no-image", "no-find"])
def test_fetch_when_no_image(monkeypatch, tmp_path, module):
    if module is None:
        monkeypatch.setitem(sys.modules, "halab.lab.image", None)  # import raises ImportError
    else:
        fake = types.ModuleType("halab.lab.image")
        if module == "no-image":
            fake.find_image = lambda: None
        monkeypatch.setitem(sys.modules, "halab.lab.image", fake)
    monkeypatch.setattr(accel, "fetch_probe_kernel", lambda progress=None: tmp_path / "fetched")
    assert accel.probe_kernel() == tmp_path / "fetched"


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    script(bin_dir / "apt-cache", f'echo "apt-cache $*" >> {log}\necho "linux-image-cloud-amd64"\n'
                                  'echo "  Depends: linux-image-6.1.0-99-cloud-amd64"\n')
    script(bin_dir / "apt-get",
           f'echo "apt-get $*" >> {log}\necho deb > linux-image-6.1.0-99-cloud-amd64_1_amd64.deb\n')
    script(bin_dir / "dpkg-deb", f'echo "dpkg-deb $*" >> {log}\nmkdir -p "$3/boot" "$3/lib/modules"\n'
                                 'echo KERNEL > "$3/boot/vmlinuz-6.1.0-99-cloud-amd64"\n'
                                 'echo MAP > "$3/boot/System.map-6.1.0-99-cloud-amd64"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def test_fetch_probe_kernel_keeps_only_vmlinuz(fake_apt, tmp_path):
    dest = tmp_path / "probe-kernel"
    messages: list[str] = []
    k = accel.fetch_probe_kernel(dest, progress=messages.append)
    assert k == dest / "vmlinuz" and k.read_text() == "KERNEL\n"
    assert sorted(p.name for p in dest.iterdir()) == ["release", "vmlinuz"]
    assert (dest / "release").read_text() == "6.1.0-99-cloud-amd64\n"
    log = fake_apt.read_text()
    assert "apt-cache depends linux-image-cloud-amd64" in log
    assert "apt-get download -q linux-image-6.1.0-99-cloud-amd64" in log
    assert messages == ["fetching linux-image-6.1.0-99-cloud-amd64 for the KVM probe (once)"]
    # Second call: already there, nothing run.
    fake_apt.write_text("")
    assert accel.fetch_probe_kernel(dest) == k
    assert fake_apt.read_text() == ""


def test_unknown_kernel_package_is_a_clear_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir / "apt-cache", 'echo "E: No packages found" >&2\nexit 0\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(ProbeKernelError, match="apt-cache does not know linux-image-cloud-amd64"):
        accel.fetch_probe_kernel(tmp_path / "pk")


def test_download_failure_is_a_clear_error(fake_apt, tmp_path):
    script(Path(str(fake_apt.parent / "bin" / "apt-get")), 'echo "E: Failed to fetch" >&2\nexit 100\n')
    with pytest.raises(ProbeKernelError, match=r"apt-get download linux-image-6\.1\.0-99-cloud-amd64 failed"):
        accel.fetch_probe_kernel(tmp_path / "pk")
    assert not (tmp_path / "pk" / "vmlinuz").exists()


def test_host_key_fields(tmp_path):
    key = accel.host_key(qemu=str(tmp_path / "no-qemu"), device=str(tmp_path / "nokvm"))
    assert key["qemu_version"] == "none" and key["kvm_device"] == "absent"
    assert key["kernel_release"] == os.uname().release
