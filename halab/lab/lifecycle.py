"""The lab's life: `up`, `down`, `plan`, `heal`, `status`.

Terraform is the source of truth for what exists; this module only prepares its inputs (image,
seeds, tfvars), runs it, and then waits until every node has finished cloud-init over SSH.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from halab.atomic import write_atomic
from halab.errors import HalabError
from halab.lab.config import LabConfig
from halab.lock import LabLock
from halab.paths import lab_state_dir


@dataclass(frozen=True)
class Progress:
    """One line of progress for whoever drives `up`/`down` (CLI prints it, TUI renders it)."""

    phase: str
    message: str
    elapsed_s: float
    node: str | None = None
    resource: str | None = None
    done: bool = False


ProgressCallback = Callable[[Progress], None]

# The virtual platform on a busy host, not the image: under TCG with the host's cores taken, the
# guest kernel's early timer check can fail ("IO-APIC + timer doesn't work!", a panic seen with
# seven VMs booting at once); and a guest that still panics reboots after 10 s instead of hanging.
GUEST_BOOT_ARGS = "no_timer_check panic=10"


@dataclass
class NodeStatus:
    name: str
    role: str
    ip: str
    domain: str
    state: str
    reachable: bool | None = None
    # What SSH says: "ok", "unreachable", "host key mismatch" (the node presented a key halab did
    # not give it: possible man in the middle, never "unreachable"), or "-" (not checked / not running).
    ssh: str = "-"
    host: str = ""  # the host it runs on (a lab over several); "" on one host

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if not self.host:
            d.pop("host")
        return d


@dataclass
class UpResult:
    lab: str
    vip: str
    accel: str
    nodes: list[NodeStatus]
    phases_s: dict[str, float] = field(default_factory=dict)
    terraform_changes: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nodes"] = [n.to_dict() for n in self.nodes]
        return d


class _Clock:
    def __init__(self, progress: ProgressCallback | None):
        self.start = time.monotonic()
        self.progress = progress
        self.phases: dict[str, float] = {}
        self._phase: str | None = None
        self._phase_start = self.start

    def phase(self, name: str, message: str = "") -> None:
        self._close()
        self._phase = name
        self._phase_start = time.monotonic()
        self.say(message or f"{name}…")

    def _close(self) -> None:
        if self._phase is not None:
            self.phases[self._phase] = round(time.monotonic() - self._phase_start, 2)
            self.say(f"{self._phase} done in {self.phases[self._phase]:.1f}s", done=True)
        self._phase = None

    def say(self, message: str, node: str | None = None, resource: str | None = None,
            done: bool = False) -> None:
        if self.progress:
            self.progress(Progress(self._phase or "", message, time.monotonic() - self.start, node,
                                   resource, done))

    def finish(self) -> dict[str, float]:
        self._close()
        self.phases["total"] = round(time.monotonic() - self.start, 2)
        return self.phases


def state_paths(cfg: LabConfig) -> dict[str, Path]:
    root = lab_state_dir(cfg.name)
    return {
        "root": root,
        "terraform": root / "terraform",
        "seeds": root / "seeds",
        "known_hosts": root / "known_hosts",
        "ssh_key": root / "id_ed25519",
        "inventory": root / "inventory.json",
    }


def lab_exists(cfg: LabConfig) -> bool:
    return (lab_state_dir(cfg.name, create=False) / "terraform" / "terraform.tfstate").exists()


class LabNotUp(HalabError):
    """The command needs a lab that has been brought up."""


def lab_lock(cfg: LabConfig) -> LabLock:
    """One writer per lab: everything that changes the lab's nodes holds it."""
    return LabLock(lab_state_dir(cfg.name), cfg.name)


_lock = lab_lock


def remove_state(cfg: LabConfig) -> None:
    root = lab_state_dir(cfg.name, create=False)
    if root.exists():
        shutil.rmtree(root)


def lab_accel(cfg: LabConfig) -> str | None:
    """The accelerator the lab runs (or would run) under: the inventory of a lab that is up, else
    lab.yaml's explicit choice, else the host's cached KVM verdict; None when nothing says yet."""
    try:
        inventory = lab_state_dir(cfg.name, create=False) / "inventory.json"
        accel = json.loads(inventory.read_text()).get("accel")
        if accel in ("kvm", "tcg"):
            return str(accel)
    except (OSError, ValueError, AttributeError):
        pass
    if cfg.accel in ("kvm", "tcg"):
        return cfg.accel
    from halab.lab.accel import cached_verdict

    verdict = cached_verdict()
    return None if verdict is None else verdict.accel


