"""Warm labs: whole-lab checkpoints, reset, stop/start and warm revive of one stateless node.

A checkpoint is one consistent cut of the lab: every node is paused at once, each one's memory is
saved (``virDomainSave``, which also flushes and closes its disks), its qcow2 overlay is copied while
its QEMU is gone (the base image is shared and read-only), and every node is restored paused from
its own file and resumed together. libvirt's internal snapshots cannot do this here: the NoCloud
seed disk is raw.

After any restore every guest clock is behind by the time spent saved, so each is stepped to the
host's over SSH before anything measures. Files are 0600 in the lab's state directory (guest memory
holds the lab's secrets) and belong to one lab definition: a checkpoint taken for other nodes is
refused, never restored.

Only stateless roles may come back warm on their own: a database or a broker restored alone from an
old cut would roll its data back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from halab import fault_kinds
from halab.errors import HalabError, UsageError
from halab.lab.config import LabConfig
from halab.lab.lifecycle import Progress as Step  # one progress shape for every lab command
from halab.lab.virt import DomainState, LabVirt, state_of
from halab.paths import lab_state_dir

READY = "ready"
STATELESS_ROLES = fault_kinds.STATELESS_ROLES  # only these come back warm alone
MANIFEST = "manifest.json"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
_FORMAT = 1


class CheckpointError(HalabError):
    """A checkpoint cannot be made, found or restored; the lab is left as it was."""


StepCallback = Callable[[Step], None]


@dataclass
class CheckpointInfo:
    name: str
    lab: str
    created: float  # wall-clock seconds
    definition: str  # fingerprint of the lab definition it belongs to
    nodes: dict[str, dict[str, Any]]  # node -> {role, memory, disk, bytes}
    faults: list[dict[str, Any]] = field(default_factory=list)
    preset: str = "fast"
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_shares: int | None = None  # the lab's normal share when it was taken
    format: int = _FORMAT

    @property
    def size_bytes(self) -> int:
        return sum(int(n.get("bytes", 0)) for n in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreResult:
    """What a reset / start / warm revive did, with its timings (seconds) and clock offsets."""

    name: str
    nodes: list[str]
    seconds: dict[str, float]
    clock_offsets_s: dict[str, float]
    healthy: bool
    problems: list[str] = field(default_factory=list)


# ---- definition fingerprint -----------------------------------------------------------------------


def node_fingerprints(cfg: LabConfig) -> dict[str, str]:
    """Per node: what must be the same for its saved memory to be restorable (role, address, MAC,
    memory, vCPUs, the libvirt URI, and everything HAProxy's configuration depends on)."""
    h = cfg.haproxy
    lab_wide = json.dumps([cfg.name, cfg.libvirt_uri, cfg.network.cidr, cfg.network.mode, cfg.vip,
                           asdict(h) if hasattr(h, "__dataclass_fields__") else str(h),
                           {r: cfg.roles[r].count for r in sorted(cfg.roles)}], sort_keys=True, default=str)
    out = {}
    for n in cfg.nodes():
        text = json.dumps([n.name, n.role, n.ip, n.mac.lower(), n.memory_mib, n.vcpus, lab_wide],
                          sort_keys=True)
        out[n.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def definition_fingerprint(cfg: LabConfig) -> str:
    fps = node_fingerprints(cfg)
    return hashlib.sha256(json.dumps(fps, sort_keys=True).encode()).hexdigest()[:16]


# ---- the store ------------------------------------------------------------------------------------


def checkpoints_dir(cfg: LabConfig, create: bool = False) -> Path:
    path = lab_state_dir(cfg.name, create=create) / "checkpoints"
    if create:
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        shown = repr(name)[:42]
        raise UsageError(f"checkpoint name {shown} is not valid: use 1-40 characters a-z, 0-9, '.', '_', "
                         "'-', starting with a letter or digit")
    return name


def list_checkpoints(cfg: LabConfig) -> list[CheckpointInfo]:
    root = checkpoints_dir(cfg)
    out: list[CheckpointInfo] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        info = _read_manifest(d)
        if info is not None:
            out.append(info)
    return out


def _read_manifest(d: Path) -> CheckpointInfo | None:
    try:
        data = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        return CheckpointInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def find_checkpoint(cfg: LabConfig, name: str) -> CheckpointInfo:
    check_name(name)
    d = checkpoints_dir(cfg) / name
    info = _read_manifest(d)
    if info is None:
        known = ", ".join(c.name for c in list_checkpoints(cfg)) or "none"
        hint = "" if name != READY else (" (`up` takes it when the lab is first ready; "
                                         "`checkpoint save` makes it)")
        raise CheckpointError(f"lab {cfg.name!r} has no checkpoint {name!r}{hint}; checkpoints: {known}")
    for node, meta in info.nodes.items():
        for key in ("memory", "disk"):
            if not (d / meta[key]).is_file():
                raise CheckpointError(f"checkpoint {name!r} is incomplete: {meta[key]} of {node} is missing; "
                                      f"delete it (./lab.py checkpoint delete {name})")
    return info


def check_definition(cfg: LabConfig, info: CheckpointInfo, nodes: Iterable[str] | None = None) -> None:
    """Refuse a checkpoint made for another lab definition, naming what changed."""
    want = node_fingerprints(cfg)
    saved = {n: m.get("fingerprint") for n, m in info.nodes.items()}
    names = list(nodes) if nodes is not None else list(want)
    changed = [n for n in names if saved.get(n) != want.get(n)]
    extra = [] if nodes is not None else [n for n in saved if n not in want]
    if changed or extra or (nodes is None and set(saved) != set(want)):
        what = []
        if changed:
            what.append("changed or new: " + ", ".join(changed))
        if extra:
            what.append("no longer defined: " + ", ".join(extra))
        raise CheckpointError(
            f"checkpoint {info.name!r} was made for another definition of lab {cfg.name!r} "
            f"({'; '.join(what)}); restoring it would bring back nodes that no longer match. "
            f"Take a new one (./lab.py checkpoint save {info.name})")


def delete_checkpoint(cfg: LabConfig, name: str) -> int:
    """Remove one checkpoint; returns the bytes freed."""
    check_name(name)
    d = checkpoints_dir(cfg) / name
    if not d.is_dir():
        raise CheckpointError(f"lab {cfg.name!r} has no checkpoint {name!r}")
    size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    shutil.rmtree(d)
    return size


# ---- the operations -------------------------------------------------------------------------------


class _Clock:
    def __init__(self, progress: StepCallback | None):
        self.start = time.monotonic()
        self.progress = progress
        self.marks: dict[str, float] = {}
        self._t = self.start

    def say(self, phase: str, message: str, node: str | None = None) -> None:
        if self.progress is not None:
            self.progress(Step(phase, message, round(time.monotonic() - self.start, 2), node))

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.marks[phase] = round(now - self._t, 2)
        self._t = now

    def total(self) -> dict[str, float]:
        self.marks["total"] = round(time.monotonic() - self.start, 2)
        return self.marks


def _parallel(fn: Callable[[str], Any], names: list[str]) -> dict[str, BaseException | Any]:
    """Run fn for every node at once (libvirt calls release the GIL); node -> result or exception."""
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {n: pool.submit(fn, n) for n in names}
        for n, fut in futures.items():
            try:
                out[n] = fut.result()
            except BaseException as exc:  # collected and reported per node by the caller
                out[n] = exc
    return out


def _failures(results: dict[str, Any]) -> list[str]:
    return [f"{n}: {_why(r)}" for n, r in results.items() if isinstance(r, BaseException)]


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _overlay_path(dom: libvirt.virDomain) -> Path:
    """The node's own writable disk (vda): the qcow2 overlay on the shared base image."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is not None and target.get("dev") == "vda" and source is not None and source.get("file"):
            return Path(source.get("file") or "")
    raise CheckpointError(f"domain {dom.name()} has no vda file disk to checkpoint")


def _copy_private(src: Path, dst: Path) -> int:
    tmp = dst.with_name(dst.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 4 << 20)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    return dst.stat().st_size


def _copy_back(src: Path, dst: Path) -> None:
    """A checkpoint's overlay back into the pool, keeping the pool file's owner and mode."""
    st = dst.stat() if dst.exists() else None
    tmp = dst.with_name(dst.name + ".halab-restore")
    shutil.copyfile(src, tmp)
    if st is not None:
        os.chmod(tmp, st.st_mode & 0o7777)
        with contextlib.suppress(PermissionError):
            os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, dst)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _rss_bytes(dom: libvirt.virDomain) -> int:
    """About what a memory save writes: the pages the guest has touched (QEMU skips zero pages)."""
    try:
        stats = dom.memoryStats()
        if stats.get("rss"):
            return int(stats["rss"]) * 1024
    except libvirt.libvirtError:
        pass
    return int(dom.info()[2]) * 1024


def _normal_shares(doms: Iterable[libvirt.virDomain]) -> int | None:
    """The lab's normal CPU share: the largest live one (a booting node runs at 1/64 of it)."""
    found = []
    for dom in doms:
        try:
            if dom.isActive():
                found.append(int(dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
                                 .get("cpu_shares") or 0))
        except libvirt.libvirtError:
            continue
    return max(found, default=0) or None


class WarmLab:
    """Checkpoint operations on one lab's domains (found by ownership tag only)."""

    def __init__(self, cfg: LabConfig, virt: LabVirt | None = None, *,
                 ssh_factory: Callable[[], Any] | None = None,
                 progress: StepCallback | None = None,
                 health_timeout_s: float = 60.0):
        self.cfg = cfg
        self.virt = virt or LabVirt(cfg)
        self._owns_virt = virt is None
        self.ssh_factory = ssh_factory
        self.progress = progress
        self.health_timeout_s = health_timeout_s

    def close(self) -> None:
        if self._owns_virt:
            self.virt.close()

    def __enter__(self) -> WarmLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers ------------------------------------------------------------------------------
    def _domains(self, names: list[str] | None = None) -> dict[str, libvirt.virDomain]:
        doms = self.virt.domains()
        names = names if names is not None else [n.name for n in self.cfg.nodes()]
        missing = [n for n in names if n not in doms]
        if missing:
            raise CheckpointError(
                f"node(s) {', '.join(missing)} of lab {self.cfg.name!r} have no domain; "
                "run ./lab.py heal first")
        return {n: doms[n] for n in names}

    def stopped_nodes(self) -> list[str]:
        """Nodes saved to disk by `stop` (shut off with a managed save image)."""
        out = []
        for name, dom in self.virt.domains().items():
            try:
                if state_of(dom) == DomainState.SAVED:
                    out.append(name)
            except libvirt.libvirtError:
                continue
        return sorted(out)

    # ---- checkpoint save ----------------------------------------------------------------------
    def save(self, name: str = READY, *, faults: list[dict[str, Any]] | None = None,
             preset: str | None = None, replace: bool = True) -> CheckpointInfo:
        """One consistent cut of the whole lab; the lab runs on afterwards."""
        check_name(name)
        clock = _Clock(self.progress)
        doms = self._domains()
        states = {n: state_of(d) for n, d in doms.items()}
        not_running = [f"{n} ({s.value})" for n, s in states.items() if s != DomainState.RUNNING]
        if not_running:
            raise CheckpointError(f"every node must be running for a checkpoint; not running: "
                                  f"{', '.join(not_running)} (./lab.py restore, or heal)")
        root = checkpoints_dir(self.cfg, create=True)
        final = root / name
        if final.exists() and not replace:
            raise CheckpointError(f"checkpoint {name!r} exists; delete it first")
        overlays = {n: _overlay_path(d) for n, d in doms.items()}
        need = sum(_rss_bytes(d) for d in doms.values()) + sum(p.stat().st_size for p in overlays.values())
        need = int(need * 1.1) + (64 << 20)
        free = _free_bytes(root)
        if free < need:
            raise CheckpointError(
                f"not enough free disk for checkpoint {name!r} in {root}: needs about {need / 1e9:.2f} GB, "
                f"{free / 1e9:.2f} GB free; nothing was changed (free space, or delete old checkpoints)")
        work = root / f".{name}.partial-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(mode=0o700)
        names = list(doms)
        saved: set[str] = set()
        try:
            clock.say("pause", f"pausing all {len(names)} nodes at once…")
            paused = _parallel(lambda n: doms[n].suspend(), names)
            bad = _failures(paused)
            if bad:
                raise CheckpointError("could not pause every node: " + "; ".join(bad))
            clock.mark("pause")
            shares = _normal_shares(doms.values())

            def save_one(n: str) -> int:
                path = work / f"{n}.mem"
                doms[n].save(str(path))
                saved.add(n)
                os.chmod(path, 0o600)
                clock.say("save", f"{n}: memory saved ({path.stat().st_size / 1e6:.0f} MB)", n)
                return path.stat().st_size

            clock.say("save", "saving every node's memory…")
            mem = _parallel(save_one, names)
            bad = _failures(mem)
            if bad:
                raise CheckpointError("saving memory failed: " + "; ".join(bad))
            clock.mark("save")

            def copy_one(n: str) -> int:
                size = _copy_private(overlays[n], work / f"{n}.qcow2")
                clock.say("copy", f"{n}: disk overlay copied ({size / 1e6:.0f} MB)", n)
                return size

            disk = _parallel(copy_one, names)
            bad = _failures(disk)
            if bad:
                raise CheckpointError("copying disk overlays failed: " + "; ".join(bad))
            clock.mark("copy")
            self._restore_paused({n: work / f"{n}.mem" for n in names}, clock)
            saved.clear()
            self._resume(names, clock, shares)
        except BaseException:
            self._recover(doms, work, saved)
            shutil.rmtree(work, ignore_errors=True)
            raise
        fps = node_fingerprints(self.cfg)
        info = CheckpointInfo(
            name=name, lab=self.cfg.name, created=time.time(),
            definition=definition_fingerprint(self.cfg),
            nodes={n: {"role": self.cfg.node(n).role, "memory": f"{n}.mem", "disk": f"{n}.qcow2",
                       "bytes": int(mem[n]) + int(disk[n]), "fingerprint": fps[n]} for n in names},
            faults=list(faults or []), preset=preset or self.cfg.haproxy.preset, cpu_shares=shares,
        )
        _write_json(work / MANIFEST, info.to_dict())
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
        self._step_clocks(names, clock)
        info.seconds = clock.total()
        _write_json(final / MANIFEST, info.to_dict())
        return info

    def _recover(self, doms: dict[str, libvirt.virDomain], work: Path, saved: set[str]) -> None:
        """A save that failed half-way: nodes already saved come back from their new files, every
        node runs again, so the lab is as it was."""
        for n in list(saved):
            with contextlib.suppress(libvirt.libvirtError):
                self.virt.conn.restoreFlags(str(work / f"{n}.mem"), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        for d in doms.values():
            try:
                if state_of(d) == DomainState.PAUSED:
                    d.resume()
            except libvirt.libvirtError:
                pass

    # ---- restore ------------------------------------------------------------------------------
    def _restore_paused(self, files: dict[str, Path], clock: _Clock) -> None:
        def restore_one(n: str) -> None:
            try:
                self.virt.conn.restoreFlags(str(files[n]), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                # A driver without the flag (libvirt's test driver): the image was taken paused,
                # and a restore without flags keeps the state the image recorded.
                self.virt.conn.restoreFlags(str(files[n]), None, 0)

        res = _parallel(restore_one, list(files))
        bad = _failures(res)
        if bad:
            raise CheckpointError("restoring failed: " + "; ".join(bad))
        clock.mark("restore")
        clock.say("restore", f"{len(files)} node(s) restored, paused")

    def _resume(self, names: list[str], clock: _Clock, shares: int | None = None) -> None:
        fresh = self.virt.domains()
        problems = []
        for n in names:  # one quick call each: they run again within milliseconds of each other
            try:
                if state_of(fresh[n]) == DomainState.PAUSED:
                    fresh[n].resume()
            except (KeyError, libvirt.libvirtError) as exc:
                problems.append(f"{n}: {_why(exc)}")
        want = shares or _normal_shares([fresh[n] for n in fresh])
        for n in names:  # a restored QEMU keeps the share it was saved with: a booting node's low one
            if want and n in fresh:
                with contextlib.suppress(libvirt.libvirtError):
                    fresh[n].setSchedulerParametersFlags({"cpu_shares": want}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        if problems:
            raise CheckpointError("resuming failed: " + "; ".join(problems))
        clock.mark("resume")
        clock.say("resume", f"{len(names)} node(s) running again")

    def _step_clocks(self, names: list[str], clock: _Clock) -> dict[str, float]:
        """Step every guest clock to the host's: measure the offset over an established SSH
        connection (the guest's time against the midpoint of the shortest of a few round trips),
        then let the guest add it to its own clock, so the second command's latency does not
        matter. Returns the offsets found after stepping."""
        if self.ssh_factory is None:
            return {}
        # One connection per node, made here: making the lab's SSH writes its known_hosts.
        sshes = {n: self.ssh_factory() for n in names}
        deadline = time.monotonic() + 180

        def one(n: str) -> float:
            ssh, ip = sshes[n], self.cfg.node(n).ip
            while True:  # a node just resumed may take a moment to answer
                try:
                    sh = ssh.shell(ip)
                    sh.ask("echo ok")
                    break
                except HalabError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
            try:
                before = _offset(sh)
                # A relative step: `date` reads the guest clock itself and sets it that much
                # later, so starting `date` (seconds on a starved TCG vCPU: up to 1.7 s off when
                # the shell computed the absolute time) costs nothing. A second pass if needed.
                after = before
                for _ in range(3):
                    sh.ask(f"date -u -s '{-after:+.6f} seconds' >/dev/null; echo stepped")
                    after = _offset(sh)
                    if abs(after) < 0.05:
                        break
            finally:
                sh.close()
            delta = -before
            clock.say("clock", f"{n}: clock stepped by {delta:+.1f} s (now {after:+.3f} s)", n)
            return round(after, 3)

        try:
            res = _parallel(one, names)
        finally:
            for ssh in sshes.values():
                ssh.close()
        bad = _failures(res)
        clock.mark("clock")
        if bad:
            raise CheckpointError("stepping guest clocks failed: " + "; ".join(bad))
        return {n: float(v) for n, v in res.items()}

    def _wait_healthy(self, clock: _Clock, stats_auth: tuple[str, str] | None) -> list[str]:
        """Until every HAProxy backend is UP on every balancer (or the deadline): what is not."""
        if stats_auth is None:
            return []
        from halab.observe.probes import HAProxyProbe

        probes = [HAProxyProbe(n.name, n.ip, stats_auth, timeout=1.0) for n in self.cfg.nodes()
                  if n.role == "haproxy"]
        deadline = time.monotonic() + self.health_timeout_s
        problems: list[str] = []
        while True:
            problems = []
            for p in probes:
                s = p.sample()
                if not s.ok:
                    problems.append(f"{p.haproxy_node} stats: {s.error}")
                    continue
                problems += [f"{v.proxy}/{v.server} {v.state} on {p.haproxy_node}"
                             for v in s.servers if v.is_server and v.state not in ("UP", "no check")]
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        clock.mark("health")
        if not problems:
            clock.say("health", "every HAProxy backend is UP")
        return problems

    def restore(self, name: str = READY, *, stats_auth: tuple[str, str] | None = None) -> RestoreResult:
        """Reset: the whole lab back to the cut, resumed together, clocks stepped, healthy."""
        info = find_checkpoint(self.cfg, name)
        check_definition(self.cfg, info)
        clock = _Clock(self.progress)
        names = [n.name for n in self.cfg.nodes()]
        doms = self._domains(names)
        d = checkpoints_dir(self.cfg) / name
        overlays = {n: _overlay_path(dom) for n, dom in doms.items()}
        clock.say("stop", f"stopping {len(names)} node(s)…")

        def stop_one(n: str) -> None:
            dom = doms[n]
            if dom.isActive():
                dom.destroy()
            if dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)

        bad = _failures(_parallel(stop_one, names))
        if bad:
            raise CheckpointError("could not stop every node: " + "; ".join(bad))
        clock.mark("stop")
        bad = _failures(_parallel(lambda n: _copy_back(d / info.nodes[n]["disk"], overlays[n]), names))
        if bad:
            raise CheckpointError("copying disk overlays back failed: " + "; ".join(bad))
        clock.mark("copy")
        self._restore_paused({n: d / info.nodes[n]["memory"] for n in names}, clock)
        self._resume(names, clock, info.cpu_shares)
        offsets = self._step_clocks(names, clock)
        problems = self._wait_healthy(clock, stats_auth)
        return RestoreResult(name, names, clock.total(), offsets, not problems, problems)

    def warm_revive(self, node: str, name: str = READY) -> RestoreResult:
        """One stateless node back from the checkpoint instead of a cold boot."""
        n = self.cfg.node(node)
        if n.role not in STATELESS_ROLES:
            data = "database" if n.role == "db" else "queue"
            raise UsageError(
                f"{node} is a {n.role} node: it is never revived warm — its data moved on since the "
                f"checkpoint, and restoring it alone would roll back the {data}. "
                f"Revive it cold (./lab.py revive {node})")
        info = find_checkpoint(self.cfg, name)
        check_definition(self.cfg, info, [node])
        clock = _Clock(self.progress)
        dom = self._domains([node])[node]
        if dom.isActive():
            dom.destroy()
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)
        d = checkpoints_dir(self.cfg) / name
        _copy_back(d / info.nodes[node]["disk"], _overlay_path(dom))
        clock.mark("copy")
        self._restore_paused({node: d / info.nodes[node]["memory"]}, clock)
        self._resume([node], clock, info.cpu_shares)
        offsets = self._step_clocks([node], clock)
        return RestoreResult(name, [node], clock.total(), offsets, True)

    # ---- stop / start -------------------------------------------------------------------------
    def stop(self) -> dict[str, float]:
        """The whole lab to disk (libvirt managed save), CPU and memory freed: one cut, as save."""
        clock = _Clock(self.progress)
        doms = self._domains()
        names = [n for n, d in doms.items() if state_of(d) in (DomainState.RUNNING, DomainState.PAUSED)]
        if not names:
            raise CheckpointError(f"lab {self.cfg.name!r} has no running node to stop")
        bad = _failures(_parallel(lambda n: doms[n].suspend() if state_of(doms[n]) == DomainState.RUNNING
                                  else None, names))
        if bad:
            raise CheckpointError("could not pause every node: " + "; ".join(bad))
        clock.mark("pause")

        def save_one(n: str) -> None:
            doms[n].managedSave(0)  # taken paused: `start` restores every node paused
            clock.say("save", f"{n}: saved to disk", n)

        bad = _failures(_parallel(save_one, names))
        clock.mark("save")
        if bad:
            raise CheckpointError("saving failed (those nodes stay paused; ./lab.py start resumes "
                                  "the rest): " + "; ".join(bad))
        return clock.total()

    def start(self, *, stats_auth: tuple[str, str] | None = None) -> RestoreResult:
        clock = _Clock(self.progress)
        names = self.stopped_nodes()
        if not names:
            raise CheckpointError(f"lab {self.cfg.name!r} is not stopped (no node is saved to disk)")
        doms = self._domains(names)
        def start_one(n: str) -> None:
            try:
                doms[n].createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                doms[n].createWithFlags(0)  # as in _restore_paused: the image was taken paused

        bad = _failures(_parallel(start_one, names))
        if bad:
            raise CheckpointError("restoring failed: " + "; ".join(bad))
        clock.mark("restore")
        self._resume(names, clock)
        offsets = self._step_clocks(names, clock)
        problems = self._wait_healthy(clock, stats_auth)
        return RestoreResult("stopped", names, clock.total(), offsets, not problems, problems)


def _offset(sh: Any, tries: int = 5) -> float:
    """Guest clock minus host clock (seconds) through a long-lived shell: bash answers
    $EPOCHREALTIME without starting a process, so a round trip is milliseconds; the midpoint of
    the shortest of a few is the estimate (its error at most half that round trip)."""
    best: tuple[float, float] | None = None
    for _ in range(tries):
        t0 = time.time()
        text = sh.ask("echo $EPOCHREALTIME")
        t1 = time.time()
        try:
            guest = float(text.replace(",", "."))
        except ValueError:
            raise CheckpointError(f"{sh.host}: unreadable clock {text[:40]!r}") from None
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, guest - (t0 + t1) / 2)
    assert best is not None
    return best[1]


def _write_json(path: Path, data: Any) -> None:
    from halab.lab.secrets import write_private

    write_private(path, json.dumps(data, indent=2))


# ---- lab commands (locked: one writer per lab) ----------------------------------------------------


def _warm(cfg: LabConfig, progress: StepCallback | None) -> WarmLab:
    from halab.lab.lifecycle import lab_ssh

    return WarmLab(cfg, ssh_factory=lambda: lab_ssh(cfg), progress=progress)


def _stats_auth(cfg: LabConfig) -> tuple[str, str]:
    from halab.lab.secrets import load_or_create_secrets

    s = load_or_create_secrets(cfg)
    return (s.haproxy_stats_user, s.haproxy_stats_password)


def _need_lab(cfg: LabConfig) -> None:
    from halab.lab.lifecycle import LabNotUp, lab_exists

    if not lab_exists(cfg):
        raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")


def _fault_store(cfg: LabConfig):
    from halab.chaos.faults import FaultStore

    return FaultStore(lab_state_dir(cfg.name) / "faults.json")

def save_checkpoint(cfg: LabConfig, name: str = READY, progress: StepCallback | None = None,
                    *, locked: bool = False) -> CheckpointInfo:
    """`checkpoint save`: the whole lab as one cut, with halab's own records (active faults)."""
    from halab.lab.lifecycle import lab_lock

    _need_lab(cfg)
    check_name(name)
    with contextlib.nullcontext() if locked else lab_lock(cfg), _warm(cfg, progress) as warm:
        faults = [f.to_dict() for f in _fault_store(cfg).load()]
        return warm.save(name, faults=faults)


def reset(cfg: LabConfig, name: str = READY, progress: StepCallback | None = None) -> RestoreResult:
    """`reset`: every node back to the checkpoint, together; records made to match it."""
    from halab.chaos.faults import ActiveFault
    from halab.lab.lifecycle import lab_lock

    _need_lab(cfg)
    info = find_checkpoint(cfg, name)
    check_definition(cfg, info)
    with lab_lock(cfg), _warm(cfg, progress) as warm:
        result = warm.restore(name, stats_auth=_stats_auth(cfg))
        _fault_store(cfg).replace([ActiveFault(f["kind"], f["node"], float(f["started"]),
                                               dict(f.get("params") or {})) for f in info.faults])
    return result


def stop_lab(cfg: LabConfig, progress: StepCallback | None = None) -> dict[str, float]:
    from halab.lab.lifecycle import lab_lock

    _need_lab(cfg)
    with lab_lock(cfg), _warm(cfg, progress) as warm:
        return warm.stop()


def start_lab(cfg: LabConfig, progress: StepCallback | None = None) -> RestoreResult:
    from halab.lab.lifecycle import lab_lock

    _need_lab(cfg)
    with lab_lock(cfg), _warm(cfg, progress) as warm:
        return warm.start(stats_auth=_stats_auth(cfg))


def start_if_stopped(cfg: LabConfig, progress: StepCallback | None = None) -> RestoreResult | None:
    """For `up`/`heal` (lock already held): a stopped lab comes back warm, not through a cold boot."""
    with _warm(cfg, progress) as warm:
        if not warm.stopped_nodes():
            return None
        return warm.start(stats_auth=_stats_auth(cfg))


def ready_checkpoint_valid(cfg: LabConfig) -> bool:
    try:
        check_definition(cfg, find_checkpoint(cfg, READY))
    except CheckpointError:
        return False
    return True
