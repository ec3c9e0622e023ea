"""libvirt_domain: a VM with direct kernel boot (or disk boot), virtio disks, one or more NICs,
`running`, the accelerator as the domain type, and halab's ownership metadata."""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt
from tf.blocks import SetNestedBlock
from tf.iface import CreateContext, DeleteContext, ImportContext, ReadContext, UpdateContext
from tf.schema import Attribute, Block, Schema
from tf.types import Bool, List, Number, String
from tf.utils import Diagnostics

from halab_provider.common import (
    HALAB_NS,
    BaseResource,
    ProviderError,
    State,
    check_prefix,
    is_not_found,
    known,
    reported,
)
from halab_provider.volume import lookup_volume, volume_format

ACCELS = ("kvm", "qemu")
# Attributes whose change needs a new definition (applied in place, with a restart if running).
DEFINITION_FIELDS = (
    "memory",
    "vcpu",
    "kernel",
    "initrd",
    "cmdline",
    "disks",
    "network_interface",
    "accel",
    "lab",
    "node",
    "role",
    "console_log",
)


def lookup_domain(conn: libvirt.virConnect, ident: str) -> libvirt.virDomain | None:
    for finder in (conn.lookupByUUIDString, conn.lookupByName):
        try:
            return finder(ident)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc) and exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
    return None


def is_running(dom: libvirt.virDomain) -> bool:
    state = dom.state(0)[0]
    return state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)


def owner(root: ET.Element) -> dict[str, str] | None:
    el = root.find(f"metadata/{{{HALAB_NS}}}lab")
    return None if el is None else {k: el.get(k) or "" for k in ("name", "node", "role")}


def _disk_xml(conn: libvirt.virConnect, ident: str, index: int) -> str:
    vol = lookup_volume(conn, ident)
    if vol is None:
        raise ProviderError(f"disk volume {ident!r} does not exist")
    dev = "vd" + "abcdefghijklmnopqrstuvwxyz"[index]
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{volume_format(vol)}'/>"
        f"<source file={quoteattr(vol.path())}/><target dev='{dev}' bus='virtio'/></disk>"
    )


def domain_xml(conn: libvirt.virConnect, p: dict[str, Any], uuid: str | None = None) -> str:
    accel = p.get("accel") or "kvm"
    x = [f"<domain type='{accel}'>", f"<name>{escape(p['name'])}</name>"]
    if uuid:
        x.append(f"<uuid>{uuid}</uuid>")
    if p.get("lab"):
        attrs = " ".join(f"{k}={quoteattr(p.get(k) or '')}" for k in ("lab", "node", "role"))
        attrs = attrs.replace("lab=", "name=", 1)
        x.append(f"<metadata><halab:lab xmlns:halab={quoteattr(HALAB_NS)} {attrs}/></metadata>")
    x.append(f"<memory unit='MiB'>{int(p.get('memory') or 512)}</memory>")
    x.append(f"<vcpu>{int(p.get('vcpu') or 1)}</vcpu>")
    x.append("<os><type arch='x86_64' machine='pc'>hvm</type>")
    if p.get("kernel"):
        x.append(f"<kernel>{escape(p['kernel'])}</kernel>")
        if p.get("initrd"):
            x.append(f"<initrd>{escape(p['initrd'])}</initrd>")
        if p.get("cmdline"):
            x.append(f"<cmdline>{escape(p['cmdline'])}</cmdline>")
    else:
        x.append("<boot dev='hd'/>")
    x.append("</os><features><acpi/></features>")
    if accel == "kvm":
        x.append("<cpu mode='host-passthrough'/>")
    x.append(
        "<clock offset='utc'/><on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
        "<on_crash>destroy</on_crash><devices>"
    )
    for i, ident in enumerate(p.get("disks") or []):
        x.append(_disk_xml(conn, ident, i))
    for nic in p.get("network_interface") or []:
        mac = f"<mac address={quoteattr(nic['mac'].lower())}/>" if nic.get("mac") else ""
        x.append(
            f"<interface type='network'><source network={quoteattr(nic['network_name'])}/>{mac}"
            "<model type='virtio'/></interface>"
        )
    log = f"<log file={quoteattr(p['console_log'])} append='on'/>" if p.get("console_log") else ""
    x.append(
        f"<serial type='pty'>{log}<target port='0'/></serial>"
        "<console type='pty'><target type='serial' port='0'/></console>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "</devices></domain>"
    )
    return "".join(x)


