"""`doctor`: is this host ready to run the lab? Each check says what it found and, when it fails,
what to do about it. Nothing here prints; the CLI renders the `Check` list.

The KVM check boots a kernel under KVM (see `halab.lab.accel`), so the first run takes up to ~10 s more;
later runs read the cached verdict.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from halab.errors import HalabError
from halab.lab import accel
from halab.lab.config import HostSpec, LabConfig
from halab.paths import cache_dir

MIN_TERRAFORM = (1, 6)
GIB = 1024 * 1024 * 1024
DEFAULT_FREE_BYTES = 3 * GIB  # base image build: rootfs + raw filesystem + qcow2
LIBVIRT_TIMEOUT_S = 10.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, one line
    fix: str = ""  # what to do when not ok
    required: bool = True  # a failed required check makes `doctor` exit 1; others are warnings
    value: str = ""  # machine-readable result where there is one (the accel check: "kvm" or "tcg")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _no_init_system() -> bool:
    """True on hosts where nothing would start libvirtd for us (containers, CI)."""
    return not Path("/run/systemd/system").is_dir()


def _run(argv: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return None


# ---- individual checks ------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def check_terraform() -> Check:
    install = ("install Terraform >= 1.6 and put it on PATH "
               "(https://developer.hashicorp.com/terraform/install), e.g. in /usr/local/bin")
    path = shutil.which("terraform")
    if not path:
        return Check("terraform", False, "terraform is not on PATH", install)
    out = _run([path, "version", "-json"])
    version = None
    if out is not None and out.returncode == 0:
        try:
            version = str(json.loads(out.stdout)["terraform_version"])
        except (ValueError, KeyError, TypeError):
            version = None
    if version is None and out is not None:
        version = (out.stdout.splitlines() or [""])[0]
    parsed = parse_version(version or "")
    if parsed is None:
        return Check("terraform", False, f"{path}: cannot tell its version", install)
    if parsed[:2] < MIN_TERRAFORM:
        return Check("terraform", False, f"Terraform {version} at {path} is older than 1.6", install)
    return Check("terraform", True, f"Terraform {version} at {path}")


def libvirt_fix(uri: str) -> str:
    import urllib.parse

    host = urllib.parse.urlsplit(uri).hostname
    if host:
        return (f"is libvirtd running on {host}, and does it take this transport? Try `virsh -c {uri} "
                "version` from this machine")
    if uri.startswith("test:"):
        return "the test driver needs no daemon; check that libvirt-python is installed (./setup.sh)"
    if _no_init_system():
        return ("this host has no init system to start libvirt: run `virtlogd -d && libvirtd -d` as root "
                "(./setup.sh does this)")
    return "start it: `systemctl start libvirtd virtlogd` (as root)"


def _ask_libvirt(uri: str, ask: Callable[[Any], dict[str, Any]], timeout_s: float,
                 name: str) -> dict[str, Any] | None:
    """``ask(conn)`` on a connection to ``uri`` in a thread with a deadline (libvirt.open can block
    for a long time on a wedged daemon). None when it did not answer in time; ``{"error": ...}``
    when libvirt refused."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # the core never prints
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            conn = libvirt.open(uri)
            try:
                result.update(ask(conn))
            finally:
                conn.close()
        except libvirt.libvirtError as exc:
            result["error"] = exc.get_error_message() or str(exc)

    worker = threading.Thread(target=run, daemon=True, name=name)
    worker.start()
    worker.join(timeout_s)
    return None if worker.is_alive() else result


def check_libvirt(uri: str, timeout_s: float = LIBVIRT_TIMEOUT_S) -> Check:
    try:
        import libvirt  # noqa: F401 - only to say clearly when the binding is missing
    except ImportError:
        return Check("libvirt", False, "the libvirt Python binding is missing", "run ./setup.sh")
    result = _ask_libvirt(uri, lambda conn: {"version": conn.getLibVersion(), "hv": conn.getType()},
                          timeout_s, "doctor-libvirt")
    if result is None:
        return Check("libvirt", False, f"connecting to {uri} did not answer within {timeout_s:.0f} s",
                     f"the daemon looks stuck; restart it. {libvirt_fix(uri)}")
    if "error" in result:
        return Check("libvirt", False, f"cannot connect to {uri}: {result['error']}", libvirt_fix(uri))
    v = result["version"]
    return Check("libvirt", True,
                 f"connected to {uri} ({result['hv']}, libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000})")


def check_tool(name: str, package: str, why: str, required: bool = True) -> Check:
    path = shutil.which(name)
    if not path:
        return Check(name, False, f"{name} is not installed ({why})",
                     f"apt-get install {package} (or run ./setup.sh)", required)
    out = _run([path, "--version"], timeout=10)
    first = (out.stdout.strip().splitlines() or [""])[0] if out is not None else ""
    return Check(name, True, f"{path}" + (f": {first}" if first else ""), required=required)


