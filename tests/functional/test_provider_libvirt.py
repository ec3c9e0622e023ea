"""halab's Terraform provider against libvirt's test:///default driver, driven through the `tf`
framework's gRPC servicer exactly as Terraform drives it (plan, then apply; read; import)."""

from __future__ import annotations

import itertools
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tf.gen import tfplugin_pb2 as pb
from tf.provider import ProviderServicer
from tf.utils import Diagnostics, read_dynamic_value, to_dynamic_value

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from halab.lab.tfmirror import provider_dir

sys.path.insert(0, str(provider_dir()))

from halab_provider.cloudinit import build_seed_iso, read_seed_iso
from halab_provider.common import HALAB_NS
from halab_provider.provider import LibvirtProvider, open_connection

URI = "test:///default"
_seq = itertools.count(1)


def uniq(prefix: str = "t") -> str:
    return f"{prefix}{next(_seq)}"


class Harness:
    """Plays Terraform's side of the plugin protocol against the provider."""

    def __init__(self, name_prefix: str = ""):
        self.provider = LibvirtProvider()
        diags = Diagnostics()
        self.provider.configure_provider(diags, {"uri": URI, "name_prefix": name_prefix})
        assert not diags.has_errors(), str(diags)
        self.svc = ProviderServicer(self.provider)
        self.conn = open_connection(URI)

    def full(self, type_name: str, values: dict[str, Any]) -> dict[str, Any]:
        klass = self.svc._get_res_cls(type_name)
        schema = klass.get_schema()
        out: dict[str, Any] = {a.name: None for a in schema.attributes}
        out.update({b.type_name: [] for b in schema.block_types})
        out.update(values)
        return out

    @staticmethod
    def errors(diags: Any) -> list[str]:
        return [f"{d.summary} {d.detail}" for d in diags if d.severity == pb.Diagnostic.ERROR]

    def plan(self, type_name: str, prior: dict | None, proposed: dict) -> pb.PlanResourceChange.Response:
        return self.svc.PlanResourceChange(
            pb.PlanResourceChange.Request(
                type_name=type_name,
                prior_state=to_dynamic_value(prior),
                proposed_new_state=to_dynamic_value(self.full(type_name, proposed)),
                config=to_dynamic_value(self.full(type_name, proposed)),
            ),
            None,
        )

    def apply(
        self, type_name: str, prior: dict | None, planned: pb.DynamicValue
    ) -> tuple[dict | None, list[str]]:
        resp = self.svc.ApplyResourceChange(
            pb.ApplyResourceChange.Request(
                type_name=type_name, prior_state=to_dynamic_value(prior), planned_state=planned
            ),
            None,
        )
        return read_dynamic_value(resp.new_state), self.errors(resp.diagnostics)

    def create(self, type_name: str, config: dict) -> dict:
        plan = self.plan(type_name, None, config)
        assert not self.errors(plan.diagnostics)
        state, errors = self.apply(type_name, None, plan.planned_state)
        assert not errors, errors
        assert state is not None
        return state

    def create_fails(self, type_name: str, config: dict) -> list[str]:
        plan = self.plan(type_name, None, config)
        _, errors = self.apply(type_name, None, plan.planned_state)
        return errors

    def read(self, type_name: str, state: dict) -> dict | None:
        resp = self.svc.ReadResource(
            pb.ReadResource.Request(type_name=type_name, current_state=to_dynamic_value(state)), None
        )
        assert not self.errors(resp.diagnostics), self.errors(resp.diagnostics)
        return read_dynamic_value(resp.new_state)

    def update(self, type_name: str, prior: dict, changes: dict) -> tuple[dict | None, list[str], list[str]]:
        """Returns (new state, errors, attributes that force replacement)."""
        plan = self.plan(type_name, prior, {**prior, **changes})
        replace = [p.steps[0].attribute_name for p in plan.requires_replace]
        state, errors = self.apply(type_name, prior, plan.planned_state)
        return state, errors, replace

    def delete(self, type_name: str, state: dict) -> list[str]:
        _, errors = self.apply(type_name, state, to_dynamic_value(None))
        return errors

    def import_(self, type_name: str, ident: str) -> tuple[dict | None, list[str]]:
        resp = self.svc.ImportResourceState(
            pb.ImportResourceState.Request(type_name=type_name, id=ident), None
        )
        states = [read_dynamic_value(r.state) for r in resp.imported_resources]
        return (states[0] if states else None), self.errors(resp.diagnostics)


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def pool(h: Harness, tmp_path: Path):
    state = h.create("libvirt_pool", {"name": uniq("pool"), "path": str(tmp_path / "pool")})
    yield state
    h.delete("libvirt_pool", state)


