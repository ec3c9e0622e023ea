"""A thin libvirt wrapper bound to one lab.

A domain belongs to a lab only if its ``<metadata>`` carries
``<halab:lab xmlns:halab="https://halab.dev/xmlns/lab/1" name=LAB node=NODE role=ROLE/>``.
Names alone prove nothing: a domain called ``halab-api-2`` without that element (or with another
lab's name in it) is never listed, never returned by :meth:`LabVirt.domain` and never faulted.
"""

from __future__ import annotations

import contextlib
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import libvirt

from halab.errors import ConfigError, HalabError, UsageError
from halab.lab.config import LabConfig

# The ownership tag's namespace. The Terraform provider (terraform/provider, run without halab on its
# path) writes the same tag: its common.HALAB_NS must equal this (tests/unit/test_constants.py).
HALAB_XMLNS = "https://halab.dev/xmlns/lab/1"
HALAB_XMLNS_PREFIX = "halab"


def _silence_libvirt(_ctx: Any, _err: Any) -> None:
    """libvirt's default error handler writes every error to stderr; the core never prints."""


libvirt.registerErrorHandler(_silence_libvirt, None)


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut off"
    CRASHED = "crashed"
    SAVED = "saved"  # shut off with its memory saved to disk (`./lab.py stop`)
    MISSING = "missing"


_STATE_MAP = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # being shut down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
}


def state_of(dom: libvirt.virDomain) -> DomainState:
    code, _reason = dom.state()
    state = _STATE_MAP.get(code, DomainState.RUNNING)
    if state == DomainState.SHUT_OFF:
        try:
            if dom.hasManagedSaveImage(0):
                return DomainState.SAVED
        except libvirt.libvirtError:
            pass
    return state


@dataclass(frozen=True)
class Ownership:
    lab: str
    node: str
    role: str


@dataclass(frozen=True)
class Interface:
    """One network interface of a domain, as the live XML shows it."""

    mac: str
    target_dev: str | None  # host-side tap (vnetN) while running; None when shut off
    xml: str  # the <interface> element, for updateDeviceFlags


def ownership_xml(lab: str, node: str, role: str) -> str:
    """The metadata element a lab's domain carries (for whoever defines domains)."""
    el = ET.Element(f"{{{HALAB_XMLNS}}}lab", {"name": lab, "node": node, "role": role})
    ET.register_namespace(HALAB_XMLNS_PREFIX, HALAB_XMLNS)
    return ET.tostring(el, encoding="unicode")


