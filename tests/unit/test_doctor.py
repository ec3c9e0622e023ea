"""`doctor`'s checks with fake tools on PATH, libvirt's test driver and a broken URI."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from halab.lab import doctor
from halab.lab.accel import KvmVerdict, ProbeKernelError
from halab.lab.config import parse_config
from halab.lab.doctor import Check

BIG_HOST = 1 << 20


def cfg_of(text: str = ""):
    return parse_config(text, host_mem_mib=BIG_HOST)


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def only_bin(tmp_path, monkeypatch):
    """PATH holding only a fresh directory (plus /bin for the shell scripts' own `echo`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}")
    return bin_dir


# ---- terraform ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version,ok",
                         [("1.11.4", True), ("1.6.0", True), ("1.5.7", False), ("0.14.0", False)])
def test_terraform_version(only_bin, version, ok):
    fake_tool(only_bin, "terraform", f'echo \'{{"terraform_version": "{version}"}}\'\n')
    c = doctor.check_terraform()
    assert c.ok is ok and c.required
    assert version in c.detail
    assert ("install Terraform >= 1.6" in c.fix) is not ok


def test_terraform_missing(only_bin):
    c = doctor.check_terraform()
    assert not c.ok and c.detail == "terraform is not on PATH" and "Terraform >= 1.6" in c.fix


def test_terraform_old_text_output(only_bin):
    fake_tool(only_bin, "terraform", 'echo "Terraform v1.3.0"\nexit 1\n')
    c = doctor.check_terraform()
    assert not c.ok and "1.3.0" in c.detail


@pytest.mark.parametrize("text,expected", [("v1.6.2", (1, 6, 2)), ("QEMU 7.2", (7, 2)), ("none", None)])
def test_parse_version(text, expected):
    assert doctor.parse_version(text) == expected


# ---- libvirt -----------------------------------------------------------------------------------


def test_libvirt_test_driver_connects():
    c = doctor.check_libvirt("test:///default")
    assert c.ok and c.detail.startswith("connected to test:///default (TEST, libvirt ")


def test_libvirt_unreachable_says_how_to_start_it(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "_no_init_system", lambda: True)
    c = doctor.check_libvirt(f"qemu:///system?socket={tmp_path}/nope.sock")
    assert not c.ok and c.required
    assert c.detail.startswith("cannot connect to qemu:///system")
    assert "virtlogd -d && libvirtd -d" in c.fix


def test_libvirt_fix_with_systemd(monkeypatch):
    monkeypatch.setattr(doctor, "_no_init_system", lambda: False)
    assert "systemctl start libvirtd" in doctor.libvirt_fix("qemu:///system")


def test_libvirt_deadline(monkeypatch):
    import libvirt

    release = threading.Event()

    def stuck(_uri):
        release.wait(10)
        raise libvirt.libvirtError("gave up")

    monkeypatch.setattr(libvirt, "open", stuck)
    c = doctor.check_libvirt("qemu:///system", timeout_s=0.2)
    release.set()
    assert not c.ok and "did not answer within" in c.detail


# ---- tools, disk, memory ----------------------------------------------------------------------


def test_tool_present_and_missing(only_bin):
    fake_tool(only_bin, "qemu-img", 'echo "qemu-img version 7.2.22"\n')
    c = doctor.check_tool("qemu-img", "qemu-utils", "creates node disks")
    assert c.ok and "qemu-img version 7.2.22" in c.detail
    c = doctor.check_tool("mmdebstrap", "mmdebstrap", "builds the base image", required=False)
    assert not c.ok and not c.required and c.fix.startswith("apt-get install mmdebstrap")


def test_disk(tmp_path):
    assert doctor.check_disk(tmp_path, need=1).ok
    c = doctor.check_disk(tmp_path, need=1 << 60)
    assert not c.ok and "HALAB_CACHE" in c.fix and str(tmp_path) in c.detail


def test_mem_available_parsing():
    assert doctor.mem_available_mib("MemTotal: 100 kB\nMemAvailable:    2097152 kB\n") == 2048
    assert doctor.mem_available_mib("MemTotal: 1 kB\n") is None