def test_schema_lists_the_five_resources_and_upgrade_is_silent(h: Harness) -> None:
    resp = h.svc.GetProviderSchema(pb.GetProviderSchema.Request(), None)
    assert set(resp.resource_schemas) == {
        "libvirt_pool",
        "libvirt_network",
        "libvirt_volume",
        "libvirt_cloudinit_disk",
        "libvirt_domain",
    }
    assert [a.name for a in resp.provider.block.attributes] == ["uri", "name_prefix"]
    up = h.svc.UpgradeResourceState(
        pb.UpgradeResourceState.Request(
            type_name="libvirt_pool", version=0, raw_state=pb.RawState(json=b'{"id": "x", "name": "p"}')
        ),
        None,
    )
    assert list(up.diagnostics) == []


def test_unreachable_libvirt_is_a_clear_diagnostic() -> None:
    diags = Diagnostics()
    LibvirtProvider().configure_provider(diags, {"uri": "test:///nonexistent/halab.xml"})
    assert diags.has_errors()
    assert "cannot connect to libvirt at test:///nonexistent/halab.xml" in diags.diagnostics[0].summary
    assert "libvirtd" in diags.diagnostics[0].detail


def test_pool_lifecycle_and_idempotent_delete(h: Harness, tmp_path: Path) -> None:
    name = uniq("pool")
    state = h.create("libvirt_pool", {"name": name, "path": str(tmp_path / "p")})
    assert state["autostart"] is True and state["path"] == str(tmp_path / "p")
    assert h.conn.storagePoolLookupByName(name).isActive()
    state2, errors, replace = h.update("libvirt_pool", state, {"autostart": False})
    assert not errors and replace == [] and state2["autostart"] is False
    assert h.import_("libvirt_pool", name)[0]["id"] == state["id"]
    assert h.delete("libvirt_pool", state2) == []
    assert h.read("libvirt_pool", state2) is None
    assert h.delete("libvirt_pool", state2) == []  # gone already: still fine


def test_network_nat_dhcp_hosts_and_drift(h: Harness) -> None:
    name = uniq("net")
    cfg = {
        "name": name,
        "bridge": f"hl{name}",
        "addresses": ["10.91.0.0/24"],
        "dhcp_host": [{"mac": "52:54:00:AA:BB:01", "ip": "10.91.0.11", "name": "a"}],
    }
    state = h.create("libvirt_network", cfg)
    assert state["mode"] == "nat" and state["running"] is True
    assert state["dhcp_host"] == [{"mac": "52:54:00:aa:bb:01", "ip": "10.91.0.11", "name": "a"}]
    xml = ET.fromstring(h.conn.networkLookupByName(name).XMLDesc(0))
    assert xml.find("forward").get("mode") == "nat"
    assert xml.find("ip").get("address") == "10.91.0.1"
    # Stopped outside Terraform: read says so, apply starts it again in place.
    h.conn.networkLookupByName(name).destroy()
    drifted = h.read("libvirt_network", state)
    assert drifted["running"] is False
    healed, errors, replace = h.update("libvirt_network", drifted, {"running": True})
    assert not errors and replace == [] and healed["running"] is True
    # Changing the addresses replaces the network.
    _, _, replace = h.update("libvirt_network", healed, {"addresses": ["10.92.0.0/24"]})
    assert "addresses" in replace
    assert h.delete("libvirt_network", healed) == []
    assert h.read("libvirt_network", healed) is None


def test_network_isolated_and_validation(h: Harness) -> None:
    name = uniq("iso")
    state = h.create("libvirt_network", {"name": name, "mode": "isolated", "addresses": ["10.93.0.0/24"]})
    assert state["mode"] == "isolated"
    assert ET.fromstring(h.conn.networkLookupByName(name).XMLDesc(0)).find("forward") is None
    h.delete("libvirt_network", state)
    resp = h.svc.ValidateResourceConfig(
        pb.ValidateResourceConfig.Request(
            type_name="libvirt_network",
            config=to_dynamic_value(
                h.full("libvirt_network", {"name": "x", "mode": "bridge", "addresses": ["10.0.0.1/24"]})
            ),
        ),
        None,
    )
    errors = h.errors(resp.diagnostics)
    assert any("mode must be one of nat, isolated" in e for e in errors)
    assert any("not a network in CIDR form" in e for e in errors)