def write_inventory(cfg: LabConfig, accel: str) -> None:
    paths = state_paths(cfg)
    data = {
        "lab": cfg.name,
        "vip": cfg.vip,
        "accel": accel,
        "nodes": [{"name": n.name, "role": n.role, "ip": n.ip, "mac": n.mac,
                   "domain": cfg.domain_name(n)} for n in cfg.nodes()],
    }
    write_atomic(paths["inventory"], json.dumps(data, indent=2) + "\n")


# ---- the pieces `up` is made of ------------------------------------------------------------------


def _terraform_client(cfg: LabConfig):
    from halab.lab.terraform import TerraformClient

    return TerraformClient(state_paths(cfg)["terraform"])


def _tf_progress(clock: _Clock):
    from halab.lab.terraform import Diagnostic, Drift, ResourceComplete, ResourceError, ResourceStart

    def on_event(ev) -> None:
        if isinstance(ev, ResourceStart):
            clock.say(f"{ev.action} {ev.address}…", resource=ev.address)
        elif isinstance(ev, ResourceComplete):
            clock.say(f"{ev.action} {ev.address} done ({ev.elapsed:.1f}s)", resource=ev.address, done=True)
        elif isinstance(ev, ResourceError):
            clock.say(f"error on {ev.address}: {ev.message}", resource=ev.address)
        elif isinstance(ev, Drift):
            clock.say(f"drift: {ev.address} ({ev.action})", resource=ev.address)
        elif isinstance(ev, Diagnostic) and ev.severity == "error":
            clock.say(ev.text())

    return on_event


def prepare(cfg: LabConfig, clock: _Clock, stopped: tuple[str, ...] = ()) -> str:
    """Image, credentials, seeds and the Terraform working directory. Returns the libvirt domain
    type ("kvm" or "qemu")."""
    from halab.lab.accel import resolve_accel
    from halab.lab.cloudinit import render_all
    from halab.lab.image import ensure_image
    from halab.lab.secrets import ensure_lab_credentials
    from halab.lab.terraform import lab_tfvars, prepare_workdir
    from halab.lab.tfmirror import ensure_mirror

    clock.phase("accel", "choosing the accelerator (KVM only after a real boot probe)…")
    accel = resolve_accel(cfg, progress=lambda msg: clock.say(msg))
    note = " (KVM unusable or disabled: software emulation, slower)" if accel == "tcg" else ""
    clock.say(f"accelerator: {accel}{note}")

    clock.phase("image", "base image…")
    if cfg.image != "builtin":
        raise HalabError(
            f"{cfg.source}: image: stock cloud images ({cfg.image}) are not wired into `up` yet; "
            "use image: builtin"
        )
    image = ensure_image(progress=lambda ev: clock.say(f"{ev.phase}: {ev.message}"))
    clock.say(f"image {image.recipe_hash} ({image.size_bytes / 1e6:.0f} MB)")

    clock.phase("seeds", "credentials and cloud-init seeds…")
    secrets, keys = ensure_lab_credentials(cfg)
    seeds = render_all(cfg, secrets, keys)
    paths = state_paths(cfg)
    tfvars = lab_tfvars(
        cfg, base_image=image.disk, kernel=image.kernel, initrd=image.initrd,
        accel="kvm" if accel == "kvm" else "qemu", seeds=seeds,
        cmdline=f"{image.kernel_cmdline} {GUEST_BOOT_ARGS}",
        stopped=stopped,
    )
    prepare_workdir(paths["terraform"], tfvars, hosts=[h.name for h in cfg.hosts])
    ensure_mirror()
    write_inventory(cfg, accel)
    return accel


def lab_ssh(cfg: LabConfig):
    """SSH to this lab's nodes: the lab's client key, halab's known_hosts, strict checking."""
    from halab.lab.secrets import load_or_create_keys
    from halab.lab.ssh import NodeSSH

    keys = load_or_create_keys(cfg)
    return NodeSSH(keys.client_key_path, keys.known_hosts_path)


# A node that shows no progress for this long has stalled (under TCG a boot takes a core for
# minutes; on a busy host more): only then does the wait give up. Progress is its console log
# growing, SSH answering for the first time, or its role setup moving to another step.
STALL_S = {"tcg": 420.0, "kvm": 150.0}
WAIT_CAP_S = 5400.0


