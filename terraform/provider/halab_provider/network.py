"""libvirt_network: a NAT or isolated network on its own bridge, optional static DHCP hosts."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt
from tf.blocks import SetNestedBlock
from tf.iface import CreateContext, DeleteContext, ImportContext, ReadContext, UpdateContext
from tf.schema import Attribute, Block, Schema
from tf.types import Bool, List, String
from tf.utils import Diagnostics

from halab_provider.common import (
    BaseResource,
    ProviderError,
    State,
    check_prefix,
    is_not_found,
    known,
    reported,
)

MODES = ("nat", "isolated")


def lookup_network(conn: libvirt.virConnect, ident: str) -> libvirt.virNetwork | None:
    for finder in (conn.networkLookupByUUIDString, conn.networkLookupByName):
        try:
            return finder(ident)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc) and exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise
    return None


def _host_xml(h: dict[str, Any]) -> str:
    name = f" name={quoteattr(h['name'])}" if h.get("name") else ""
    return f"<host mac={quoteattr(h['mac'].lower())}{name} ip={quoteattr(h['ip'])}/>"


def network_xml(planned: State, uuid: str | None = None) -> str:
    parts = ["<network>", f"<name>{_esc(planned['name'])}</name>"]
    if uuid:
        parts.append(f"<uuid>{uuid}</uuid>")
    if (planned.get("mode") or "nat") == "nat":
        parts.append("<forward mode='nat'/>")
    if planned.get("bridge"):
        parts.append(f"<bridge name={quoteattr(planned['bridge'])} stp='on' delay='0'/>")
    for cidr in planned.get("addresses") or []:
        net = ipaddress.ip_network(cidr, strict=False)
        gw = next(net.hosts())
        family = "ipv6" if net.version == 6 else "ipv4"
        parts.append(f"<ip family='{family}' address='{gw}' prefix='{net.prefixlen}'>")
        hosts = [h for h in planned.get("dhcp_host") or [] if ipaddress.ip_address(h["ip"]) in net]
        if hosts:
            parts.append("<dhcp>" + "".join(_host_xml(h) for h in hosts) + "</dhcp>")
        parts.append("</ip>")
    parts.append("</network>")
    return "".join(parts)


def _esc(text: str) -> str:
    return quoteattr(text)[1:-1]


def network_state(net: libvirt.virNetwork) -> dict[str, Any]:
    root = ET.fromstring(net.XMLDesc(0))
    fwd = root.find("forward")
    bridge = root.find("bridge")
    addresses: list[str] = []
    hosts: list[dict[str, Any]] = []
    for ip in root.findall("ip"):
        prefix = ip.get("prefix")
        if prefix is None and ip.get("netmask"):
            prefix = str(ipaddress.ip_network(f"0.0.0.0/{ip.get('netmask')}").prefixlen)
        addresses.append(str(ipaddress.ip_interface(f"{ip.get('address')}/{prefix}").network))
        for h in ip.findall("dhcp/host"):
            hosts.append({"mac": (h.get("mac") or "").lower(), "ip": h.get("ip"), "name": h.get("name")})
    return {
        "id": net.UUIDString(),
        "name": net.name(),
        "bridge": bridge.get("name") if bridge is not None else None,
        "mode": "nat" if fwd is not None and fwd.get("mode", "nat") == "nat" else "isolated",
        "addresses": addresses,
        "autostart": bool(net.autostart()),
        "running": bool(net.isActive()),
        "dhcp_host": hosts,
    }


def _same_network(have: State, want: State) -> bool:
    def hosts(st: State) -> set[tuple[str, str]]:
        return {(h["mac"].lower(), h["ip"]) for h in st.get("dhcp_host") or []}

    return (
        have["addresses"] == list(want.get("addresses") or [])
        and have["mode"] == (want.get("mode") or "nat")
        and (not want.get("bridge") or have["bridge"] == want["bridge"])
        and hosts(have) == hosts(want)
    )


class NetworkResource(BaseResource):
    @classmethod
    def get_name(cls) -> str:
        return "network"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=0,
            description="A libvirt virtual network (NAT or isolated) on its own bridge.",
            attributes=[
                Attribute("id", String(), computed=True, description="The network's UUID."),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute(
                    "bridge",
                    String(),
                    optional=True,
                    computed=True,
                    requires_replace=True,
                    description="Bridge device name (at most 15 characters); libvirt picks one if unset.",
                ),
                Attribute(
                    "mode",
                    String(),
                    optional=True,
                    computed=True,
                    default="nat",
                    requires_replace=True,
                    description="`nat` or `isolated`.",
                ),
                Attribute(
                    "addresses",
                    List(String()),
                    required=True,
                    requires_replace=True,
                    description='Network CIDRs, e.g. `["10.77.0.0/24"]`; the host (gateway, DNS) '
                    "takes the first address.",
                ),
                Attribute("autostart", Bool(), optional=True, computed=True, default=True),
                Attribute(
                    "running",
                    Bool(),
                    optional=True,
                    computed=True,
                    default=True,
                    description="Whether the network is active; a network stopped outside Terraform "
                    "shows as drift.",
                ),
            ],
            block_types=[
                SetNestedBlock(
                    "dhcp_host",
                    Block(
                        attributes=[
                            Attribute("mac", String(), required=True),
                            Attribute("ip", String(), required=True),
                            Attribute("name", String(), optional=True),
                        ]
                    ),
                ),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: dict[str, Any]) -> None:
        super().validate(diags, type_name, config)
        mode = config.get("mode")
        if isinstance(mode, str) and mode not in MODES:
            diags.add_error(f"mode must be one of {', '.join(MODES)} (got {mode!r})", path=["mode"])
        bridge = config.get("bridge")
        if isinstance(bridge, str) and len(bridge) > 15:
            diags.add_error(f"bridge {bridge!r} is longer than Linux's 15 characters", path=["bridge"])
        for cidr in config.get("addresses") or []:
            if not isinstance(cidr, str):
                continue
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                diags.add_error(
                    f"addresses: {cidr!r} is not a network in CIDR form: {exc}", path=["addresses"]
                )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        planned = known(planned)
        name = planned["name"]
        with reported(ctx.diagnostics, f"cannot create network {name!r}"):
            check_prefix(self.provider, "network", name)
            existing = lookup_network(self.conn, name)
            if (
                existing is not None
                and self.provider.name_prefix
                and _same_network(network_state(existing), planned)
            ):
                ctx.diagnostics.add_warning(
                    f"network {name!r} existed (left by an interrupted run); adopted it"
                )
                existing.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
                if planned.get("running") in (None, True) and not existing.isActive():
                    existing.create()
                return network_state(existing)
            if existing is not None:
                raise ProviderError(
                    f"network {name!r} exists and is not this lab's (another definition); halab will not "
                    "touch it",
                    f"Rename or remove it (virsh net-destroy {name}; virsh net-undefine {name}).",
                )
            net = self.conn.networkDefineXML(network_xml(planned))
            try:
                net.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
                if planned.get("running") in (None, True):
                    net.create()
            except libvirt.libvirtError:
                net.undefine()
                raise
            return network_state(net)
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        with reported(ctx.diagnostics, f"cannot read network {current.get('name')!r}"):
            net = lookup_network(self.conn, current.get("id") or current["name"])
            return None if net is None else network_state(net)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        planned = known(planned)
        name = current["name"]
        with reported(ctx.diagnostics, f"cannot update network {name!r}"):
            check_prefix(self.provider, "network", name)
            net = lookup_network(self.conn, current["id"])
            if net is None:
                raise ProviderError(f"network {name!r} disappeared during apply")
            old_hosts = {(h["mac"].lower(), h["ip"], h.get("name")) for h in current.get("dhcp_host") or []}
            new_hosts = {(h["mac"].lower(), h["ip"], h.get("name")) for h in planned.get("dhcp_host") or []}
            if old_hosts != new_hosts:
                # The persistent definition first, then the running dnsmasq (if the network is up).
                self.conn.networkDefineXML(network_xml(planned, uuid=current["id"]))
                if net.isActive():
                    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                    section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
                    for mac, ip, hname in old_hosts - new_hosts:
                        net.update(
                            libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                            section,
                            -1,
                            _host_xml({"mac": mac, "ip": ip, "name": hname}),
                            flags,
                        )
                    for mac, ip, hname in new_hosts - old_hosts:
                        net.update(
                            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                            section,
                            -1,
                            _host_xml({"mac": mac, "ip": ip, "name": hname}),
                            flags,
                        )
            net.setAutostart(1 if planned.get("autostart") in (None, True) else 0)
            want_running = planned.get("running") in (None, True)
            if want_running and not net.isActive():
                net.create()
            elif not want_running and net.isActive():
                net.destroy()
            return network_state(net)
        return current

    def delete(self, ctx: DeleteContext, current: State) -> None:
        name = current["name"]
        with reported(ctx.diagnostics, f"cannot delete network {name!r}"):
            check_prefix(self.provider, "network", name)
            net = lookup_network(self.conn, current["id"]) if current.get("id") else None
            if net is None:
                return None  # already gone (a same-named network with another UUID is not ours)
            if net.isActive():
                net.destroy()
            net.undefine()
        return None

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"cannot import network {id!r}"):
            net = lookup_network(self.conn, id)
            if net is None:
                raise ProviderError(f"no network named {id!r}")
            return network_state(net)
        return None