def domain_state(dom: libvirt.virDomain, prior: State) -> dict[str, Any]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    meta = owner(root) or {}
    os_el = root.find("os")

    def os_text(tag: str) -> str | None:
        el = os_el.find(tag) if os_el is not None else None
        return el.text if el is not None and el.text else None

    mem = root.find("memory")
    mem_kib = int(mem.text or 0) if mem is not None else 0
    if mem is not None and mem.get("unit") not in (None, "KiB", "k"):
        mem_kib = int(dom.info()[1])
    disks = [
        d.find("source").get("file")
        for d in root.findall("devices/disk")  # type: ignore[union-attr]
        if d.get("device", "disk") == "disk" and d.find("source") is not None
    ]
    prior_nics = {(n.get("mac") or "").lower(): n for n in prior.get("network_interface") or []}
    nics = []
    for iface in root.findall("devices/interface"):
        src, mac_el = iface.find("source"), iface.find("mac")
        mac = (mac_el.get("address") or "").lower() if mac_el is not None else ""
        nics.append(
            {
                "network_name": src.get("network") if src is not None else None,
                "mac": mac,
                "addresses": (prior_nics.get(mac) or {}).get("addresses"),
            }
        )
    log_el = root.find("devices/serial/log")
    dtype = root.get("type")
    return {
        "id": dom.UUIDString(),
        "name": dom.name(),
        "memory": mem_kib // 1024,
        "vcpu": int(root.findtext("vcpu") or 1),
        "kernel": os_text("kernel"),
        "initrd": os_text("initrd"),
        "cmdline": os_text("cmdline"),
        "disks": disks,
        "network_interface": nics,
        "running": is_running(dom),
        # libvirt's test driver rewrites every type to "test": keep what was asked for there.
        "accel": dtype if dtype in ACCELS else (prior.get("accel") or "kvm"),
        "lab": meta.get("name") or None,
        "node": meta.get("node") or None,
        "role": meta.get("role") or None,
        "console_log": log_el.get("file") if log_el is not None else None,
    }