def _console_log(cfg: LabConfig, node: str) -> Path:
    from halab.lab.terraform import default_pool_path

    return Path(default_pool_path(cfg.name, cfg.libvirt_uri)) / f"{cfg.domain_name(node)}.log"


def _log_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _last_line(path: Path, limit: int = 4096) -> str:
    """The console's last non-empty line, without terminal colours (what the node is doing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - limit))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln).strip() for ln in tail.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:120] if lines else ""


def wait_ready(cfg: LabConfig, clock: _Clock, stall_s: float | None = None,
               only: list[str] | None = None, cap_s: float = WAIT_CAP_S) -> dict[str, float]:
    """Wait until every node (or those in ``only``) answers SSH with its halab-given host key and
    has written the cloud-init ready marker. Gives up only when no waiting node has made progress
    for ``stall_s`` (default by accelerator) or after ``cap_s``; the error says what each node
    was doing. Returns seconds to ready per node."""
    from halab.lab.cloudinit import READY_MARKER
    from halab.lab.ssh import SSHUnavailable

    if stall_s is None:
        stall_s = STALL_S.get(lab_accel(cfg) or "tcg", STALL_S["tcg"])
    ssh = lab_ssh(cfg)
    start = time.monotonic()
    pending = {n.name: n for n in cfg.nodes() if only is None or n.name in only}
    sshed: set[str] = set()
    ready: dict[str, float] = {}
    doing: dict[str, str] = {name: "booting" for name in pending}
    logs = {name: _console_log(cfg, name) for name in pending}
    sizes = {name: _log_size(path) for name, path in logs.items()}
    last_progress = start
    restarts: dict[str, int] = {}
    reruns: dict[str, int] = {}
    last_state_check = 0.0
    try:
        while pending:
            now = time.monotonic()
            if now - last_state_check >= STATE_CHECK_S:
                last_state_check = now
                if _restart_stopped(cfg, clock, list(pending), restarts, doing):
                    last_progress = time.monotonic()
            for name in pending:
                size = _log_size(logs[name])
                if size is not None and size != sizes[name]:
                    sizes[name] = size
                    last_progress = now
            if now - last_progress > stall_s or now - start > cap_s:
                why = (f"no progress for {now - last_progress:.0f}s" if now - last_progress > stall_s
                       else f"still not ready after {cap_s:.0f}s")
                detail = "; ".join(
                    f"{n}: {doing[n]}" + (f" (console: {_last_line(logs[n])})" if n not in sshed
                                          and _last_line(logs[n]) else "") for n in sorted(pending))
                raise HalabError(
                    f"nodes not ready ({why}; waited {now - start:.0f}s for SSH with the node's host "
                    f"key and the cloud-init ready marker): {detail}. Console logs: "
                    f"{logs[next(iter(pending))].parent}; `./lab.py status` shows each node"
                )
            for name, node in list(pending.items()):
                # Cheap checks only: under TCG `cloud-init status` alone takes seconds of Python start-up.
                try:
                    # result.json is read before the marker: cloud-init may finish between the two reads.
                    res = ssh.run(node.ip, "result=$(cat /run/cloud-init/result.json 2>/dev/null); "
                                  f"cat {READY_MARKER} 2>/dev/null || {{ echo NOT-READY; "
                                  "cat /var/lib/halab/failed 2>/dev/null && echo HALAB-FAILED; "
                                  "echo HALAB-STEP $(grep '^halab: ' /var/log/cloud-init-output.log "
                                  "2>/dev/null | tail -n 1); "
                                  'echo "$result"; }', timeout=30)
                except SSHUnavailable:
                    continue
                if name not in sshed:
                    sshed.add(name)
                    last_progress = time.monotonic()
                    doing[name] = "SSH up, cloud-init running"
                    clock.say(f"{name}: SSH up, host key verified", node=name)
                if not res.stdout.startswith("NOT-READY"):
                    ready[name] = round(time.monotonic() - start, 1)
                    clock.say(f"{name}: cloud-init finished ({ready[name]:.0f}s)", node=name, done=True)
                    del pending[name]
                    last_progress = time.monotonic()
                    continue
                if "HALAB-FAILED" in res.stdout:
                    failed = " ".join(res.stdout.removeprefix("NOT-READY").split("HALAB-FAILED")[0].split())
                    reruns[name] = reruns.get(name, 0) + 1
                    if reruns[name] > SETUP_RERUNS:
                        raise HalabError(
                            f"{name}: role setup failed {reruns[name]} times, last: {failed} (see "
                            f"/var/log/cloud-init-output.log on {name}; `./lab.py rebuild {name}` "
                            "replaces the node)"
                        )
                    # A step that timed out while the host was busy (another node booting) passes
                    # later; every setup step is idempotent, so run the whole setup again.
                    clock.say(f"{name}: role setup failed ({failed}); running it again "
                              f"({reruns[name]}/{SETUP_RERUNS})", node=name)
                    ssh.run(node.ip, RERUN_SETUP, timeout=30)
                    doing[name] = "role setup: running again"
                    last_progress = time.monotonic()
                    continue
                body, step = res.stdout.removeprefix("NOT-READY"), ""
                if "HALAB-STEP" in body:  # the role setup's last `step` (cloud-init-output.log)
                    step_line, _, body = body.partition("HALAB-STEP")[2].partition("\n")
                    step = step_line.strip().removeprefix("halab:").strip()
                if step and doing[name] != f"role setup: {step}":
                    doing[name] = f"role setup: {step}"
                    last_progress = time.monotonic()
                errors = _cloud_init_errors(body) if name not in reruns else []  # the failed run's
                if errors:
                    raise HalabError(
                        f"{name}: cloud-init finished with errors and the node is not ready: "
                        f"{'; '.join(errors)[:500]} (see /var/log/cloud-init-output.log on {name}: "
                        f"ssh -i {ssh.key_file} -o UserKnownHostsFile={ssh.known_hosts} root@{node.ip})"
                    )
            if pending:
                time.sleep(2.0)
    finally:
        ssh.close()
    return ready


# A failed role setup is run again this many times (detached, its output where cloud-init's went)
# before the wait gives up on the node.
SETUP_RERUNS = 2
RERUN_SETUP = ("rm -f /var/lib/halab/failed; setsid nohup /usr/local/lib/halab/setup.sh "
               ">>/var/log/cloud-init-output.log 2>&1 </dev/null &")

# How often the wait asks libvirt whether a waiting node still runs, and how many times it starts
# one that stopped (a guest that panics at every boot) before giving up.
STATE_CHECK_S = 10.0
MAX_RESTARTS = 3


def _restart_stopped(cfg: LabConfig, clock: _Clock, names: list[str], restarts: dict[str, int],
                     doing: dict[str, str]) -> bool:
    """Start, as `heal` would, every waiting node that is shut off or crashed (a guest that powered
    itself off, a QEMU that died, a panic with no reboot), saying so. Returns whether it started one."""
    import libvirt

    from halab.lab.virt import DomainState, LabVirt, state_of

    started = False
    with LabVirt(cfg) as virt:
        doms = virt.domains()
        for name in names:
            dom = doms.get(name)
            if dom is None:
                raise HalabError(f"{name}: its domain {cfg.domain_name(name)!r} is gone while waiting for "
                                 "it; `./lab.py heal` recreates it")
            try:
                state = state_of(dom)
            except libvirt.libvirtError:
                continue
            if state not in (DomainState.SHUT_OFF, DomainState.CRASHED, DomainState.SAVED):
                continue
            restarts[name] = restarts.get(name, 0) + 1
            if restarts[name] > MAX_RESTARTS:
                raise HalabError(f"{name}: {state} again after {MAX_RESTARTS} starts while waiting for it; "
                                 f"its console log ({_console_log(cfg, name)}) says why")
            clock.say(f"{name}: {state} while booting; starting it as heal would "
                      f"(start {restarts[name]}/{MAX_RESTARTS})", node=name)
            try:
                if state == DomainState.CRASHED:
                    dom.destroy()
                dom.create()
            except libvirt.libvirtError as exc:
                raise HalabError(f"{name}: {state} and cannot be started: "
                                 f"{(exc.get_error_message() or str(exc)).strip()}") from None
            doing[name] = f"started again after being {state}"
            started = True
    return started


def _cloud_init_errors(result_json: str) -> list[str]:
    """Errors from cloud-init's /run/cloud-init/result.json (written when its last stage ends)."""
    text = result_json.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    errors = (data.get("v1") or {}).get("errors") or []
    return [str(e) for e in errors] or ["cloud-init finished but the halab ready marker is missing"]