def test_volume_from_source_and_overlay(h: Harness, pool: dict, tmp_path: Path) -> None:
    src = tmp_path / "base.qcow2"
    src.write_bytes(b"QFI\xfb" + bytes(20) + (8 << 20).to_bytes(8, "big") + bytes(100))
    base = h.create("libvirt_volume", {"name": uniq("base"), "pool": pool["name"], "source": str(src)})
    assert base["format"] == "qcow2" and base["size"] == 8 << 20  # qcow2 virtual size
    assert base["id"] == base["path"] == f"{pool['path']}/{base['name']}"
    overlay = h.create(
        "libvirt_volume", {"name": uniq("ovl"), "pool": pool["name"], "base_volume_name": base["name"]}
    )
    xml = ET.fromstring(h.conn.storageVolLookupByKey(overlay["id"]).XMLDesc(0))
    assert xml.find("backingStore/path").text == base["path"]
    assert h.read("libvirt_volume", overlay)["path"] == overlay["path"]
    _, _, replace = h.update("libvirt_volume", overlay, {"base_volume_name": "other"})
    assert replace == ["base_volume_name"]
    missing = h.create_fails(
        "libvirt_volume", {"name": uniq("k"), "pool": pool["name"], "source": str(tmp_path / "nope")}
    )
    assert any("does not exist" in e for e in missing)
    for vol in (overlay, base):
        assert h.delete("libvirt_volume", vol) == []
        assert h.read("libvirt_volume", vol) is None
        assert h.delete("libvirt_volume", vol) == []


def test_seed_iso_is_nocloud(tmp_path: Path) -> None:
    data = build_seed_iso("#cloud-config\n", "instance-id: x\n", "version: 2\n")
    path = tmp_path / "seed.iso"
    path.write_bytes(data)
    assert (
        data[0x8000 + 40 : 0x8000 + 46] == b"CIDATA" or data[0x8000 + 40 : 0x8000 + 46].lower() == b"cidata"
    )
    assert read_seed_iso(str(path)) == {
        "user_data": "#cloud-config\n",
        "meta_data": "instance-id: x\n",
        "network_config": "version: 2\n",
    }


def test_cloudinit_disk_resource(h: Harness, pool: dict) -> None:
    state = h.create(
        "libvirt_cloudinit_disk",
        {
            "name": uniq("seed"),
            "pool": pool["name"],
            "user_data": "#cloud-config\n",
            "meta_data": "instance-id: y\n",
        },
    )
    assert state["path"].endswith(state["name"])
    _, _, replace = h.update("libvirt_cloudinit_disk", state, {"user_data": "#cloud-config\nx: 1\n"})
    assert replace == ["user_data"]
    assert h.delete("libvirt_cloudinit_disk", state) == []
    assert h.read("libvirt_cloudinit_disk", state) is None


def _domain_config(h: Harness, pool: dict, lab: str, node: str) -> dict:
    disk = h.create("libvirt_volume", {"name": f"{lab}-{node}.qcow2", "pool": pool["name"], "size": 1 << 20})
    seed = h.create(
        "libvirt_cloudinit_disk",
        {"name": f"{lab}-{node}-seed.iso", "pool": pool["name"], "user_data": "u", "meta_data": "m"},
    )
    return {
        "name": f"{lab}-{node}",
        "memory": 256,
        "vcpu": 1,
        "accel": "qemu",
        "kernel": "/k",
        "initrd": "/i",
        "cmdline": "root=/dev/vda rw console=ttyS0",
        "disks": [disk["id"], seed["id"]],
        "running": True,
        "lab": lab,
        "node": node,
        "role": "api",
        "network_interface": [
            {"network_name": f"{lab}-net", "mac": "52:54:00:00:00:2A", "addresses": ["10.0.0.5"]}
        ],
    }


