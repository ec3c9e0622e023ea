"""Which accelerator the lab's VMs use: KVM only when a real guest kernel has booted under it.

`/dev/kvm` existing proves nothing: under some nested virtualisation it opens fine and the guest
kernel then hangs forever. So the probe boots a Linux kernel with no root filesystem under
``-accel kvm``: a working KVM reaches "VFS: Unable to mount root fs", panics and QEMU exits
(``panic=-1`` + ``-no-reboot``) within a second or two. A guest that has not got there by the
deadline is killed and KVM is declared unusable; the lab then runs under TCG.

The verdict is cached per host in ``cache_dir()/host-facts.json``, keyed by the host kernel release,
the QEMU version and the state of ``/dev/kvm``, so only the first ``doctor`` (or ``up``) pays for it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from halab.atomic import write_atomic
from halab.errors import HalabError
from halab.paths import cache_dir

KVM_DEVICE = "/dev/kvm"
QEMU = "qemu-system-x86_64"
PROBE_DEADLINE_S = 10.0
PROBE_PACKAGE = "linux-image-cloud-amd64"
FACTS_FILE = "host-facts.json"
# What a kernel with no root filesystem prints on its way down; either proves it ran.
_REACHED = ("VFS: Unable to mount root fs", "Kernel panic")

Progress = Callable[[str], None]


class ProbeKernelError(HalabError):
    """No kernel to boot for the KVM probe (no base image, and the cloud kernel cannot be fetched)."""


@dataclass(frozen=True)
class KvmVerdict:
    """The outcome of asking "does KVM really work here?"."""

    usable: bool
    reason: str  # one line a user can read, e.g. "KVM unusable (guest kernel hung); using TCG"
    kind: str  # "ok", "no-device", "no-permission", "hung", "failed", "no-qemu"
    elapsed_s: float = 0.0  # time the probe guest ran (0 when no guest was started)
    kernel: str = ""  # the kernel the probe booted
    output_tail: str = ""  # last lines of the guest console / QEMU stderr, for diagnosis
    cached: bool = False  # True when read from host-facts.json rather than measured now

    @property
    def accel(self) -> str:
        return "kvm" if self.usable else "tcg"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accel"] = self.accel
        return d


# ---- host identity ---------------------------------------------------------------------------


def kvm_device_state(device: str = KVM_DEVICE) -> str:
    """"absent", "no-permission" or "present" (openable for read and write by this user)."""
    if not os.path.exists(device):
        return "absent"
    if not os.access(device, os.R_OK | os.W_OK):
        return "no-permission"
    return "present"


def qemu_version(qemu: str = QEMU) -> str | None:
    """First line of ``qemu-system-x86_64 --version``, or None if QEMU is not installed."""
    path = shutil.which(qemu)
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.stdout.strip().splitlines()
    return first[0] if first else None


def host_key(qemu: str = QEMU, device: str = KVM_DEVICE) -> dict[str, str]:
    """What the cached verdict depends on: a kernel or QEMU upgrade, or /dev/kvm appearing, reprobes."""
    return {
        "kernel_release": platform.release(),
        "qemu_version": qemu_version(qemu) or "none",
        "kvm_device": kvm_device_state(device),
    }


# ---- the probe kernel --------------------------------------------------------------------------


def _image_kernel() -> Path | None:
    """The base image's kernel, when issue 3's image module exists and an image has been built."""
    try:
        image = importlib.import_module("halab.lab.image")  # optional: lands with issue 3
    except ImportError:
        return None
    find = getattr(image, "find_image", None)
    if find is None:
        return None
    img = find()
    kernel = getattr(img, "kernel", None) if img is not None else None
    if kernel and Path(kernel).is_file():
        return Path(kernel)
    return None


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ProbeKernelError(f"{argv[0]} not found; the KVM probe needs it to fetch a kernel") from None
    except subprocess.TimeoutExpired:
        raise ProbeKernelError(f"{' '.join(argv)} took more than {timeout:.0f} s") from None


def resolve_kernel_package(meta: str = PROBE_PACKAGE) -> str:
    """``linux-image-cloud-amd64`` is a metapackage; `apt-get download` needs the real one it
    depends on (e.g. ``linux-image-6.1.0-56-cloud-amd64``)."""
    out = _run(["apt-cache", "depends", meta])
    for line in out.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m and "<" not in m.group(1):
            return m.group(1)
    raise ProbeKernelError(
        f"apt-cache does not know {meta} ({(out.stderr or out.stdout).strip()[:200] or 'no output'}); "
        "run `apt-get update`, or build the base image (`./lab.py image build`) so its kernel is used"
    )


def fetch_probe_kernel(dest_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """Download Debian's cloud kernel once and keep only its vmlinuz in ``dest_dir``."""
    dest_dir = dest_dir or cache_dir() / "probe-kernel"
    target = dest_dir / "vmlinuz"
    if target.is_file():
        return target
    pkg = resolve_kernel_package()
    if progress:
        progress(f"fetching {pkg} for the KVM probe (once)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's _apt user writes here when apt-get runs as root
        out = _run(["apt-get", "download", "-q", pkg], cwd=work, timeout=300)
        debs = sorted(work.glob("*.deb"))
        if out.returncode != 0 or not debs:
            raise ProbeKernelError(f"apt-get download {pkg} failed: {out.stderr.strip()[-300:]}")
        tree = work / "tree"
        out = _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        if out.returncode != 0 or not kernels:
            raise ProbeKernelError(f"{debs[0].name} holds no boot/vmlinuz-*: {out.stderr.strip()[-300:]}")
        partial = dest_dir / "vmlinuz.partial"
        shutil.copyfile(kernels[0], partial)
        partial.replace(target)  # atomic: a crash never leaves half a kernel behind
        write_atomic(dest_dir / "release", kernels[0].name.removeprefix("vmlinuz-") + "\n", 0o644)
    return target


def probe_kernel(progress: Progress | None = None) -> Path:
    """The lab's own kernel when the base image exists, else the cached Debian cloud kernel."""
    return _image_kernel() or fetch_probe_kernel(progress=progress)


# ---- the probe itself ---------------------------------------------------------------------------


def probe_argv(kernel: Path, qemu: str = QEMU) -> list[str]:
    return [
        qemu, "-accel", "kvm", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
        "-no-reboot", "-m", "256", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-nic", "none",  # no option ROM to load: faster, and nothing to do with the question
    ]


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _device_verdict(state: str, device: str = KVM_DEVICE) -> KvmVerdict | None:
    """The verdict when /dev/kvm alone settles it (missing or not ours to open), else None."""
    if state == "absent":
        return KvmVerdict(False, f"KVM unavailable ({device} does not exist); using TCG", "no-device")
    if state == "no-permission":
        return KvmVerdict(
            False, f"KVM unavailable (no read/write permission on {device}); using TCG", "no-permission"
        )
    return None


def run_probe(kernel: Path, qemu: str = QEMU, deadline_s: float = PROBE_DEADLINE_S,
              device: str = KVM_DEVICE) -> KvmVerdict:
    """Boot `kernel` under KVM with no root fs; a guest still running at `deadline_s` is killed."""
    unusable = _device_verdict(kvm_device_state(device), device)
    if unusable is not None:
        return unusable
    qemu_path = shutil.which(qemu)
    if not qemu_path:
        return KvmVerdict(False, f"KVM not probed ({qemu} is not installed); using TCG", "no-qemu")
    argv = probe_argv(kernel, qemu_path)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so the kill reaches everything it started
    )
    try:
        raw, _ = proc.communicate(timeout=deadline_s)
        hung = False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raw, _ = proc.communicate()
        hung = True
    elapsed = round(time.monotonic() - started, 2)
    output = raw.decode("utf-8", "replace")
    tail = _tail(output)
    if hung:
        return KvmVerdict(False, "KVM unusable (guest kernel hung); using TCG", "hung", elapsed,
                          str(kernel), tail)
    evidence = [line.strip() for line in output.splitlines() if any(m in line for m in _REACHED)]
    if evidence:
        return KvmVerdict(True, f"KVM works (probe kernel booted in {elapsed:.1f} s)", "ok", elapsed,
                          str(kernel), "\n".join(evidence[:2]))
    last = tail.splitlines()[-1] if tail else f"exit status {proc.returncode}"
    return KvmVerdict(False, f"KVM unusable (QEMU failed: {last}); using TCG", "failed", elapsed,
                      str(kernel), tail)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited between the timeout and the kill
        os.killpg(proc.pid, signal.SIGKILL)