def ssh_state(ssh, ip: str) -> tuple[bool, str]:
    """(reachable, state) of one node over SSH: a wrong host key is its own state."""
    from halab.lab.ssh import HostKeyMismatch

    try:
        ssh.connect_timeout = 2.0
        ok = ssh.run(ip, "true", timeout=5).rc == 0
    except HostKeyMismatch:
        return False, HOST_KEY_MISMATCH
    except HalabError:
        return False, "unreachable"
    return ok, "ok" if ok else "unreachable"


HOST_KEY_MISMATCH = "host key mismatch"


def node_statuses(cfg: LabConfig, check_ssh: bool = True) -> list[NodeStatus]:
    from halab.lab.virt import LabVirt

    out: list[NodeStatus] = []
    with LabVirt(cfg) as virt:
        states = {name: str(st) for name, st in virt.states().items()}
    ssh = lab_ssh(cfg) if check_ssh else None
    try:
        for n in cfg.nodes():
            reachable, how = None, "-"
            if ssh is not None and states[n.name] == "running":
                reachable, how = ssh_state(ssh, n.ip)
            out.append(NodeStatus(n.name, n.role, n.ip, cfg.domain_name(n), states[n.name], reachable, how,
                                  n.host))
    finally:
        if ssh is not None:
            ssh.close()
    return out


