"""Checkpoints, reset, stop/start and warm revive against libvirt's test:///default driver: the
cut's bookkeeping (files, modes, manifest, definition checks, refusals) on a real libvirt API. The
real memory save, clock stepping and timings are covered by the end-to-end tier."""

from __future__ import annotations

import os
import stat

import libvirt
import pytest

from halab.chaos.faults import ActiveFault, Faults, FaultStore
from halab.errors import UsageError
from halab.lab import checkpoint as warm
from halab.lab.config import parse_config
from halab.lab.virt import DomainState, LabVirt, ownership_xml

LAB = "cp1"
YAML = f"name: {LAB}\nroles: {{api: {{count: 2}}}}\n"
CFG = parse_config(YAML, "lab.yaml", host_mem_mib=1 << 20)


def _xml(cfg, node, disk: str) -> str:
    return f"""<domain type='test'><name>{cfg.domain_name(node)}</name><memory>65536</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<metadata>{ownership_xml(cfg.name, node.name, node.role)}</metadata>
<devices><disk type='file' device='disk'><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
<interface type='network'><mac address='{node.mac}'/><source network='default'/></interface>
</devices></domain>"""


def _cleanup(conn) -> None:
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{LAB}-"):
            if dom.isActive():
                dom.destroy()
            if dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)
            dom.undefine()


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    conn = libvirt.open("test:///default")
    _cleanup(conn)
    disks = {}
    for node in CFG.nodes():
        disk = tmp_path / "pool" / f"{node.name}.qcow2"
        disk.parent.mkdir(exist_ok=True)
        disk.write_bytes(f"overlay of {node.name} at boot".encode())
        disks[node.name] = disk
        conn.defineXML(_xml(CFG, node, str(disk))).create()
    virt = LabVirt(CFG, conn)
    yield virt, disks
    _cleanup(conn)
    conn.close()


def test_save_makes_private_files_and_keeps_the_lab_running(lab):
    virt, disks = lab
    steps = []
    info = warm.WarmLab(CFG, virt, progress=steps.append).save("ready")
    d = warm.checkpoints_dir(CFG) / "ready"
    names = [n.name for n in CFG.nodes()]
    assert sorted(info.nodes) == sorted(names)
    for n in names:
        for f in (d / f"{n}.mem", d / f"{n}.qcow2"):
            assert f.is_file()
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert (d / f"{n}.qcow2").read_bytes() == disks[n].read_bytes()
    assert stat.S_IMODE((d / "manifest.json").stat().st_mode) == 0o600
    assert all(s == DomainState.RUNNING for s in virt.states().values())
    assert {s.phase for s in steps} >= {"pause", "save", "copy", "restore", "resume"}
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")], "partial directory left"
    listed = warm.list_checkpoints(CFG)
    assert [c.name for c in listed] == ["ready"]
    assert listed[0].definition == warm.definition_fingerprint(CFG)
    assert listed[0].size_bytes > 0


def test_restore_brings_back_the_disks_of_the_cut(lab):
    virt, disks = lab
    w = warm.WarmLab(CFG, virt)
    w.save("ready")
    for disk in disks.values():
        disk.write_bytes(b"written after the checkpoint")
    res = w.restore("ready")
    assert sorted(res.nodes) == sorted(disks)
    for name, disk in disks.items():
        assert disk.read_bytes() == f"overlay of {name} at boot".encode()
    assert all(s == DomainState.RUNNING for s in virt.states().values())
    assert res.seconds["total"] >= 0 and "restore" in res.seconds


def test_restore_refuses_a_missing_checkpoint_and_changes_nothing(lab):
    virt, disks = lab
    before = {n: d.read_bytes() for n, d in disks.items()}
    with pytest.raises(warm.CheckpointError, match="no checkpoint 'nope'"):
        warm.WarmLab(CFG, virt).restore("nope")
    assert {n: d.read_bytes() for n, d in disks.items()} == before
    assert all(s == DomainState.RUNNING for s in virt.states().values())


def test_restore_refuses_a_checkpoint_of_another_definition(lab):
    virt, _disks = lab
    warm.WarmLab(CFG, virt).save("ready")
    bigger = parse_config(YAML.replace("count: 2}", "count: 2, memory_mib: 1024}"), "lab.yaml",
                          host_mem_mib=1 << 20)
    with pytest.raises(warm.CheckpointError, match=r"another definition.*api-1, api-2"):
        warm.WarmLab(bigger, LabVirt(bigger, virt.conn)).restore("ready")
    assert all(s == DomainState.RUNNING for s in virt.states().values())