# ---- cache -----------------------------------------------------------------------------------


def _facts_path() -> Path:
    return cache_dir() / FACTS_FILE


def _read_facts() -> dict[str, Any]:
    try:
        data = json.loads(_facts_path().read_text())
    except (OSError, ValueError):  # missing or corrupt: treated as "not probed yet"
        return {}
    return data if isinstance(data, dict) else {}


def cached_verdict(key: dict[str, str] | None = None) -> KvmVerdict | None:
    """The stored verdict for this host, or None when there is none or the host changed."""
    entry = _read_facts().get("kvm")
    if not isinstance(entry, dict) or entry.get("key") != (key or host_key()):
        return None
    try:
        fields = {k: entry["verdict"][k] for k in ("usable", "reason", "kind", "elapsed_s", "kernel",
                                                     "output_tail")}
        return KvmVerdict(**fields, cached=True)
    except (KeyError, TypeError):
        return None


def store_verdict(verdict: KvmVerdict, key: dict[str, str]) -> None:
    facts = _read_facts()
    facts["kvm"] = {"key": key, "verdict": verdict.to_dict(), "probed_at": time.time()}
    path = _facts_path()
    write_atomic(path, json.dumps(facts, indent=2) + "\n", 0o644)


def kvm_verdict(refresh: bool = False, progress: Progress | None = None,
                deadline_s: float = PROBE_DEADLINE_S) -> KvmVerdict:
    """Does KVM work on this host? Cached per host; `refresh` probes again.

    Raises ProbeKernelError when a probe is needed and no kernel can be found or fetched.
    """
    key = host_key()
    if not refresh:
        hit = cached_verdict(key)
        if hit is not None:
            return hit
    verdict = _device_verdict(key["kvm_device"])  # nothing to boot when /dev/kvm settles it
    if verdict is None:
        kernel = probe_kernel(progress)
        if progress:
            progress(f"booting a kernel under KVM (deadline {deadline_s:.0f} s)")
        verdict = run_probe(kernel, deadline_s=deadline_s)
    store_verdict(verdict, key)
    return verdict


def resolve_accel(cfg: Any, progress: Progress | None = None) -> str:
    """``"kvm"`` or ``"tcg"`` for this lab: what the config says, and for ``auto`` the probe's verdict.
    With ``auto`` and no way to probe (no kernel), TCG: slower, never hangs."""
    if cfg.accel in ("kvm", "tcg"):
        return cfg.accel
    if any(h.ssh is not None for h in getattr(cfg, "hosts", ())):
        return "tcg"  # KVM on a remote host is not boot-probed: never trusted on its own word
    try:
        return kvm_verdict(progress=progress).accel
    except ProbeKernelError:
        return "tcg"