# ---- commands ------------------------------------------------------------------------------------


def up(cfg: LabConfig, progress: ProgressCallback | None = None, cancel=None,
       checkpoint: bool | None = None, wait: bool = True) -> UpResult:
    """Build or converge the lab. Re-running on a healthy lab changes nothing. A stopped lab comes
    back from disk first; a lab ready for the first time (for this definition) gets its `ready`
    checkpoint unless ``checkpoint`` (default: lab.yaml's) says not to. ``wait=False`` stops after
    `terraform apply` (every node started, none waited for, no checkpoint)."""
    from halab.lab import checkpoint as warm

    clock = _Clock(progress)
    with _lock(cfg):
        accel = prepare(cfg, clock)
        if lab_exists(cfg):
            started = warm.start_if_stopped(cfg, progress=lambda st: clock.say(st.message, node=st.node))
            if started is not None:
                clock.say(f"{len(started.nodes)} node(s) back from disk in {started.seconds['total']:.1f}s")
        tf = _terraform_client(cfg)
        clock.phase("terraform", "terraform init (offline, halab's provider from the local mirror)…")
        from halab.lab.virt import refuse_foreign_domains

        refuse_foreign_domains(cfg)
        _repair_terraform(cfg, clock)
        on_event = _tf_progress(clock)
        tf.init(on_event=None, cancel=cancel)
        waves = boot_waves(cfg, accel, already_running=_running_nodes(cfg)) if wait else [
            [n.name for n in cfg.nodes()]]
        changes = 0
        for i, wave in enumerate(waves):
            later = [n for w in waves[i + 1:] for n in w]
            _set_running(cfg, stopped=later)
            if i:
                clock.phase("terraform", f"wave {i + 1}/{len(waves)}: starting {', '.join(wave)}…")
            clock.say("terraform apply…")
            result = tf.apply(on_event=on_event, cancel=cancel)
            from halab.lab.terraform import clear_imports

            clear_imports(state_paths(cfg)["terraform"])
            if cfg.hosts:
                _ensure_tunnel(cfg, clock)
            summary = result.summary
            changes += (summary.add + summary.change + summary.remove) if summary else 0
            if not wait:
                clock.say("nodes started; not waiting for them (--no-wait)")
            elif len(waves) == 1:
                clock.phase("boot", "waiting for every node: SSH with verified host key, then cloud-init…")
                wait_ready(cfg, clock, only=wave)
            else:
                clock.phase(f"boot wave {i + 1}", f"wave {i + 1}/{len(waves)} ({', '.join(wave)}): SSH "
                            "with verified host key, then cloud-init…")
                # Only this wave: the earlier ones were ready when it started (checking them again
                # cost an SSH round per node per wave: 35 s of the `ha` profile's third wave, busy host).
                wait_ready(cfg, clock, only=wave)
        take = cfg.checkpoint if checkpoint is None else checkpoint
        if wait and take and not warm.ready_checkpoint_valid(cfg):
            clock.phase("checkpoint", f"checkpoint {warm.READY!r}: one cut of the whole lab to return to…")
            info = warm.save_checkpoint(cfg, warm.READY, locked=True,
                                        progress=lambda st: clock.say(st.message, node=st.node))
            clock.say(f"checkpoint {info.name!r}: {info.size_bytes / 1e9:.2f} GB "
                      f"(./lab.py reset returns to it)")
        phases = clock.finish()
        if len(waves) > 1:  # one figure for the whole boot, as for a lab booted at once
            phases["boot"] = round(sum(v for k, v in phases.items() if k.startswith("boot wave")), 2)
    nodes = node_statuses(cfg, check_ssh=False)
    return UpResult(cfg.name, cfg.vip, accel, nodes, phases, changes)


