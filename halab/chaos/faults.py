"""Reversible faults on one lab's nodes, remembered in ``lab_state_dir(name)/faults.json``.

Every fault acts only on a domain carrying this lab's ownership tag (``LabVirt.domain`` refuses any
other). Each fault that leaves the lab changed is recorded as active until undone, so ``restore()``
— in this process or a later one — undoes them all.

Host commands (``tc``) go through a ``HostRunner`` (argv -> (rc, out, err)); guest commands through
an ``SshRunner`` ((node, command) -> (rc, out, err)), e.g. ``halab.lab.ssh.run``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from halab import fault_kinds
from halab.atomic import write_atomic
from halab.chaos.boot_priority import BootPriority
from halab.errors import ConfigError, HalabError, UsageError
from halab.lab.config import LabConfig
from halab.lab.virt import DomainState, LabVirt, interfaces_of, state_of
from halab.lock import LabLock
from halab.paths import lab_state_dir

HostRunner = Callable[[Sequence[str]], tuple[int, str, str]]
SshRunner = Callable[[str, str], tuple[int, str, str]]

# The service each role exists for (stop-service without a name stops this one).
ROLE_SERVICES: dict[str, str] = {
    "haproxy": "haproxy",
    "api": "halab-api",
    "db": "mariadb",
    "mq": "rabbitmq-server",
}
_SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}\Z")  # \Z: no trailing newline

# Derived from the registry (halab.fault_kinds), kept here for the callers that read them from faults.
UNDO = fault_kinds.UNDO
ACTIONS = fault_kinds.ACTIONS


def run_host(argv: Sequence[str], timeout: float = 15.0) -> tuple[int, str, str]:
    """Run a host command; (rc, stdout, stderr). Missing programs give rc 127."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)}: timed out after {timeout:g} s"
    return p.returncode, p.stdout, p.stderr