def test_memory_for_the_topology():
    cfg = cfg_of("profile: ha\n")
    ok = doctor.check_memory(cfg, available_mib=100_000)
    assert ok.ok and "needs 9216 MiB" in ok.detail and "haproxy x2" in ok.detail
    low = doctor.check_memory(cfg, available_mib=4000)
    assert not low.ok and low.required and "free 5216 MiB" in low.fix


# ---- accel -------------------------------------------------------------------------------------

HUNG = KvmVerdict(False, "KVM unusable (guest kernel hung); using TCG", "hung", 10.0)
WORKS = KvmVerdict(True, "KVM works (probe kernel booted in 1.2 s)", "ok", 1.2)


def patch_verdict(monkeypatch, verdict=None, exc=None):
    def fake(refresh=False, progress=None):
        if exc:
            raise exc
        return verdict

    monkeypatch.setattr(doctor.accel, "kvm_verdict", fake)


def test_accel_hung_is_a_warning_and_tcg(monkeypatch):
    patch_verdict(monkeypatch, HUNG)
    c = doctor.check_accel(cfg_of())
    assert (c.ok, c.required, c.value) == (False, False, "tcg")
    assert c.detail == "KVM unusable (guest kernel hung); using TCG"
    assert "TCG" in c.fix


def test_accel_works(monkeypatch):
    patch_verdict(monkeypatch, WORKS)
    c = doctor.check_accel(cfg_of())
    assert c.ok and c.value == "kvm" and c.detail.endswith("using KVM")


def test_accel_forced_kvm_on_a_hanging_host_fails(monkeypatch):
    patch_verdict(monkeypatch, HUNG)
    c = doctor.check_accel(cfg_of("accel: kvm\n"))
    assert not c.ok and c.required and "set accel: auto" in c.fix


def test_accel_tcg_skips_the_probe(monkeypatch):
    patch_verdict(monkeypatch, exc=AssertionError("probed"))
    c = doctor.check_accel(cfg_of("accel: tcg\n"))
    assert c.ok and c.value == "tcg"


def test_accel_without_kernel(monkeypatch):
    patch_verdict(monkeypatch, exc=ProbeKernelError("apt-cache does not know it"))
    c = doctor.check_accel(cfg_of())
    assert not c.ok and not c.required and c.value == "tcg" and "not probed" in c.detail


def test_accel_cached_is_said(monkeypatch):
    patch_verdict(monkeypatch, KvmVerdict(**{**HUNG.__dict__, "cached": True}))
    assert "[cached; --refresh to probe again]" in doctor.check_accel(cfg_of()).detail


# ---- all together ------------------------------------------------------------------------------


def fake_checks(monkeypatch, **overrides):
    names = ["terraform", "libvirt", "qemu-system-x86_64", "qemu-img", "mmdebstrap", "disk", "memory"]
    ok = {n: Check(n, True, f"{n} fine") for n in names}
    ok.update(overrides)
    monkeypatch.setattr(doctor, "check_terraform", lambda: ok["terraform"])
    monkeypatch.setattr(doctor, "check_libvirt", lambda uri: ok["libvirt"])
    monkeypatch.setattr(doctor, "check_tool", lambda name, *a, **k: ok[name])
    monkeypatch.setattr(doctor, "check_disk", lambda: ok["disk"])
    monkeypatch.setattr(doctor, "check_memory", lambda cfg: ok["memory"])


def test_run_checks_order_and_verdict(monkeypatch):
    fake_checks(monkeypatch)
    patch_verdict(monkeypatch, HUNG)
    checks = doctor.run_checks(cfg_of())
    assert [c.name for c in checks] == ["terraform", "libvirt", "qemu-system-x86_64", "qemu-img",
                                        "mmdebstrap", "disk", "memory", "accel", "kvm-device"]
    assert doctor.all_required_ok(checks)
    assert doctor.chosen_accel(checks) == "tcg"


def test_run_checks_turns_a_broken_check_into_a_failure(monkeypatch):
    fake_checks(monkeypatch)
    patch_verdict(monkeypatch, exc=PermissionError("cache not writable"))
    checks = doctor.run_checks(cfg_of())
    accel = next(c for c in checks if c.name == "accel")
    assert not accel.ok
    assert "cache not writable" in accel.detail
    assert not doctor.all_required_ok(checks)