# A node's role answers only once the roles it needs answer: the stateful clusters first (a
# cluster forms once its members are up), then the API that uses them, then the balancers in front.
WAVE_ROLES: tuple[tuple[str, ...], ...] = (("db",), ("mq",), ("api",), ("haproxy",))
# Up to this many TCG guests boot at once (the default lab's seven measured 257-330 s together);
# a bigger lab under TCG thrashes two cores (the `ha` profile's twelve: 836 s at best, often never).
TOGETHER_MAX_TCG = 7


def _ensure_tunnel(cfg: LabConfig, clock: _Clock) -> None:
    """The VXLAN tunnel between the hosts' lab bridges (after apply: the bridges exist)."""
    from halab.lab import tunnel

    for line in tunnel.ensure(cfg):
        clock.say(line)


def boot_waves(cfg: LabConfig, accel: str, already_running: set[str] | frozenset[str] = frozenset()
               ) -> list[list[str]]:
    """The order nodes boot in: lab.yaml `boot:`; `auto` is waves for a TCG lab larger than
    TOGETHER_MAX_TCG, all at once otherwise (KVM boots are cheap). Nodes already running are in
    the first wave: converging never stops a running node."""
    names = [n.name for n in cfg.nodes()]
    mode = cfg.boot
    if mode == "auto":
        mode = "waves" if accel == "tcg" and len(names) > TOGETHER_MAX_TCG else "together"
    if mode == "together":
        return [names]
    waves = [[n.name for n in cfg.nodes() if n.role in roles] for roles in WAVE_ROLES]
    waves = [w for w in waves if w]
    first = [n for n in names if n in already_running]
    out = [first + [n for n in waves[0] if n not in first]]
    out += [[n for n in w if n not in first] for w in waves[1:]]
    return [w for w in out if w]


def _running_nodes(cfg: LabConfig) -> set[str]:
    if not lab_exists(cfg):
        return set()
    from halab.lab.virt import DomainState, LabVirt

    with LabVirt(cfg) as virt:
        return {n for n, st in virt.states().items() if st in (DomainState.RUNNING, DomainState.PAUSED)}


def _set_running(cfg: LabConfig, stopped: list[str]) -> None:
    """Which nodes this apply starts: the `running` flag of each node in the lab's tfvars."""
    from halab.lab.terraform import VARS_FILE, write_tfvars

    path = state_paths(cfg)["terraform"] / VARS_FILE
    tfvars = json.loads(path.read_text(encoding="utf-8"))
    for name, node in tfvars["nodes"].items():
        node["running"] = name not in stopped
    write_tfvars(path, tfvars)


class DownIncomplete(HalabError):
    """`down` could not remove everything; the message names each object and the command."""


def _lab_pool_path(cfg: LabConfig) -> str:
    from halab.lab.terraform import VARS_FILE, default_pool_path

    try:
        tfvars = json.loads((state_paths(cfg)["terraform"] / VARS_FILE).read_text(encoding="utf-8"))
        return str(tfvars["pool_path"])
    except (OSError, ValueError, KeyError, TypeError):
        return default_pool_path(cfg.name, cfg.libvirt_uri)