def test_domain_lifecycle_drift_and_heal(h: Harness, pool: dict) -> None:
    lab = uniq("tfplab")
    cfg = _domain_config(h, pool, lab, "api-1")
    state = h.create("libvirt_domain", cfg)
    dom = h.conn.lookupByName(f"{lab}-api-1")
    assert dom.isActive() and state["running"] is True
    xml = ET.fromstring(dom.XMLDesc(0))
    meta = xml.find(f"metadata/{{{HALAB_NS}}}lab")
    assert (meta.get("name"), meta.get("node"), meta.get("role")) == (lab, "api-1", "api")
    assert xml.findtext("on_crash") == "destroy"
    assert [d.find("target").get("dev") for d in xml.findall("devices/disk")] == ["vda", "vdb"]
    assert [d.find("target").get("bus") for d in xml.findall("devices/disk")] == ["virtio", "virtio"]
    assert state["network_interface"] == [
        {"network_name": f"{lab}-net", "mac": "52:54:00:00:00:2a", "addresses": ["10.0.0.5"]}
    ]
    assert h.read("libvirt_domain", state) == state  # no spurious drift

    dom.destroy()  # `virsh destroy` from outside
    drifted = h.read("libvirt_domain", state)
    assert drifted["running"] is False
    healed, errors, replace = h.update("libvirt_domain", drifted, {"running": True})
    assert not errors and replace == [] and healed["running"] is True and dom.isActive()

    dom.suspend()  # paused is not running; apply resumes it
    assert h.read("libvirt_domain", healed)["running"] is False
    healed, errors, _ = h.update("libvirt_domain", h.read("libvirt_domain", healed), {"running": True})
    assert not errors and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    resized, errors, replace = h.update("libvirt_domain", healed, {"memory": 512})
    assert not errors and replace == [] and resized["memory"] == 512 and resized["id"] == state["id"]
    _, _, replace = h.update("libvirt_domain", resized, {"name": f"{lab}-other"})
    assert replace == ["name"]

    imported, errors = h.import_("libvirt_domain", f"{lab}-api-1")
    assert not errors and imported["lab"] == lab and imported["disks"] == cfg["disks"]

    dom.destroy()
    dom.undefine()  # `virsh undefine` from outside: the domain drops out of state
    assert h.read("libvirt_domain", resized) is None
    assert h.delete("libvirt_domain", resized) == []


def test_domain_delete_refuses_other_labs_and_foreign_domains(h: Harness, pool: dict) -> None:
    lab = uniq("tfplab")
    state = h.create("libvirt_domain", _domain_config(h, pool, lab, "db-1"))
    errors = h.delete("libvirt_domain", {**state, "lab": "someone-else"})
    assert errors and "refusing to delete" in errors[0] and f"belongs to lab {lab!r}" in errors[0]
    foreign = uniq("foreign")
    h.conn.defineXML(
        f"<domain type='test'><name>{foreign}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    uuid = h.conn.lookupByName(foreign).UUIDString()
    errors = h.delete("libvirt_domain", {**state, "id": uuid, "name": foreign})
    assert errors and "has no halab metadata" in errors[0]
    assert h.conn.lookupByName(foreign)  # untouched
    assert h.delete("libvirt_domain", state) == []


def test_create_adopts_a_domain_left_by_an_interrupted_apply(h: Harness, pool: dict) -> None:
    lab = uniq("tfplab")
    cfg = _domain_config(h, pool, lab, "mq-1")
    first = h.create("libvirt_domain", cfg)  # pretend Terraform never saved this
    plan = h.plan("libvirt_domain", None, cfg)
    resp = h.svc.ApplyResourceChange(
        pb.ApplyResourceChange.Request(
            type_name="libvirt_domain", prior_state=to_dynamic_value(None), planned_state=plan.planned_state
        ),
        None,
    )
    again = read_dynamic_value(resp.new_state)
    assert again["id"] == first["id"]
    assert any("adopted" in d.summary for d in resp.diagnostics)
    h.delete("libvirt_domain", again)


def test_name_prefix_guards_create_and_delete(pool: dict) -> None:
    h = Harness(name_prefix="mylab-")
    errors = h.create_fails("libvirt_volume", {"name": "other-disk", "pool": pool["name"], "size": 1024})
    assert errors and "does not start with 'mylab-'" in errors[0]


def test_domain_validation(h: Harness) -> None:
    resp = h.svc.ValidateResourceConfig(
        pb.ValidateResourceConfig.Request(
            type_name="libvirt_domain",
            config=to_dynamic_value(h.full("libvirt_domain", {"name": "x", "accel": "tcg", "memory": 16})),
        ),
        None,
    )
    errors = h.errors(resp.diagnostics)
    assert any("accel must be one of kvm, qemu" in e for e in errors)
    assert any("memory is in MiB" in e for e in errors)