@dataclass(frozen=True)
class ActiveFault:
    kind: str  # one of UNDO's keys
    node: str
    started: float  # wall-clock seconds
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.node, str(self.params.get("service", "")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultEvent:
    """One fault action done (for the timeline): e.g. action='kill', node='api-2'."""

    action: str
    node: str
    at: float  # wall-clock seconds, taken just before the libvirt / tc / ssh call
    detail: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return f"{self.action} {self.node}" + (f" ({self.detail})" if self.detail else "")


class FaultStore:
    """Active faults as JSON, guarded by an flock so two processes do not lose each other's records."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self) -> list[ActiveFault]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise HalabError(f"{self.path}: unreadable fault record ({exc}); remove it after checking "
                             "the lab by hand") from None
        return self._parse(data)

    def _parse(self, data: Any) -> list[ActiveFault]:
        """The records in `data`; an empty file-level value ({}, [], null) is no faults. A record
        that names no fault to undo is an error naming it, not a traceback: guessing could leave
        a fault in place or undo something that was never done."""
        entries = data.get("active", []) if isinstance(data, dict) else data if data is not None else []
        if not isinstance(entries, list):
            raise HalabError(f"{self.path}: damaged fault record ('active' is not a list); check the "
                             "lab by hand (`./lab.py status`), then remove the file")
        out: list[ActiveFault] = []
        for i, d in enumerate(entries):
            problem = ("is not an object" if not isinstance(d, dict) else
                       "has no fault kind" if not isinstance(d.get("kind"), str) else
                       f"has an unknown kind {str(d['kind'])[:40]!r}" if d["kind"] not in UNDO else
                       "names no node" if not isinstance(d.get("node"), str) or not d["node"] else "")
            if problem:
                raise HalabError(f"{self.path}: damaged fault record: entry {i + 1} {problem}; check the "
                                 "lab by hand (`./lab.py status`), then remove the file")
            started = d.get("started")
            params = d.get("params")
            out.append(ActiveFault(d["kind"], d["node"],
                                   float(started) if isinstance(started, int | float) else 0.0,
                                   dict(params) if isinstance(params, dict) else {}))
        return out

    def _write(self, faults: list[ActiveFault]) -> None:
        write_atomic(self.path, json.dumps({"active": [f.to_dict() for f in faults]}, indent=2) + "\n")

    def load(self) -> list[ActiveFault]:
        with self._locked():
            return self._read()

    def replace(self, faults: list[ActiveFault]) -> None:
        """The whole record at once (a reset makes it match the restored lab)."""
        with self._locked():
            self._write(list(faults))

    def add(self, fault: ActiveFault) -> None:
        with self._locked():
            faults = [f for f in self._read() if f.key != fault.key]
            faults.append(fault)
            self._write(faults)

    def remove(self, kind: str, node: str, service: str | None = None) -> list[ActiveFault]:
        """Remove matching records (any service if service is None); returns the removed ones."""
        with self._locked():
            faults = self._read()
            gone = [f for f in faults if f.kind == kind and f.node == node
                    and (service is None or f.params.get("service", "") == service)]
            if gone:
                self._write([f for f in faults if f not in gone])
            return gone


def _changes_nodes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A fault method changes the lab's nodes: it holds the lab lock (re-entrant in one process, so
    a scenario that holds it can run faults), and refuses while another run changes the lab."""
    import functools

    @functools.wraps(fn)
    def wrapper(self: Faults, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return fn(self, *args, **kwargs)

    return wrapper


class Faults:
    """Fault injection for one lab. ``on_event`` receives a FaultEvent for each action done."""

    def __init__(
        self,
        cfg: LabConfig,
        virt: LabVirt | None = None,
        *,
        ssh: SshRunner | None = None,
        host_run: HostRunner = run_host,
        state_dir: Path | None = None,
        on_event: Callable[[FaultEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        clock_ssh: Callable[[], Any] | str | None = "lab",
    ):
        self.cfg = cfg
        self.virt = virt or LabVirt(cfg)
        self.ssh = ssh
        self.host_run = host_run
        self.store = FaultStore((state_dir or lab_state_dir(cfg.name)) / "faults.json")
        # The lab lock: a fault waits for no one, it refuses while up/heal/down/reset change the lab.
        self.lock = LabLock(state_dir or lab_state_dir(cfg.name), cfg.name)
        self.on_event = on_event
        self.clock = clock
        # A warm revive steps the node's clock over SSH: "lab" = the lab's own SSH, None = do not.
        self.clock_ssh = clock_ssh
        # Set by processes that watch the lab (they settle it): a booting node yields CPU.
        self.boot_priority: BootPriority | None = None

    # ---- bookkeeping -------------------------------------------------------------------------
    def active(self) -> list[ActiveFault]:
        return self.store.load()

    def _emit(self, action: str, node: str, at: float, detail: str = "", **params: Any) -> FaultEvent:
        ev = FaultEvent(action, node, at, detail, params)
        if self.on_event is not None:
            self.on_event(ev)
        return ev

    def _dom(self, node: str) -> libvirt.virDomain:
        return self.virt.domain(node)  # UsageError for unknown / foreign domains

    @staticmethod
    def _call(what: str, node: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except libvirt.libvirtError as exc:
            raise HalabError(f"{what} {node}: libvirt refused: {exc}") from None

    def apply(self, action: str, node: str, **params: Any) -> FaultEvent:
        """Dispatch by action name (CLI, scenarios, measurement)."""
        kind = fault_kinds.BY_NAME.get(action)
        if kind is None:
            raise UsageError(f"unknown fault {action!r}; known: {', '.join(ACTIONS)}")
        fn = getattr(self, kind.method)
        return fn(node, **params)

    def undo(self, action: str, node: str, **params: Any) -> FaultEvent:
        """The reverse of a fault action (kill -> revive, ...)."""
        if action not in UNDO:
            raise UsageError(f"{action!r} has nothing to undo")
        accepts = {p.name for p in fault_kinds.kind(UNDO[action]).params}
        keep = {k: v for k, v in params.items() if k in accepts}
        return self.apply(UNDO[action], node, **keep)

    # ---- power -------------------------------------------------------------------------------
    @_changes_nodes
    def kill(self, node: str) -> FaultEvent:
        dom = self._dom(node)
        st = state_of(dom)
        if st == DomainState.SHUT_OFF:
            raise UsageError(f"{node} is already shut off; `revive {node}` starts it")
        at = self.clock()
        self._call("kill", node, dom.destroy)
        if self.boot_priority is not None:
            self.boot_priority.forget(node)
        self.store.remove("pause", node)
        self.store.add(ActiveFault("kill", node, at))
        return self._emit("kill", node, at, "power cut (libvirt destroy)")

    def revive_kind(self, node: str, warm: bool | None = None) -> str:
        """'warm' (from the `ready` checkpoint) or 'cold' (a boot) for reviving this node: asked
        for, else lab.yaml's `revive` (auto: warm for stateless roles under TCG, where a cold boot
        takes a core for minutes, cold on KVM). A stateful node is never warm."""
        from halab.lab.checkpoint import READY, CheckpointError, check_definition, find_checkpoint

        warm_roles = fault_kinds.kind("revive").warm_roles
        role = self.cfg.node(node).role
        if warm and role not in warm_roles:
            data = "database" if role == "db" else "queue"
            raise UsageError(
                f"{node} is a {role} node: it is never revived warm — its data moved on since the "
                f"checkpoint, and restoring it alone would roll back the {data}. Revive it cold "
                f"(./lab.py revive {node})")
        if warm is None:
            policy = self.cfg.revive
            if policy == "cold" or role not in warm_roles:
                return "cold"
            if policy == "auto":
                from halab.lab.lifecycle import lab_accel

                if lab_accel(self.cfg) == "kvm":
                    return "cold"
                try:  # auto falls back to a boot when there is no usable checkpoint
                    check_definition(self.cfg, find_checkpoint(self.cfg, READY), [node])
                except CheckpointError:
                    return "cold"
            return "warm"
        return "warm" if warm else "cold"

    @_changes_nodes
    def revive(self, node: str, warm: bool | None = None, checkpoint: str = "ready") -> FaultEvent:
        dom = self._dom(node)
        st = state_of(dom)
        at = self.clock()
        if st == DomainState.SAVED:
            raise UsageError(f"{node} is saved to disk with the rest of the lab: `./lab.py start` "
                             "brings the whole lab back")
        kind = self.revive_kind(node, warm)  # refuses a warm stateful node whatever its state
        if st not in (DomainState.SHUT_OFF, DomainState.CRASHED):
            kind = ""
        if kind == "warm":
            from halab.lab.checkpoint import WarmLab
            from halab.lab.lifecycle import lab_ssh

            factory = (lambda: lab_ssh(self.cfg)) if self.clock_ssh == "lab" else self.clock_ssh
            with WarmLab(self.cfg, self.virt, ssh_factory=factory) as warm_lab:  # type: ignore[arg-type]
                try:
                    res = warm_lab.warm_revive(node, checkpoint)
                except libvirt.libvirtError as exc:
                    raise HalabError(f"warm revive {node}: libvirt refused: {exc}") from None
            if self.boot_priority is not None:
                self.boot_priority.forget(node)
            detail = (f"warm from checkpoint {checkpoint!r} in {res.seconds.get('total', 0):.1f} s"
                      + (", clock stepped" if res.clock_offsets_s else ""))
        elif st in (DomainState.SHUT_OFF, DomainState.CRASHED):
            if st == DomainState.CRASHED:
                self._call("revive", node, dom.destroy)
            self._call("revive", node, dom.create)
            detail = self._booting(node, "cold boot")
        elif st == DomainState.PAUSED:
            self._call("revive", node, dom.resume)
            detail = "was paused: resumed"
        elif self.store.remove("kill", node):
            detail = "already running"
        else:
            raise UsageError(f"{node} is already running")
        # A fresh QEMU process has a fresh tap: link state and qdiscs are gone with the old one.
        for gone in ("kill", "pause", "netcut", "netem"):
            self.store.remove(gone, node)
        if kind:
            return self._emit("revive", node, at, detail, revive=kind)
        return self._emit("revive", node, at, detail)

    @_changes_nodes
    def pause(self, node: str) -> FaultEvent:
        dom = self._dom(node)
        st = state_of(dom)
        if st != DomainState.RUNNING:
            raise UsageError(f"cannot pause {node}: it is {st.value}")
        at = self.clock()
        self._call("pause", node, dom.suspend)
        self.store.add(ActiveFault("pause", node, at))
        return self._emit("pause", node, at, "frozen (libvirt suspend)")

    @_changes_nodes
    def resume(self, node: str) -> FaultEvent:
        dom = self._dom(node)
        st = state_of(dom)
        at = self.clock()
        if st == DomainState.PAUSED:
            self._call("resume", node, dom.resume)
        elif not self.store.remove("pause", node):
            raise UsageError(f"{node} is not paused (it is {st.value})")
        self.store.remove("pause", node)
        return self._emit("resume", node, at)

    @_changes_nodes
    def reboot(self, node: str, hard: bool = True) -> FaultEvent:
        """Hard reset (like the reset button) by default; ``hard=False`` asks the guest (ACPI)."""
        dom = self._dom(node)
        st = state_of(dom)
        if st != DomainState.RUNNING:
            raise UsageError(f"cannot reboot {node}: it is {st.value}")
        at = self.clock()
        if hard:
            self._call("reboot", node, lambda: dom.reset(0))
        else:
            self._call("reboot", node, lambda: dom.reboot(0))
        return self._emit("reboot", node, at, self._booting(node, "hard reset" if hard else "guest reboot"))

    def _booting(self, node: str, detail: str) -> str:
        note = self.boot_priority.lower(node) if self.boot_priority is not None else ""
        return f"{detail}; {note}" if note else detail

    # ---- whole hosts (a lab over several) ------------------------------------------------------
    def _host(self, host: str) -> str:
        if not self.cfg.hosts:
            raise UsageError(f"lab {self.cfg.name!r} runs on one host: host faults need lab.yaml hosts:")
        try:
            return self.cfg.host(host).name
        except ConfigError as exc:
            raise UsageError(str(exc)) from None

    @_changes_nodes
    def host_cut(self, host: str) -> FaultEvent:
        from halab.lab import hostshell, tunnel

        host = self._host(host)
        at = self.clock()
        try:
            tunnel.cut(self.cfg, host)
        except hostshell.HostCommandError as exc:
            raise HalabError(f"host-cut {host}: {exc}") from None
        self.store.add(ActiveFault("host-cut", host, at))
        names = ", ".join(n.name for n in self.cfg.nodes_on(host))
        return self._emit("host-cut", host, at, f"tunnel {self.cfg.tunnel_name} down: {names} cut off")

    @_changes_nodes
    def host_restore(self, host: str) -> FaultEvent:
        from halab.lab import hostshell, tunnel

        host = self._host(host)
        at = self.clock()
        try:
            tunnel.ensure(self.cfg, only=host)
        except hostshell.HostCommandError as exc:
            raise HalabError(f"host-restore {host}: {exc}") from None
        self.store.remove("host-cut", host)
        return self._emit("host-restore", host, at, f"tunnel {self.cfg.tunnel_name} up again")

    @_changes_nodes
    def host_kill(self, host: str) -> FaultEvent:
        host = self._host(host)
        have = self.virt.domains()  # only the lab's own domains (ownership tag); a missing one is skipped
        doms = [(n.name, have[n.name]) for n in self.cfg.nodes_on(host) if n.name in have]
        alive = [(n, d) for n, d in doms if state_of(d) not in (DomainState.SHUT_OFF, DomainState.CRASHED)]
        if not alive:
            raise UsageError(f"every node of host {host} is already shut off; `host-revive {host}` "
                             "starts them")
        at = self.clock()
        for n, d in alive:  # as close to "at once" as libvirt allows: no waiting between them
            self._call("host-kill", n, d.destroy)
            if self.boot_priority is not None:
                self.boot_priority.forget(n)
            self.store.remove("pause", n)
        self.store.add(ActiveFault("host-kill", host, at))
        return self._emit("host-kill", host, at, f"power cut: {', '.join(n for n, _ in alive)}")

    @_changes_nodes
    def host_revive(self, host: str) -> FaultEvent:
        host = self._host(host)
        at = self.clock()
        started: list[str] = []
        have = self.virt.domains()
        for n in self.cfg.nodes_on(host):
            dom = have.get(n.name)
            if dom is None:
                continue  # no domain at all: `heal` makes it, not a revive
            st = state_of(dom)
            if st == DomainState.CRASHED:
                self._call("host-revive", n.name, dom.destroy)
            if st in (DomainState.SHUT_OFF, DomainState.CRASHED):
                self._call("host-revive", n.name, dom.create)
                self._booting(n.name, "cold boot")
                self.store.remove("kill", n.name)
                started.append(n.name)
        self.store.remove("host-kill", host)
        return self._emit("host-revive", host, at, f"cold boot: {', '.join(started) or 'nothing was off'}")

    # ---- network -----------------------------------------------------------------------------
    def _set_links(self, node: str, state: str) -> list[str]:
        dom = self._dom(node)
        if state_of(dom) not in (DomainState.RUNNING, DomainState.PAUSED):
            raise UsageError(f"{node} is not running; its network cannot be changed live")
        macs: list[str] = []
        for iface in interfaces_of(dom):
            el = ET.fromstring(iface.xml)
            link = el.find("link")
            if link is None:
                link = ET.SubElement(el, "link")
            link.set("state", state)
            xml = ET.tostring(el, encoding="unicode")
            self._call("netcut" if state == "down" else "netrestore", node,
                       lambda xml=xml: dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE))
            macs.append(iface.mac)
        if not macs:
            raise UsageError(f"{node} has no network interface")
        return macs

    @_changes_nodes
    def netcut(self, node: str) -> FaultEvent:
        at = self.clock()
        macs = self._set_links(node, "down")
        self.store.add(ActiveFault("netcut", node, at, {"macs": macs}))
        return self._emit("netcut", node, at, "link down", macs=macs)

    @_changes_nodes
    def netrestore(self, node: str) -> FaultEvent:
        at = self.clock()
        macs = self._set_links(node, "up")
        self.store.remove("netcut", node)
        return self._emit("netrestore", node, at, "link up", macs=macs)

    def _tap(self, node: str) -> str:
        dom = self._dom(node)
        devs = [i.target_dev for i in interfaces_of(dom) if i.target_dev]
        if not devs:
            raise UsageError(f"{node} has no host-side interface (is it running?)")
        return devs[0]

    @_changes_nodes
    def netem(self, node: str, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0
              ) -> FaultEvent:
        """Latency / loss on traffic the host sends to the node (egress of its host-side tap)."""
        if not all(math.isfinite(v) for v in (delay_ms, jitter_ms, loss_pct)):
            raise UsageError("netem: delay, jitter and loss must be finite numbers (got NaN or infinity)")
        if delay_ms < 0 or jitter_ms < 0 or not (0 <= loss_pct <= 100):
            raise UsageError("netem: delay and jitter must be >= 0 ms, loss between 0 and 100 %")
        if delay_ms == 0 and loss_pct == 0:
            raise UsageError("netem: give a delay (ms) or a loss (%)")
        dev = self._tap(node)
        argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem"]
        if delay_ms or jitter_ms:
            argv += ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
        if loss_pct:
            argv += ["loss", f"{loss_pct:g}%"]
        at = self.clock()
        rc, _out, err = self.host_run(argv)
        if rc != 0:
            hint = ("; the host kernel lacks the netem qdisc (`modprobe sch_netem`, or install the "
                    "kernel's extra modules)") if "kind is unknown" in err else ""
            raise HalabError(f"netem {node}: `{' '.join(argv)}` failed (rc {rc}): {err.strip()}{hint}")
        params = {"dev": dev, "delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct}
        self.store.add(ActiveFault("netem", node, at, params))
        detail = ", ".join(p for p in (f"delay {delay_ms:g} ms" if delay_ms else "",
                                       f"jitter {jitter_ms:g} ms" if jitter_ms else "",
                                       f"loss {loss_pct:g} %" if loss_pct else "") if p)
        return self._emit("netem", node, at, f"{detail} on {dev}", **params)

    @_changes_nodes
    def netem_clear(self, node: str) -> FaultEvent:
        recorded = self.store.remove("netem", node)
        try:
            dev = self._tap(node)
        except UsageError:
            if recorded:  # node is down: its tap and qdisc are gone with it
                return self._emit("netem-clear", node, self.clock(), "node not running; nothing to clear")
            raise
        at = self.clock()
        rc, _out, err = self.host_run(["tc", "qdisc", "del", "dev", dev, "root"])
        # "no such qdisc" style failures mean there was nothing to clear.
        if rc != 0 and not re.search(r"handle of zero|No such file|Invalid handle|not find", err, re.I):
            raise HalabError(f"netem-clear {node}: tc qdisc del dev {dev} root failed (rc {rc}): "
                             f"{err.strip()}")
        return self._emit("netem-clear", node, at, f"qdisc removed from {dev}", dev=dev)

    # ---- services (SSH) ----------------------------------------------------------------------
    def _service(self, node: str, service: str | None) -> str:
        try:
            role = self.cfg.node(node).role
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        name = service or ROLE_SERVICES[role]
        if not _SERVICE_RE.match(name):
            raise UsageError(f"{name!r} is not a service name")
        return name

    def _systemctl(self, verb: str, node: str, service: str) -> None:
        if self.ssh is None:
            raise HalabError(f"{verb}-service needs SSH access to the nodes (no SSH runner given)")
        self._dom(node)  # only this lab's nodes
        rc, _out, err = self.ssh(node, f"systemctl {verb} {service}")
        if rc != 0:
            raise HalabError(f"{verb}-service {node}: `systemctl {verb} {service}` failed (rc {rc}): "
                             f"{err.strip()}")

    @_changes_nodes
    def stop_service(self, node: str, service: str | None = None) -> FaultEvent:
        svc = self._service(node, service)
        at = self.clock()
        self._systemctl("stop", node, svc)
        self.store.add(ActiveFault("stop-service", node, at, {"service": svc}))
        return self._emit("stop-service", node, at, svc, service=svc)

    @_changes_nodes
    def start_service(self, node: str, service: str | None = None) -> FaultEvent:
        svc = self._service(node, service)
        at = self.clock()
        self._systemctl("start", node, svc)
        self.store.remove("stop-service", node, svc)
        return self._emit("start-service", node, at, svc, service=svc)

    # ---- restore -----------------------------------------------------------------------------
    @_changes_nodes
    def restore(self) -> tuple[list[FaultEvent], list[str]]:
        """Undo every active fault (kills first, so the other undos find running domains).
        Returns (events done, problems); a fault that cannot be undone stays recorded."""
        order = {k: i for i, k in enumerate(UNDO)}  # kill, pause, netcut, netem, stop-service
        done: list[FaultEvent] = []
        problems: list[str] = []
        for f in sorted(self.active(), key=lambda f: (order.get(f.kind, 9), f.started)):
            if f.key not in {g.key for g in self.active()}:
                continue  # already undone by an earlier step (revive clears netcut/netem)
            try:
                done.append(self.undo(f.kind, f.node, **f.params))
            except HalabError as exc:
                problems.append(f"{f.kind} {f.node}: {exc}")
        return done, problems