def read_ownership(dom: libvirt.virDomain) -> Ownership | None:
    """The halab ownership tag of a domain, or None if it carries none (or an unreadable one)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, HALAB_XMLNS)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
            return None
        raise
    try:
        el = ET.fromstring(text)
    except ET.ParseError:
        return None
    lab, node, role = el.get("name"), el.get("node"), el.get("role")
    if not lab or not node:
        return None
    return Ownership(lab=lab, node=node, role=role or "")


def interfaces_of(dom: libvirt.virDomain) -> list[Interface]:
    root = ET.fromstring(dom.XMLDesc(0))
    out: list[Interface] = []
    for el in root.findall("./devices/interface"):
        mac_el = el.find("mac")
        target = el.find("target")
        out.append(Interface(
            mac=(mac_el.get("address") or "") if mac_el is not None else "",
            target_dev=target.get("dev") if target is not None else None,
            xml=ET.tostring(el, encoding="unicode"),
        ))
    return out


class LabVirt:
    """libvirt access for one lab. ``conn`` may be passed in (tests keep one ``test:///default``
    connection, since that driver's state lives per connection). A lab over several hosts has one
    connection per host, opened when first needed; ``conn`` is the first host's."""

    def __init__(self, cfg: LabConfig, conn: libvirt.virConnect | None = None):
        self.cfg = cfg
        self._conn = conn
        self._owns_conn = conn is None
        self._lock = threading.Lock()
        self._host_conns: dict[str, libvirt.virConnect] = {}

    # ---- connection --------------------------------------------------------------------------
    @staticmethod
    def _open(uri: str, host: str | None = None) -> libvirt.virConnect:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as exc:
            where = f"host {host!r}: " if host else ""
            raise HalabError(
                f"{where}cannot connect to libvirt at {uri}: {_libvirt_message(exc)}. Is libvirtd "
                "running there? `./lab.py doctor` checks every host and says how to start it."
            ) from None

    @property
    def conn(self) -> libvirt.virConnect:
        if self.cfg.hosts and self._conn is None:
            return self.host_conn(self.cfg.hosts[0].name)
        with self._lock:
            if self._conn is None:
                self._conn = self._open(self.cfg.libvirt_uri)
            return self._conn

    def host_conn(self, host: str) -> libvirt.virConnect:
        """The connection to one host of a lab over several (a passed-in connection serves all)."""
        if self._conn is not None and not self._owns_conn:
            return self._conn
        with self._lock:
            if host not in self._host_conns:
                self._host_conns[host] = self._open(self.cfg.host(host).uri, host)
            return self._host_conns[host]

    def conn_for(self, node_name: str) -> libvirt.virConnect:
        """The connection to the host a node runs on."""
        h = self.cfg.host_of(node_name)
        return self.conn if h is None else self.host_conn(h.name)

    def connections(self) -> list[tuple[str | None, libvirt.virConnect]]:
        """(host name, connection) for every host the lab runs on; (None, conn) on one host."""
        if not self.cfg.hosts:
            return [(None, self.conn)]
        if self._conn is not None and not self._owns_conn:
            return [(None, self._conn)]
        return [(h.name, self.host_conn(h.name)) for h in self.cfg.hosts]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._owns_conn:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
            for c in self._host_conns.values():
                with contextlib.suppress(libvirt.libvirtError):
                    c.close()
            self._host_conns.clear()
            self._conn = None

    def __enter__(self) -> LabVirt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lookup ------------------------------------------------------------------------------
    def domains(self) -> dict[str, libvirt.virDomain]:
        """This lab's domains by node name, found by ownership metadata only (on every host)."""
        out: dict[str, libvirt.virDomain] = {}
        for _host, conn in self.connections():
            for dom in conn.listAllDomains(0):
                try:
                    own = read_ownership(dom)
                except libvirt.libvirtError:
                    continue  # vanished between listing and reading
                if own is not None and own.lab == self.cfg.name:
                    out[own.node] = dom
        return out

    def domain(self, node_name: str) -> libvirt.virDomain:
        """The libvirt domain of one node. UsageError for an unknown node, a node whose domain does
        not exist, or a domain that exists under the expected name but is not this lab's."""
        try:
            self.cfg.node(node_name)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        conn = self.conn_for(node_name)
        dname = self.cfg.domain_name(node_name)
        try:
            dom = conn.lookupByName(dname)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            own = read_ownership(dom)
            if own is not None and own.lab == self.cfg.name and own.node == node_name:
                return dom
        found = self.domains().get(node_name)  # renamed, or on another host than expected
        if found is not None:
            return found
        if dom is None:
            raise UsageError(
                f"node {node_name!r} of lab {self.cfg.name!r} has no domain (expected {dname!r} on "
                f"{self.cfg.uri_of(node_name)}); is the lab up? `./lab.py up` creates it"
            )
        own = read_ownership(dom)
        whose = "carries no halab ownership tag" if own is None else (
            f"belongs to lab {own.lab!r} (node {own.node!r})")
        raise UsageError(
            f"domain {dname!r} {whose}, not lab {self.cfg.name!r}; halab does not touch it"
        )

    def node_for(self, dom: libvirt.virDomain) -> str:
        """The node name of a domain of this lab; UsageError otherwise."""
        own = read_ownership(dom)
        if own is None or own.lab != self.cfg.name:
            raise UsageError(f"domain {dom.name()!r} is not a domain of lab {self.cfg.name!r}")
        return own.node

    # ---- state -------------------------------------------------------------------------------
    def state(self, node_name: str) -> DomainState:
        try:
            self.cfg.node(node_name)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        dom = self.domains().get(node_name)
        return DomainState.MISSING if dom is None else state_of(dom)

    def states(self) -> dict[str, DomainState]:
        """State of every node in the config, in config order; MISSING when there is no owned domain."""
        doms = self.domains()
        out: dict[str, DomainState] = {}
        for n in self.cfg.nodes():
            dom = doms.get(n.name)
            if dom is None:
                out[n.name] = DomainState.MISSING
                continue
            try:
                out[n.name] = state_of(dom)
            except libvirt.libvirtError:
                out[n.name] = DomainState.MISSING
        return out

    def interfaces(self, node_name: str) -> list[Interface]:
        return interfaces_of(self.domain(node_name))


# ---- the total sweep `down` ends with ------------------------------------------------------------


@dataclass
class Sweep:
    """What :func:`sweep_lab` removed, and what it could not (each with the command that would)."""

    removed: list[str]
    left: list[tuple[str, str]]  # (object, command that removes it)
    foreign: list[str]  # same-named objects that are not this lab's: never touched


def _undefine_domain(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)
        dom.undefine()


def _libvirt_message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


def sweep_lab(cfg: LabConfig, pool_path: str | None, conn: libvirt.virConnect | None = None) -> Sweep:
    """Remove everything of this lab that libvirt still has after `terraform destroy` (or instead of
    it, when the state was lost): domains by ownership metadata (with managed-save images), the
    lab's network, its pool's volumes and console logs, the pool and its directory — on every host
    of a lab over several. Objects are the lab's by ownership tag (domains) or by the lab's own
    names (network, pool, ``<lab>-`` files). Idempotent; a libvirt that cannot be reached raises
    HalabError."""
    out = Sweep([], [], [])
    if not cfg.hosts or conn is not None:
        _sweep_host(cfg, None, cfg.libvirt_uri, pool_path, conn, out)
        return out
    from halab.lab.terraform import default_pool_path

    for h in cfg.hosts:
        _sweep_host(cfg, h.name, h.uri, default_pool_path(cfg.name, h.uri) if h.ssh is not None or pool_path
                    is None else pool_path, None, out, local_files=h.ssh is None)
    return out


def _sweep_host(cfg: LabConfig, host: str | None, uri: str, pool_path: str | None,
                conn: libvirt.virConnect | None, out: Sweep, local_files: bool = True) -> None:
    """One host's part of the sweep. Files libvirt does not list are removed only on this machine."""
    virsh = f"virsh -c {uri}"
    on = f" on host {host}" if host else ""
    with LabVirt(cfg, conn) as virt:
        c = virt.conn if host is None else virt.host_conn(host)
        for dom in c.listAllDomains(0):
            try:
                own = read_ownership(dom)
            except libvirt.libvirtError:
                continue
            if own is None or own.lab != cfg.name:
                continue
            name = dom.name()
            try:
                _undefine_domain(dom)
                out.removed.append(f"domain {name}{on}")
            except libvirt.libvirtError as exc:
                out.left.append((f"domain {name}{on} ({_libvirt_message(exc)})",
                                 f"{virsh} destroy {name}; {virsh} undefine {name} --managed-save"))
        owned = {cfg.domain_name(n) for n in cfg.nodes()}
        for dom in c.listAllDomains(0):
            if dom.name() in owned:  # still there by name: not ours (ours were just removed)
                out.foreign.append(f"domain {dom.name()}{on}")
        try:
            net = c.networkLookupByName(cfg.network_name)
        except libvirt.libvirtError:
            net = None
        if net is not None:
            try:
                persistent = net.isPersistent()
                if net.isActive():
                    net.destroy()
                if persistent:
                    net.undefine()
                out.removed.append(f"network {cfg.network_name}{on}")
            except libvirt.libvirtError as exc:
                out.left.append((f"network {cfg.network_name}{on} ({_libvirt_message(exc)})",
                                 f"{virsh} net-destroy {cfg.network_name}; {virsh} net-undefine "
                                 f"{cfg.network_name}"))
        pool_name = f"{cfg.name}-pool"
        try:
            pool = c.storagePoolLookupByName(pool_name)
        except libvirt.libvirtError:
            pool = None
        prefix = f"{cfg.name}-"
        if pool is not None:
            try:
                if not pool.isActive():
                    pool.create(0)
                pool.refresh(0)
                target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
                pool_path = target or pool_path
                for vol in pool.listAllVolumes(0):
                    if vol.name().startswith(prefix):
                        vol.delete(0)
                        out.removed.append(f"volume {vol.name()}{on}")
            except libvirt.libvirtError as exc:
                out.left.append((f"volumes of pool {pool_name}{on} ({_libvirt_message(exc)})",
                                 f"{virsh} vol-list {pool_name}; "
                                 f"{virsh} vol-delete VOLUME --pool {pool_name}"))
        # Files libvirt does not list as volumes (console logs written while a domain ran, a partial
        # upload), then the pool itself, whose delete removes its (now empty) directory.
        files_here = local_files and pool_path and not uri.startswith("test:")
        if files_here:
            _sweep_files(pool_path, prefix, out)
        try:
            pool = c.storagePoolLookupByName(pool_name)
        except libvirt.libvirtError:
            pool = None
        if pool is not None:
            try:
                persistent = pool.isPersistent()
                if pool.isActive():
                    pool.destroy()
                if persistent:
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.delete(0)  # the directory; refuses (kept) when something else is in it
                    pool.undefine()
                out.removed.append(f"storage pool {pool_name}{on}")
            except libvirt.libvirtError as exc:
                out.left.append((f"storage pool {pool_name}{on} ({_libvirt_message(exc)})",
                                 f"{virsh} pool-destroy {pool_name}; {virsh} pool-undefine {pool_name}"))
    if files_here:
        import os

        with contextlib.suppress(FileNotFoundError):
            try:
                os.rmdir(pool_path)
            except OSError:
                rest = sorted(os.listdir(pool_path))
                out.left.append((f"directory {pool_path} (holds {', '.join(rest[:5])}"
                                 f"{', …' if len(rest) > 5 else ''}: not the lab's files)",
                                 f"rm -r {pool_path}"))


def _sweep_files(pool_path: str, prefix: str, out: Sweep) -> None:
    import os

    try:
        names = sorted(os.listdir(pool_path))
    except FileNotFoundError:
        return
    except OSError as exc:
        out.left.append((f"files in {pool_path} ({exc.strerror})", f"rm {pool_path}/{prefix}*"))
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        path = os.path.join(pool_path, name)
        try:
            os.unlink(path)
            out.removed.append(f"file {path}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            out.left.append((f"file {path} ({exc.strerror})", f"rm {path}"))


class ForeignDomain(HalabError):
    """A domain with one of the lab's names exists but is not the lab's: halab never touches it."""


def foreign_domains(cfg: LabConfig, conn: libvirt.virConnect | None = None) -> list[str]:
    """One sentence per domain that has a node's name but not this lab's ownership tag."""
    out: list[str] = []
    with LabVirt(cfg, conn) as virt:
        ours = set(virt.domains())
        for n in cfg.nodes():
            if n.name in ours:
                continue
            name = cfg.domain_name(n)
            try:
                dom = virt.conn_for(n.name).lookupByName(name)
            except libvirt.libvirtError:
                continue
            own = read_ownership(dom)
            whose = "carries no halab ownership tag" if own is None else f"belongs to lab {own.lab!r}"
            out.append(f"domain {name!r} exists and is not lab {cfg.name!r}'s (it {whose}); halab will not "
                       f"touch it — rename or remove it (virsh -c {cfg.uri_of(n.name)} destroy {name}; "
                       f"virsh -c {cfg.uri_of(n.name)} undefine {name})")
    return out


def refuse_foreign_domains(cfg: LabConfig, conn: libvirt.virConnect | None = None) -> None:
    """ForeignDomain naming each same-named domain that is not the lab's (before Terraform runs)."""
    found = foreign_domains(cfg, conn)
    if found:
        raise ForeignDomain("; ".join(found) if len(found) == 1 else "\n".join(f"  {f}" for f in found))