def test_save_refuses_when_the_disk_is_too_small_and_leaves_the_lab_running(lab, monkeypatch):
    virt, _disks = lab
    monkeypatch.setattr(warm, "_free_bytes", lambda _p: 1000)
    with pytest.raises(warm.CheckpointError, match="not enough free disk"):
        warm.WarmLab(CFG, virt).save("ready")
    assert all(s == DomainState.RUNNING for s in virt.states().values())
    assert not (warm.checkpoints_dir(CFG) / "ready").exists()


def test_save_needs_every_node_running(lab):
    virt, _disks = lab
    virt.domain("api-2").destroy()
    with pytest.raises(warm.CheckpointError, match=r"not running: api-2 \(shut off\)"):
        warm.WarmLab(CFG, virt).save("ready")


@pytest.mark.parametrize("name", ["", "Ready", "../x", "a" * 41, "x y", "-x"])
def test_checkpoint_names_are_checked(name):
    with pytest.raises(UsageError, match="not valid"):
        warm.check_name(name)


def test_stop_saves_every_node_and_start_brings_them_back(lab):
    virt, _disks = lab
    w = warm.WarmLab(CFG, virt)
    w.stop()
    assert all(s == DomainState.SAVED for s in virt.states().values())
    assert w.stopped_nodes() == sorted(n.name for n in CFG.nodes())
    res = w.start()
    assert sorted(res.nodes) == sorted(n.name for n in CFG.nodes())
    assert all(s == DomainState.RUNNING for s in virt.states().values())
    with pytest.raises(warm.CheckpointError, match="is not stopped"):
        w.start()


def test_warm_revive_restores_one_stateless_node_only(lab, tmp_path):
    virt, disks = lab
    warm.WarmLab(CFG, virt).save("ready")
    faults = Faults(CFG, virt, state_dir=tmp_path, clock_ssh=None)
    faults.kill("api-2")
    disks["api-2"].write_bytes(b"half-written by a dying node")
    disks["api-1"].write_bytes(b"api-1 moved on")
    ev = faults.revive("api-2", warm=True)
    assert ev.params["revive"] == "warm" and "warm from checkpoint 'ready'" in ev.detail
    assert disks["api-2"].read_bytes() == b"overlay of api-2 at boot"
    assert disks["api-1"].read_bytes() == b"api-1 moved on", "another node was touched"
    assert virt.state("api-2") == DomainState.RUNNING
    assert faults.active() == []


def test_stateful_nodes_are_never_revived_warm(lab, tmp_path):
    virt, _disks = lab
    warm.WarmLab(CFG, virt).save("ready")
    faults = Faults(CFG, virt, state_dir=tmp_path, clock_ssh=None)
    faults.kill("db-1")
    with pytest.raises(UsageError, match=r"never revived warm.*roll back the database"):
        faults.revive("db-1", warm=True)
    assert virt.state("db-1") == DomainState.SHUT_OFF
    assert faults.revive_kind("db-1") == "cold"
    ev = faults.revive("db-1")
    assert ev.params["revive"] == "cold"


def test_revive_policy(lab, tmp_path, monkeypatch):
    virt, _disks = lab
    faults = Faults(CFG, virt, state_dir=tmp_path, clock_ssh=None)
    monkeypatch.setattr("halab.lab.lifecycle.lab_accel", lambda _cfg: "tcg")
    assert faults.revive_kind("api-1") == "cold", "no checkpoint yet: auto boots"
    warm.WarmLab(CFG, virt).save("ready")
    assert faults.revive_kind("api-1") == "warm"
    assert faults.revive_kind("haproxy-1") == "warm"
    assert faults.revive_kind("mq-1") == "cold"
    monkeypatch.setattr("halab.lab.lifecycle.lab_accel", lambda _cfg: "kvm")
    assert faults.revive_kind("api-1") == "cold", "on KVM a boot is cheap"
    cold = parse_config(YAML + "revive: cold\n", "lab.yaml", host_mem_mib=1 << 20)
    cold_faults = Faults(cold, LabVirt(cold, virt.conn), state_dir=tmp_path, clock_ssh=None)
    assert cold_faults.revive_kind("api-1") == "cold"


def test_fault_record_can_be_replaced_whole(tmp_path):
    store = FaultStore(tmp_path / "faults.json")
    store.replace([ActiveFault("netem", "api-1", 1.0, {"dev": "vnet0"})])
    assert [f.node for f in store.load()] == ["api-1"]
    store.replace([])
    assert store.load() == []
    assert os.path.exists(tmp_path / "faults.json")