def down(cfg: LabConfig, progress: ProgressCallback | None = None, cancel=None) -> dict[str, float]:
    """Destroy everything the lab owns, then its state (checkpoints included). Total from any crash
    point: after `terraform destroy` (or without it, when the state is lost or Terraform fails) it
    sweeps libvirt for what is still the lab's. Idempotent. Raises DownIncomplete, keeping the state
    directory, when something cannot be removed."""
    from halab.lab.terraform import TerraformError
    from halab.lab.virt import sweep_lab

    clock = _Clock(progress)
    root = lab_state_dir(cfg.name, create=False)
    if not root.exists():
        try:
            sweep = sweep_lab(cfg, _lab_pool_path(cfg))
            if cfg.hosts:  # a tunnel left by a run killed before the state existed
                from halab.lab import tunnel

                gone, left = tunnel.remove(cfg)
                sweep.removed.extend(gone)
                sweep.left.extend(left)
        except HalabError:
            clock.say(f"lab {cfg.name!r} has no state: nothing to do")
            return clock.finish()
        if not sweep.removed and not sweep.left:
            clock.say(f"lab {cfg.name!r} has no state: nothing to do")
            return clock.finish()
        _report_sweep(clock, sweep)
        return clock.finish()
    with _lock(cfg):
        paths = state_paths(cfg)
        pool_path = _lab_pool_path(cfg)
        tfdir = paths["terraform"]
        if (tfdir / "terraform.tfstate").exists() and (tfdir / "main.tf").exists():
            clock.phase("terraform", "terraform destroy…")
            try:
                if _repair_terraform(cfg, clock, rebuild=False):
                    tf = _terraform_client(cfg)
                    if not (tfdir / ".terraform").exists():
                        tf.init(cancel=cancel)
                    tf.destroy(on_event=_tf_progress(clock), cancel=cancel)
            except TerraformError as exc:
                clock.say(f"{exc} — removing the lab's objects from libvirt directly instead")
        clock.phase("sweep", "sweeping libvirt for anything still the lab's…")
        sweep = sweep_lab(cfg, pool_path)
        if cfg.hosts:
            from halab.lab import tunnel

            gone, left = tunnel.remove(cfg)
            sweep.removed.extend(gone)
            sweep.left.extend(left)
        _report_sweep(clock, sweep)
        clock.phase("state", "removing the lab's state directory (keys, secrets, checkpoints)…")
    remove_state(cfg)
    return clock.finish()


def _report_sweep(clock: _Clock, sweep) -> None:
    if sweep.removed:
        clock.say(f"removed what Terraform did not know: {', '.join(sweep.removed)}")
    for obj in sweep.foreign:
        clock.say(f"{obj} exists but is not this lab's (no halab ownership tag for it); halab does not "
                  "touch it")
    if sweep.left:
        raise DownIncomplete(
            "down could not remove everything the lab owns (its state directory is kept, so "
            "`./lab.py down` can run again):\n" + "\n".join(f"  {obj}: {cmd}" for obj, cmd in sweep.left)
        )


def _import_targets(cfg: LabConfig) -> list[tuple[str, str]]:
    """Terraform addresses and import ids of the lab's objects libvirt has (domains by ownership
    metadata, the rest by the lab's names): what rebuilds a lost state. On every host of a lab over
    several, at that host's addresses."""
    import libvirt

    from halab.lab.terraform import host_address, node_module_address
    from halab.lab.virt import LabVirt, read_ownership

    out: list[tuple[str, str]] = []
    pool_name = f"{cfg.name}-pool"
    with LabVirt(cfg) as virt:
        for host, conn in virt.connections():
            try:
                pool = conn.storagePoolLookupByName(pool_name)
                out.append((host_address(cfg, host, "libvirt_pool.lab"), pool_name))
            except libvirt.libvirtError:
                pool = None
            try:
                conn.networkLookupByName(cfg.network_name)
                out.append((host_address(cfg, host, "libvirt_network.lab"), cfg.network_name))
            except libvirt.libvirtError:
                pass
            here = [n for n in cfg.nodes() if host is None or n.host == host]
            if pool is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if not pool.isActive():
                        pool.create(0)
                    pool.refresh(0)
                vols = {f"{cfg.name}-base.qcow2": host_address(cfg, host, "libvirt_volume.base"),
                        f"{cfg.name}-vmlinuz": host_address(cfg, host, "libvirt_volume.kernel"),
                        f"{cfg.name}-initrd.img": host_address(cfg, host, "libvirt_volume.initrd")}
                for n in here:
                    mod = node_module_address(cfg, n.name)
                    vols[f"{cfg.domain_name(n)}.qcow2"] = f"{mod}.libvirt_volume.disk"
                    vols[f"{cfg.domain_name(n)}-seed.iso"] = f"{mod}.libvirt_cloudinit_disk.seed"
                with contextlib.suppress(libvirt.libvirtError):
                    for vol in pool.listAllVolumes(0):
                        if vol.name() in vols:
                            out.append((vols[vol.name()], f"{pool_name}/{vol.name()}"))
            names = {n.name for n in here}
            for dom in conn.listAllDomains(0):
                try:
                    own = read_ownership(dom)
                except libvirt.libvirtError:
                    continue
                if own is not None and own.lab == cfg.name and own.node in names:
                    addr = f"{node_module_address(cfg, own.node)}.libvirt_domain.node"
                    out.append((addr, dom.UUIDString()))
    return out