def _cache_need_bytes() -> tuple[int, str]:
    try:
        image = importlib.import_module("halab.lab.image")
    except ImportError:
        return DEFAULT_FREE_BYTES, "to build the base image"
    find = getattr(image, "find_image", None)
    if find is not None and find() is not None:
        return GIB, "headroom; the base image is already built"
    return int(getattr(image, "MIN_FREE_BYTES", DEFAULT_FREE_BYTES)), "to build the base image"


def check_disk(path: Path | None = None, need: int | None = None) -> Check:
    why = ""
    if need is None:
        need, why = _cache_need_bytes()
    try:
        path = path or cache_dir()
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return Check("disk", False, f"cannot use the cache directory: {exc}",
                     "set HALAB_CACHE to a writable directory with a few GiB free")
    detail = f"{free / GIB:.1f} GiB free in {path} (need {need / GIB:.1f} GiB{', ' + why if why else ''})"
    if free < need:
        return Check("disk", False, detail,
                     f"free {(need - free) / GIB:.1f} GiB there, or point HALAB_CACHE at a larger disk")
    return Check("disk", True, detail)


def mem_available_mib(meminfo: str | None = None) -> int | None:
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return None
    m = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(m.group(1)) // 1024 if m else None


def check_memory(cfg: LabConfig, available_mib: int | None = None) -> Check:
    need = cfg.total_memory_mib()
    have = available_mib if available_mib is not None else mem_available_mib()
    topo = ", ".join(f"{r} x{cfg.roles[r].count}" for r in cfg.roles)
    if have is None:
        return Check("memory", False, f"the lab needs {need} MiB; cannot read MemAvailable",
                     "check /proc/meminfo is readable", required=False)
    detail = f"the lab ({cfg.profile}: {topo}) needs {need} MiB; {have} MiB available"
    if have < need:
        return Check("memory", False, detail,
                     f"free {need - have} MiB (stop other VMs) or lower roles.<role>.count / memory_mib "
                     "in lab.yaml")
    return Check("memory", True, detail)


def check_accel(cfg: LabConfig, refresh: bool = False, progress: Progress | None = None) -> Check:
    if cfg.accel == "tcg":
        return Check("accel", True, "TCG (accel: tcg in the lab definition); KVM not probed", value="tcg")
    try:
        verdict = accel.kvm_verdict(refresh=refresh, progress=progress)
    except accel.ProbeKernelError as exc:
        if cfg.accel == "kvm":
            return Check("accel", False, f"accel: kvm, but KVM could not be probed: {exc}",
                         "build the base image (./lab.py image build) or set accel: auto/tcg", value="kvm")
        return Check("accel", False, f"KVM not probed ({exc}); using TCG",
                     "build the base image (./lab.py image build) so the probe can use its kernel",
                     required=False, value="tcg")
    cached = " [cached; --refresh to probe again]" if verdict.cached else ""
    if verdict.usable:
        return Check("accel", True, f"{verdict.reason}; using KVM{cached}", value="kvm")
    if cfg.accel == "kvm":
        return Check("accel", False, f"accel: kvm, but {verdict.reason.removesuffix('; using TCG')}",
                     "set accel: auto (or tcg) in lab.yaml; VMs would hang or fail under KVM here",
                     value="kvm")
    fixes = {
        "no-device": "load the kvm module (modprobe kvm_intel / kvm_amd) or enable virtualisation in the "
                     "firmware; the lab works under TCG, only slower",
        "no-permission": "run as root or add the user to the kvm group; the lab works under TCG, only "
                         "slower",
        "hung": "nested virtualisation here cannot boot a guest; nothing to do: the lab runs under TCG "
                "(slower). Set accel: tcg to skip the probe",
    }
    return Check("accel", False, f"{verdict.reason}{cached}",
                 fixes.get(verdict.kind, "the lab runs under TCG (slower); see the probe output with --json"),
                 required=False, value="tcg")


# ---- all together -----------------------------------------------------------------------------


def check_kvm_device_group(device: str = "/dev/kvm") -> Check:
    """Without udev, /dev/kvm stays root-only; libvirt then decides KVM "is not available now"
    after probing it as root and re-probes QEMU on every domain define (~30-40 s each)."""
    import grp
    import os
    import stat

    try:
        st = os.stat(device)
    except FileNotFoundError:
        return Check("kvm-device", True, f"{device} absent: libvirt uses TCG only", required=False)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    if group == "kvm" and mode & 0o060 == 0o060:
        return Check("kvm-device", True, f"{device} group kvm, mode {mode:o}", required=False)
    return Check(
        "kvm-device", False,
        f"{device} is group {group}, mode {mode:o}: libvirt re-probes QEMU on every define (slow)",
        f"chgrp kvm {device} && chmod 0660 {device}   (what udev does; ./setup.sh does it)",
        required=False,
    )