# ---- the command -------------------------------------------------------------------------------


def run_cli(argv, monkeypatch, capsys, **overrides):
    from cli import main

    monkeypatch.delenv("HALAB_CONFIG", raising=False)
    fake_checks(monkeypatch, **overrides)
    patch_verdict(monkeypatch, HUNG)
    code = main(["doctor", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_all_good_but_tcg(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli([], monkeypatch, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ok", "terraform", "terraform", "fine"]
    assert "warn  accel" in out and "KVM unusable (guest kernel hung); using TCG" in out
    assert lines[-1] == "accelerator: TCG"


def test_cli_failed_check_prints_fix_and_exits_1(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    bad = Check("libvirt", False, "cannot connect to qemu:///system: no socket", "run `libvirtd -d`")
    code, out, err = run_cli([], monkeypatch, capsys, libvirt=bad)
    assert code == 1
    assert "FAIL  libvirt" in out
    assert "fix: run `libvirtd -d`" in out
    assert "a required check failed" in err


def test_cli_json(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["--json"], monkeypatch, capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["accel"] == "tcg"
    accel = next(c for c in data["checks"] if c["name"] == "accel")
    assert accel == {"name": "accel", "ok": False, "detail": HUNG.reason,
                     "fix": accel["fix"], "required": False, "value": "tcg"}


def test_cli_bad_config_is_exit_2(monkeypatch, capsys, tmp_path):
    from cli import main

    (tmp_path / "lab.yaml").write_text("accel: fast\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HALAB_CONFIG", raising=False)
    assert main(["doctor"]) == 2
    assert "lab.yaml:1: accel: must be one of auto, kvm, tcg" in capsys.readouterr().err


def test_kvm_device_without_udev_group_is_flagged(tmp_path):
    from halab.lab.doctor import check_kvm_device_group

    fake = tmp_path / "kvm"
    fake.write_text("")
    fake.chmod(0o600)
    check = check_kvm_device_group(str(fake))
    assert not check.ok and not check.required
    assert "chgrp kvm" in check.fix
    assert check_kvm_device_group(str(tmp_path / "absent")).ok


# ---- a lab over several hosts ---------------------------------------------------------------------


def test_every_host_is_checked_and_a_broken_one_is_named(tmp_path):
    """Each host gets its libvirt check (reachable, version), its tunnel shell and a KVM verdict; an
    unreachable one is one line naming the host. Only loopback is contacted."""
    cfg = cfg_of(
        "hosts:\n"
        "  rack1: {uri: 'test:///default', underlay: 10.99.0.1}\n"
        f"  rack2: {{uri: 'qemu+unix:///system?socket={tmp_path}/no-such.sock', underlay: 10.99.0.2}}\n"
        "  rack3: {uri: 'qemu+tcp://127.0.0.1:1/system', underlay: 10.99.0.3,\n"
        "          ssh: {target: nobody@127.0.0.1, port: 1}}\n")
    checks = {n: job() for n, job in doctor.host_jobs(cfg)}
    assert checks["libvirt[rack1]"].ok and "libvirt 9" in checks["libvirt[rack1]"].detail
    bad = checks["libvirt[rack2]"]
    assert not bad.ok and "no-such.sock" in bad.detail and "\n" not in bad.detail
    assert checks["tunnel[rack2]"].ok  # this machine's own `ip`
    tcp = checks["libvirt[rack3]"]
    assert not tcp.ok and "127.0.0.1" in tcp.fix  # a remote host: not "start libvirtd here"
    shell = checks["tunnel[rack3]"]
    assert not shell.ok
    assert shell.detail.startswith("host 'rack3': cannot reach it over ssh nobody@127.0.0.1:1")
    assert checks["accel[rack3]"].value == "tcg" and not checks["accel[rack3]"].required
    assert "accel[rack1]" not in checks  # this machine: the real boot probe (the `accel` check)
    assert doctor.chosen_accel([Check("accel", True, "", value="kvm")], cfg) == "tcg"