def _repair_terraform(cfg: LabConfig, clock: _Clock, rebuild: bool = True) -> bool:
    """Before Terraform runs: wait for a terraform a killed run left (never unlock a live one),
    release a state lock whose holder is dead, and recover a damaged state — Terraform's backup, or
    (``rebuild``) import blocks for the lab's objects in libvirt. Each step says what it did.
    Returns False when there is no usable state (and ``rebuild`` is off)."""
    from halab.lab import terraform as tfm

    tfdir = state_paths(cfg)["terraform"]
    tfm.wait_for_running_terraform(tfdir, on_wait=lambda pid: clock.say(
        f"terraform (pid {pid}) from an interrupted run is still stopping; waiting for it"))
    released = tfm.release_stale_lock(tfdir)
    if released:
        clock.say(released)
    repair = tfm.repair_state(tfdir) if rebuild else tfm.repair_state(
        tfdir, lost_then="removing the lab's objects from libvirt directly (found by ownership) instead")
    if repair is None:
        return True
    clock.say(repair.message)
    if repair.action == "backup":
        return True
    if not rebuild:
        return False
    count = tfm.write_imports(tfdir, _import_targets(cfg))
    clock.say(f"{count} object(s) of lab {cfg.name!r} found in libvirt; terraform imports them"
              if count else f"no object of lab {cfg.name!r} in libvirt: terraform creates the lab afresh")
    return True


def plan(cfg: LabConfig, progress: ProgressCallback | None = None, cancel=None):
    """What Terraform would change: drift such as a node killed outside halab."""
    if not lab_exists(cfg):
        raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")
    clock = _Clock(progress)
    with _lock(cfg):
        tf = _terraform_client(cfg)
        clock.phase("plan", "terraform plan (refreshing real state from libvirt)…")
        from halab.lab.virt import refuse_foreign_domains

        refuse_foreign_domains(cfg)
        _repair_terraform(cfg, clock)
        result = tf.plan(on_event=_tf_progress(clock), cancel=cancel)
        clock.finish()
    return result


def heal(cfg: LabConfig, progress: ProgressCallback | None = None, cancel=None) -> UpResult:
    """Apply: bring every node back to what the lab definition says, then wait until ready."""
    if not lab_exists(cfg):
        raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")
    return up(cfg, progress, cancel)


def node_addresses(node: str, cfg: LabConfig | None = None) -> list[str]:
    """The Terraform resources one node is made of: its domain, disk overlay and seed."""
    from halab.lab.terraform import node_module_address

    mod = f'module.node["{node}"]' if cfg is None else node_module_address(cfg, node)
    return [f"{mod}.libvirt_domain.node", f"{mod}.libvirt_volume.disk", f"{mod}.libvirt_cloudinit_disk.seed"]


def rebuild(cfg: LabConfig, node: str, progress: ProgressCallback | None = None, cancel=None) -> UpResult:
    """Replace one node (domain, disk, seed: a fresh boot from the base image with the same name,
    address and host key) and keep every other node as it is; then wait until it is ready."""
    from halab.errors import ConfigError, UsageError
    from halab.lab.virt import refuse_foreign_domains

    try:
        cfg.node(node)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not lab_exists(cfg):
        raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")
    clock = _Clock(progress)
    with _lock(cfg):
        accel = prepare(cfg, clock)
        tf = _terraform_client(cfg)
        clock.phase("terraform", f"terraform apply, replacing {node} (the other nodes are kept)…")
        refuse_foreign_domains(cfg)
        _repair_terraform(cfg, clock)
        tf.init(cancel=cancel)
        _set_running(cfg, stopped=[])
        result = tf.apply(on_event=_tf_progress(clock), cancel=cancel, replace=node_addresses(node, cfg))
        from halab.lab.terraform import clear_imports

        clear_imports(state_paths(cfg)["terraform"])
        summary = result.summary
        changes = (summary.add + summary.change + summary.remove) if summary else 0
        clock.phase("boot", f"waiting for {node}: SSH with verified host key, then cloud-init…")
        wait_ready(cfg, clock, only=[node])
        phases = clock.finish()
    return UpResult(cfg.name, cfg.vip, accel, node_statuses(cfg, check_ssh=False), phases, changes)