class DomainResource(BaseResource):
    @classmethod
    def get_name(cls) -> str:
        return "domain"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            description="A libvirt domain. Changing `running` starts or stops it; other changes redefine it "
            "(restarting it if it runs); changing `name` replaces it.",
            attributes=[
                Attribute("id", String(), computed=True, description="The domain's UUID."),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute("memory", Number(), optional=True, computed=True, default=512, description="MiB."),
                Attribute("vcpu", Number(), optional=True, computed=True, default=1),
                Attribute("kernel", String(), optional=True, description="Path of a kernel for direct boot."),
                Attribute("initrd", String(), optional=True),
                Attribute("cmdline", String(), optional=True),
                Attribute(
                    "disks",
                    List(String()),
                    optional=True,
                    description="Volume ids (keys/paths) attached as virtio disks vda, vdb, … in order.",
                ),
                Attribute("running", Bool(), optional=True, computed=True, default=True),
                Attribute(
                    "accel",
                    String(),
                    optional=True,
                    computed=True,
                    default="kvm",
                    description="`kvm` or `qemu` (TCG): the libvirt domain type.",
                ),
                Attribute(
                    "lab",
                    String(),
                    optional=True,
                    description="Owning lab; written as halab ownership metadata. Delete refuses to "
                    "touch a domain whose metadata names another lab or none.",
                ),
                Attribute("node", String(), optional=True),
                Attribute("role", String(), optional=True),
                Attribute(
                    "console_log",
                    String(),
                    optional=True,
                    description="File the serial console is logged to (else a pty only).",
                ),
            ],
            block_types=[
                SetNestedBlock(
                    "network_interface",
                    Block(
                        attributes=[
                            Attribute("network_name", String(), required=True),
                            Attribute("mac", String(), required=True),
                            Attribute(
                                "addresses",
                                List(String()),
                                optional=True,
                                description="Informational: the addresses the guest configures.",
                            ),
                        ]
                    ),
                ),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: dict[str, Any]) -> None:
        super().validate(diags, type_name, config)
        accel = config.get("accel")
        if isinstance(accel, str) and accel not in ACCELS:
            diags.add_error(f"accel must be one of {', '.join(ACCELS)} (got {accel!r})", path=["accel"])
        mem = config.get("memory")
        if isinstance(mem, int | float) and mem < 64:
            diags.add_error(f"memory is in MiB and must be >= 64 (got {mem})", path=["memory"])
        vcpu = config.get("vcpu")
        if isinstance(vcpu, int | float) and vcpu < 1:
            diags.add_error(f"vcpu must be >= 1 (got {vcpu})", path=["vcpu"])
        disks = config.get("disks")
        if isinstance(disks, list) and len(disks) > 26:
            diags.add_error("at most 26 disks", path=["disks"])

    # ---- guards ---------------------------------------------------------------------------
    def _check_owner(self, dom: libvirt.virDomain, state: dict[str, Any], action: str) -> None:
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        meta = owner(root)
        lab = state.get("lab")
        if lab and (meta is None or meta["name"] != lab):
            whose = "has no halab metadata" if meta is None else f"belongs to lab {meta['name']!r}"
            raise ProviderError(
                f"refusing to {action} domain {dom.name()!r}: it {whose}, not lab {lab!r}",
                "halab only touches domains whose <metadata> names its own lab.",
            )
        check_prefix(self.provider, "domain", dom.name())

    @staticmethod
    def _leftover(dom: libvirt.virDomain, planned: State) -> bool:
        meta = owner(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        return bool(
            planned.get("lab")
            and meta
            and meta["name"] == planned["lab"]
            and meta["node"] == (planned.get("node") or "")
        )

    # ---- CRUD -----------------------------------------------------------------------------
    def create(self, ctx: CreateContext, planned: State) -> State | None:
        planned = known(planned)
        name = planned["name"]
        dom = None
        with reported(ctx.diagnostics, f"cannot create domain {name!r}"):
            check_prefix(self.provider, "domain", name)
            existing = lookup_domain(self.conn, name)
            if existing is not None and self._leftover(existing, planned):
                # Defined by an earlier apply that was interrupted before Terraform saved it.
                ctx.diagnostics.add_warning(
                    f"domain {name!r} existed (left by an interrupted run); adopted it"
                )
                dom = self.conn.defineXML(domain_xml(self.conn, planned, uuid=existing.UUIDString()))
                if dom.isActive():
                    dom.destroy()
                if planned.get("running") in (None, True):
                    dom.create()
                return domain_state(dom, planned)
            if existing is not None:
                meta = owner(ET.fromstring(existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
                whose = "it carries no halab ownership tag" if meta is None else (
                    f"it belongs to lab {meta['name']!r}")
                raise ProviderError(
                    f"domain {name!r} exists and is not lab {planned.get('lab')!r}'s ({whose}); halab "
                    "will not touch it",
                    f"Rename or remove it (virsh destroy {name}; virsh undefine {name}).",
                )
            dom = self.conn.defineXML(domain_xml(self.conn, planned))
            if planned.get("running") in (None, True):
                dom.create()
            return domain_state(dom, planned)
        if dom is not None:
            # Defined but not started: keep it in state (Terraform marks it tainted and replaces it).
            with reported(ctx.diagnostics, f"cannot read domain {name!r}"):
                return domain_state(dom, planned)
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        with reported(ctx.diagnostics, f"cannot read domain {current.get('name')!r}"):
            dom = lookup_domain(self.conn, current.get("id") or current["name"])
            return None if dom is None else domain_state(dom, current)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        planned = known(planned)
        name = current["name"]
        with reported(ctx.diagnostics, f"cannot update domain {name!r}"):
            dom = lookup_domain(self.conn, current["id"])
            if dom is None:
                raise ProviderError(
                    f"domain {name!r} disappeared during apply", "Run apply again to recreate it."
                )
            self._check_owner(dom, current, "update")
            redefine = any(_norm(current.get(k)) != _norm(planned.get(k)) for k in DEFINITION_FIELDS)
            want_running = planned.get("running") in (None, True)
            if redefine:
                dom = self.conn.defineXML(domain_xml(self.conn, planned, uuid=current["id"]))
                if dom.isActive():
                    dom.destroy()  # the new definition takes effect on the next start
            state = dom.state(0)[0]
            if want_running:
                if state == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                elif not dom.isActive():
                    dom.create()
            elif dom.isActive():
                dom.destroy()
            return domain_state(dom, planned)
        return current

    def delete(self, ctx: DeleteContext, current: State) -> None:
        name = current["name"]
        with reported(ctx.diagnostics, f"cannot delete domain {name!r}"):
            dom = lookup_domain(self.conn, current["id"]) if current.get("id") else None
            if dom is None:
                return None  # already gone (a same-named domain with another UUID is not ours)
            self._check_owner(dom, current, "delete")
            if dom.isActive():
                dom.destroy()
            try:
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                    raise
                dom.undefine()
            log = current.get("console_log")
            if log:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(log)
        return None

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"cannot import domain {id!r}"):
            dom = lookup_domain(self.conn, id)
            if dom is None:
                raise ProviderError(f"no domain named {id!r}")
            return domain_state(dom, {})
        return None


def _norm(value: Any) -> Any:
    """Compare values the way Terraform does: sets of nested blocks ignore order, numbers are numbers."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return sorted(repr(sorted(v.items())) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