def check_remote_kvm(host: HostSpec, timeout_s: float = LIBVIRT_TIMEOUT_S) -> Check:
    """A remote host's KVM, as far as its libvirt says (domain capabilities for type kvm). Not
    boot-probed: halab boots its probe kernel only here, so `accel: auto` runs the lab under TCG
    unless every host is this machine; `accel: kvm` trusts libvirt's word."""
    import libvirt

    name = f"accel[{host.name}]"

    def ask(conn: Any) -> dict[str, Any]:
        try:
            conn.getDomainCapabilities(None, None, None, "kvm", 0)
            return {"kvm": True}
        except libvirt.libvirtError as exc:
            return {"kvm": False, "why": exc.get_error_message() or str(exc)}

    result = _ask_libvirt(host.uri, ask, timeout_s, "doctor-kvm")
    if result is None or "error" in result:
        return Check(name, False, f"host {host.name}: KVM unknown (libvirt did not answer)",
                     "see the libvirt check of this host", required=False, value="tcg")
    if result["kvm"]:
        return Check(name, True, f"host {host.name}: libvirt offers KVM (not boot-probed on a remote host: "
                     "accel: auto uses TCG, accel: kvm uses it)", required=False, value="kvm")
    return Check(name, False, f"host {host.name}: no KVM ({clip_text(result.get('why', ''))}); TCG there",
                 "the lab runs under TCG (slower)", required=False, value="tcg")


def clip_text(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def check_host_shell(host: HostSpec) -> Check:
    """The host's end of the tunnel is made with `ip` there: over the user's ssh for a remote host."""
    from halab.lab import hostshell

    name = f"tunnel[{host.name}]"
    try:
        res = hostshell.run(host, ["ip", "-V"], check=True, timeout_s=20)
    except hostshell.HostCommandError as exc:
        fix = ("give the host an ssh: target that reaches it with a key (BatchMode: no password "
               "prompt), as root or a user allowed to run ip") if host.ssh else "install iproute2"
        return Check(name, False, str(exc), fix)
    how = "this machine" if host.ssh is None else str(host.ssh)
    return Check(name, True, f"host {host.name}: `ip` runs on {how} ({res.stdout.strip() or 'iproute2'})")


def host_jobs(cfg: LabConfig) -> list[tuple[str, Callable[[], Check]]]:
    """Per host of a lab over several: its libvirt (reachable, version), its shell for the tunnel,
    its KVM verdict (the boot probe for this machine, libvirt's word for a remote one)."""
    jobs: list[tuple[str, Callable[[], Check]]] = []
    for h in cfg.hosts:
        jobs.append((f"libvirt[{h.name}]", lambda h=h: _named(check_libvirt(h.uri), f"libvirt[{h.name}]")))
        if not h.uri.startswith("test:"):
            jobs.append((f"tunnel[{h.name}]", lambda h=h: check_host_shell(h)))
            if h.ssh is not None:
                jobs.append((f"accel[{h.name}]", lambda h=h: check_remote_kvm(h)))
    return jobs


def _named(check: Check, name: str) -> Check:
    return Check(name, check.ok, check.detail, check.fix, check.required, check.value)


def run_checks(cfg: LabConfig, refresh: bool = False, progress: Progress | None = None) -> list[Check]:
    """Every check, in a stable order. Independent checks run concurrently so the KVM probe's
    deadline is the only wait. A lab over several hosts checks each host."""
    builtin = cfg.image == "builtin"
    libvirt_jobs: list[tuple[str, Callable[[], Check]]] = host_jobs(cfg) if cfg.multihost else [
        ("libvirt", lambda: check_libvirt(cfg.libvirt_uri))]
    jobs: list[tuple[str, Callable[[], Check]]] = [
        ("terraform", check_terraform),
        *libvirt_jobs,
        ("qemu-system-x86_64", lambda: check_tool("qemu-system-x86_64", "qemu-system-x86", "runs the VMs")),
        ("qemu-img", lambda: check_tool("qemu-img", "qemu-utils", "creates node disks")),
        ("mmdebstrap", lambda: check_tool("mmdebstrap", "mmdebstrap", "builds the base image",
                                          required=builtin)),
        ("disk", check_disk),
        ("memory", lambda: check_memory(cfg)),
        ("accel", lambda: check_accel(cfg, refresh=refresh, progress=progress)),
        ("kvm-device", check_kvm_device_group),
    ]
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="doctor") as pool:
        futures = [(name, pool.submit(job)) for name, job in jobs]
        out = []
        for name, fut in futures:
            try:
                out.append(fut.result())
            except (HalabError, OSError) as exc:  # e.g. the cache is not writable: report, don't crash
                out.append(Check(name, False, f"the check itself failed: {exc}",
                                 "fix the error above and run doctor again"))
        return out


def chosen_accel(checks: list[Check], cfg: LabConfig | None = None) -> str:
    """The accelerator the lab will use, as the accel check found it ("tcg" if it did not run).
    A lab with a remote host runs under TCG with `accel: auto` (KVM there is not boot-probed)."""
    if cfg is not None and cfg.accel == "auto" and any(h.ssh is not None for h in cfg.hosts):
        return "tcg"
    return next((c.value for c in checks if c.name == "accel" and c.value), "tcg")


def all_required_ok(checks: list[Check]) -> bool:
    return all(c.ok or not c.required for c in checks)
