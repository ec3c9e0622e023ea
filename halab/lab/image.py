"""The offline base image: Debian 12 with every role's packages, built once with mmdebstrap, cached.

Layout under ``cache_dir()/images/``::

    <recipe_hash>/            a finished image (appears only by an atomic rename)
        disk.qcow2            ext4 filesystem, no partition table (root=/dev/vda)
        vmlinuz, initrd.img   for direct kernel boot
        manifest.json         recipe, packages and versions, sizes, build time
        build.log             mmdebstrap's output
    .tmp-<hash>-<pid>-<rnd>/  a build in progress (removed by the next build if it was killed)
    .lock                     flock held while building or cleaning up

A build runs mmdebstrap in its own mount and PID namespace, so killing it at any point leaves no
mounts and no stray processes, only a temp directory that the next build removes.

A stock cloud image (``image: /path/to.qcow2`` in lab.yaml) is described by :class:`StockImage`: it
boots from its own bootloader and cloud-init installs the role's packages at first boot.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halab.atomic import write_atomic
from halab.errors import HalabError
from halab.paths import cache_dir

RECIPE_VERSION = 3  # 2: cheaper boot under TCG (small initrd, quiet console, masks, trimmed cloud-init)
# 3: sshd keeps trying to start on a starved vCPU (a busy host left three nodes without SSH)
SUITE = "bookworm"
ARCH = "amd64"
VARIANT = "minbase"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "HALAB_MIRROR"  # e.g. a local apt-cacher-ng; does not change the recipe hash

# What any node needs to boot and be reached.
BASE_PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "cloud-init",
    # cloud-init 22.4 on Debian renders network-config v2 to /etc/network/interfaces (eni renderer)
    # when ifupdown is present; verified to bring up a static eth0 matched by MAC.
    "ifupdown",
    "openssh-server",
    "python3",
    "iproute2",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "curl",
    "socat",
)
# Per role; the lab API needs PyMySQL and pika.
ROLE_PACKAGES: dict[str, tuple[str, ...]] = {
    "haproxy": ("haproxy", "keepalived"),
    "api": ("python3-pymysql", "python3-pika", "mariadb-client"),
    "db": ("mariadb-server", "galera-4", "mariadb-client"),
    "mq": ("rabbitmq-server",),
}
# Debian enables these at install; cloud-init enables only the node's own role's services.
# mariadb.socket too: enabled by the package, it made systemd listen on 3306 on every node, so the
# ha profile's HAProxy could not bind its Galera frontend (and a connection would start MariaDB).
DISABLED_SERVICES: tuple[str, ...] = ("mariadb", "mariadb.socket", "rabbitmq-server", "haproxy", "keepalived")
# Documentation and translations are never read on a lab node.
DPKG_OPTIONS: tuple[str, ...] = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
# How the build runs, not what it produces (kept out of the recipe hash): no fsync per file, since
# the rootfs is copied into a fresh filesystem and synced once at the end.
BUILD_DPKG_OPTIONS: tuple[str, ...] = ("force-unsafe-io",)
# cloud-init settings baked into the image: only NoCloud is probed (no 120 s metadata-server
# timeouts offline), and root may log in with the lab's key (minbase has no sudo).
# The module lists replace Debian's (cloud.cfg.d overrides them) with what halab's user-data uses
# (cloud-init/common/user-data.yaml, halab/lab/cloudinit.py): every other module costs a Python import
# and often a subprocess under TCG, and `locale` failed on every boot (locale-gen + update-locale).
# power-state-change stays for the image boot test; the stock-image path keeps its own cloud.cfg.
# bootcmd follows write-files so a role's early hook (cloud-init/<role>/early.sh) finds its files:
# the mq role starts RabbitMQ there, while cloud-init's later stages still run, instead of from the
# final stage ~70 s later (Erlang's start-up was the last thing `up` waited for).
CLOUD_INIT_MODULES: tuple[str, ...] = (
    "write-files", "bootcmd", "set_hostname", "update_hostname", "users-groups", "ssh",
)
CLOUD_CONFIG_MODULES: tuple[str, ...] = ("set-passwords", "runcmd")
CLOUD_FINAL_MODULES: tuple[str, ...] = (
    "scripts-per-once", "scripts-per-boot", "scripts-per-instance", "scripts-user", "final-message",
    "power-state-change",
)


def _yaml_list(name: str, items: tuple[str, ...]) -> str:
    return f"{name}:\n" + "".join(f" - {i}\n" for i in items)


CLOUD_CFG = (
    "# written by halab's image recipe\n"
    "datasource_list: [ NoCloud, None ]\n"
    "disable_root: false\n"
    + _yaml_list("cloud_init_modules", CLOUD_INIT_MODULES)
    + _yaml_list("cloud_config_modules", CLOUD_CONFIG_MODULES)
    + _yaml_list("cloud_final_modules", CLOUD_FINAL_MODULES)
)
# A small initrd: only what finds the root filesystem on a virtio disk (ext4, jbd2 and crc32c are
# built into Debian's cloud kernel; listed anyway so a kernel with them as modules still boots).
# MODULES=most put ~every storage/network driver in, and udev in the initrd probed them all.
INITRD_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
INITRAMFS_CONF = "# written by halab's image recipe\nMODULES=list\n"
# Modules the guest must not load: under TCG the emulated CPU advertises SVM, so udev loads kvm and
# kvm_amd (which then fail or idle); cpufreq drivers and a PC speaker serve nothing in a VM.
BLACKLISTED_MODULES: tuple[str, ...] = (
    "kvm", "kvm_amd", "kvm_intel", "powernow_k8", "acpi_cpufreq", "pcspkr", "floppy", "joydev",
    "serio_raw", "i2c_piix4", "intel_rapl_msr", "intel_rapl_common", "intel_pmc_bxt", "iTCO_wdt",
)
MODPROBE_CONF = "# written by halab's image recipe\n" + "".join(
    f"blacklist {m}\n" for m in BLACKLISTED_MODULES)
# Units that cost CPU at boot (or later) and serve nothing on a lab node: VT gettys (the serial
# getty on ttyS0 stays), periodic maintenance (apt, dpkg backups, e2scrub, fstrim).
MASKED_UNITS: tuple[str, ...] = (
    *(f"getty@tty{i}.service" for i in range(1, 7)),
    "getty-static.service",  # starts getty@tty2..6 when logind is missing: fails with them masked
    "e2scrub_reap.service", "e2scrub_all.timer", "e2scrub_all.service",
    "apt-daily.timer", "apt-daily.service", "apt-daily-upgrade.timer", "apt-daily-upgrade.service",
    "dpkg-db-backup.timer", "dpkg-db-backup.service", "fstrim.timer", "fstrim.service",
    "man-db.timer", "keyboard-setup.service", "console-setup.service", "systemd-timesyncd.service",
)
# On a host whose cores are taken, sshd's start can time out (seen: "Failed to start ssh.service"
# on three of seven TCG nodes, unreachable for good). A lab node without SSH is lost to halab: give
# its start all the time it needs and restart it, without systemd's start limit, whatever happened.
SSH_DROPIN = ("# written by halab's image recipe\n[Unit]\nStartLimitIntervalSec=0\n"
              "[Service]\nTimeoutStartSec=15min\nRestart=always\nRestartSec=5\n")
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
FSTAB = "/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n"
# Modules the initrd must carry to find the root filesystem on a virtio disk.
REQUIRED_INITRD_MODULES: tuple[str, ...] = ("virtio_pci.ko", "virtio_blk.ko")
MAX_INITRD_MODULES = 40  # MODULES=list: a few dozen at most (MODULES=most carried hundreds)
HEADROOM_BYTES = 1536 * 1024 * 1024  # free space inside the guest's root filesystem
MIN_FREE_BYTES = 4 * 1024 * 1024 * 1024  # rootfs + raw filesystem + qcow2 while building
# quiet/loglevel=3: every console line is emulated serial I/O under TCG; systemd still prints
# failures and jobs that take long (show_status=auto).
KERNEL_CMDLINE = ("root=/dev/vda rw console=ttyS0 net.ifnames=0 ds=nocloud "
                  "quiet loglevel=3 systemd.show_status=auto")
REQUIRED_TOOLS: tuple[str, ...] = ("mmdebstrap", "mkfs.ext4", "qemu-img", "unshare", "chroot")

DISK_NAME = "disk.qcow2"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
MANIFEST_NAME = "manifest.json"
LOG_NAME = "build.log"
FAILED_LOG_NAME = "last-failed-build.log"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


# ---- errors ----------------------------------------------------------------------------------


class ImageError(HalabError):
    """The base image could not be built or read."""


class ImageToolMissing(ImageError):
    """A host tool the build needs is not installed."""


class MirrorUnreachable(ImageError):
    """The Debian mirror does not answer."""


class DiskFull(ImageError):
    """Not enough free space in the cache for a build."""


class ImageBuildFailed(ImageError):
    """mmdebstrap, mkfs.ext4 or qemu-img failed."""


# ---- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEvent:
    """Build progress: ``phase`` is one of check, cleanup, mmdebstrap, customize, verify, mkfs,
    qcow2, finish, done; ``elapsed`` counts seconds from the start of the build."""

    phase: str
    elapsed: float
    message: str


@dataclass(frozen=True)
class BaseImage:
    path: Path
    disk: Path
    kernel: Path
    initrd: Path
    manifest: dict[str, Any] = field(repr=False)
    recipe_hash: str

    @property
    def kernel_cmdline(self) -> str:
        return KERNEL_CMDLINE

    @property
    def size_bytes(self) -> int:
        """Bytes the image occupies in the cache (disk, kernel, initrd)."""
        return sum(p.stat().st_size for p in (self.disk, self.kernel, self.initrd))


@dataclass(frozen=True)
class StockImage:
    """A distribution cloud image named in lab.yaml. It boots from its own bootloader (no kernel
    or initrd given to libvirt) and needs the network at first boot: cloud-init installs the
    packages (cloud-config ``packages:``) and then writes configuration as on the built-in image."""

    disk: Path
    common_packages: tuple[str, ...] = ("python3", "iproute2", "curl", "socat", "ca-certificates")

    boot: str = "bootloader"

    def packages_for(self, role: str) -> list[str]:
        """Packages for cloud-config ``packages:`` on a node of this role."""
        return [*self.common_packages, *ROLE_PACKAGES[role]]

    def cloud_config_for(self, role: str) -> dict[str, Any]:
        """The cloud-config keys a node of this role adds on a stock image (merged into its
        user-data by the cloud-init renderer). Packages install before ``runcmd`` runs."""
        return {"package_update": True, "packages": self.packages_for(role), "disable_root": False}


def stock_image(path: str | Path) -> StockImage:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageError(f"stock image {p} does not exist")
    return StockImage(disk=p.resolve())


def image_for(spec: str, progress: Callable[[ImageEvent], None] | None = None) -> BaseImage | StockImage:
    """The image a lab uses: ``cfg.image`` is ``builtin`` (built or taken from the cache) or the path
    of a stock cloud image."""
    return ensure_image(progress) if spec == "builtin" else stock_image(spec)


# ---- recipe and cache ------------------------------------------------------------------------


def packages() -> list[str]:
    """Every package the built-in image carries (sorted, no duplicates)."""
    out = set(BASE_PACKAGES)
    for pkgs in ROLE_PACKAGES.values():
        out.update(pkgs)
    return sorted(out)


def recipe() -> dict[str, Any]:
    """Everything that decides the image's content. Its hash names the image in the cache."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "arch": ARCH,
        "variant": VARIANT,
        "packages": packages(),
        "disabled_services": sorted(DISABLED_SERVICES),
        "dpkg_options": list(DPKG_OPTIONS),
        "cloud_cfg": CLOUD_CFG,
        "initramfs_conf": INITRAMFS_CONF,
        "initrd_modules": list(INITRD_MODULES),
        "modprobe_conf": MODPROBE_CONF,
        "masked_units": sorted(MASKED_UNITS),
        "ssh_dropin": SSH_DROPIN,
        "kernel_cmdline": KERNEL_CMDLINE,
        "fstab": FSTAB,
        "headroom_bytes": HEADROOM_BYTES,
    }


def recipe_hash(rec: dict[str, Any] | None = None) -> str:
    rec = recipe() if rec is None else rec
    canon = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def images_dir() -> Path:
    path = cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load(path: Path) -> BaseImage | None:
    """A finished image directory, or None when anything is missing or unreadable."""
    files = [path / n for n in (DISK_NAME, KERNEL_NAME, INITRD_NAME, MANIFEST_NAME)]
    if not all(f.is_file() for f in files):
        return None
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    return BaseImage(path=path, disk=files[0], kernel=files[1], initrd=files[2], manifest=manifest,
                     recipe_hash=path.name)


def find_image(rhash: str | None = None) -> BaseImage | None:
    """The cached image for the current recipe (or for ``rhash``), or None."""
    return _load(images_dir() / (rhash or recipe_hash()))


def list_images() -> list[BaseImage]:
    """Finished images in the cache, newest first. Temp directories of builds are not images."""
    out = []
    for p in images_dir().iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        img = _load(p)
        if img is not None:
            out.append(img)
    return sorted(out, key=lambda i: i.manifest.get("built_at", ""), reverse=True)


@contextlib.contextmanager
def _build_lock(idir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Exclusive while building or cleaning up. Without ``on_wait`` a held lock is an error; with
    it, ``on_wait`` is called once and the caller waits for the other build to finish."""
    with open(idir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is None:
                raise ImageError(
                    f"another image build is running (lock {idir / '.lock'}); wait for it to finish"
                ) from None
            on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    root = str(path.resolve())
    found = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                mnt = line.split()[4].replace("\\040", " ")
                if mnt == root or mnt.startswith(root + "/"):
                    found.append(mnt)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a build directory. A rootfs can hold bind mounts of /dev or /proc if a build was run
    outside its own mount namespace: unmount them first and never delete through a mount."""
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
    left = _mounts_under(path)
    if left:
        raise ImageError(f"cannot remove {path}: still mounted: {', '.join(left)}; unmount and retry")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def clean_partial_builds(
    idir: Path | None = None, notify: Callable[[Path], None] | None = None
) -> list[Path]:
    """Remove temp directories left by killed or failed builds. Call only while holding the build
    lock (``ensure_image`` does), so no running build's directory is touched. ``notify`` hears of
    each one before it is removed (a rootfs takes a while to delete). Returns what it removed."""
    idir = idir or images_dir()
    removed = []
    for p in sorted(idir.iterdir()):
        if p.name.startswith((TMP_PREFIX, OLD_PREFIX)):
            if notify:
                notify(p)
            _remove_tree(p)
            removed.append(p)
    return removed


# ---- pre-flight checks -----------------------------------------------------------------------


def mirror() -> str:
    return (os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")


def check_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise ImageToolMissing(
            f"cannot build the base image: {', '.join(missing)} not found. Install with "
            "`apt-get install mmdebstrap e2fsprogs qemu-utils util-linux` (./setup.sh does it)"
        )
    if os.geteuid() != 0:
        raise ImageError("building the base image needs root (mmdebstrap in root mode keeps file "
                         "ownership for the ext4 image); run as root or `sudo ./lab.py image build`")


def check_mirror(url: str | None = None, timeout: float = 8.0) -> None:
    url = url or mirror()
    probe = f"{url}/dists/{SUITE}/InRelease"
    try:
        req = urllib.request.Request(probe, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if resp.status >= 400:
                raise MirrorUnreachable(f"Debian mirror {url} answered HTTP {resp.status} for {probe}")
    except urllib.error.HTTPError as exc:
        raise MirrorUnreachable(f"Debian mirror {url} answered HTTP {exc.code} for {probe}; set "
                                f"${MIRROR_ENV} to a working mirror") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MirrorUnreachable(
            f"Debian mirror {url} is unreachable ({reason}). The image build downloads ~300 MB of "
            f"packages once; connect the host or set ${MIRROR_ENV} to a reachable mirror/cache"
        ) from None


def check_free_space(path: Path, need: int | None = None) -> None:
    need = MIN_FREE_BYTES if need is None else need
    free = shutil.disk_usage(path).free
    if free < need:
        raise DiskFull(f"only {free / 2**30:.1f} GiB free in {path}; building the base image needs "
                       f"{need / 2**30:.1f} GiB. Free space or point $HALAB_CACHE elsewhere")


# ---- the build -------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _short(text: str, width: int = 100) -> str:
    text = text.splitlines()[0] if text else text
    return text if len(text) <= width else text[: width - 1] + "…"


class _Build:
    def __init__(self, progress: Callable[[ImageEvent], None] | None, idir: Path, rhash: str):
        self.progress = progress
        self.t0 = time.monotonic()
        self.idir = idir
        self.rhash = rhash
        self.tmp = idir / f"{TMP_PREFIX}{rhash}-{os.getpid()}-{secrets.token_hex(3)}"
        self.rootfs = self.tmp / "rootfs"
        self.out = self.tmp / "out"
        self.log_path = self.tmp / LOG_NAME
        self.phases: dict[str, float] = {}
        self._phase_start = self.t0
        self._current = "check"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, phase: str, message: str) -> None:
        if self.progress:
            self.progress(ImageEvent(phase, self.elapsed(), message))

    def phase(self, name: str, message: str) -> None:
        self._close_phase(time.monotonic())
        self._current = name
        self.emit(name, message)

    def _close_phase(self, now: float) -> None:
        cur = self._current
        self.phases[cur] = round(self.phases.get(cur, 0.0) + now - self._phase_start, 2)
        self._phase_start = now

    def run(self, argv: list[str], what: str, stream: bool = False) -> str:
        """Run a build step; its output goes to build.log. Raises ImageBuildFailed/DiskFull."""
        tail: deque[str] = deque(maxlen=25)
        last_detail = 0.0
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", preexec_fn=_die_with_parent)
            except FileNotFoundError:
                raise ImageToolMissing(f"{argv[0]} not found") from None
            out = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    line = line.rstrip()
                    tail.append(line)
                    if not stream:
                        out.append(line)
                        continue
                    now = time.monotonic()
                    if line.startswith("I: "):
                        self.emit(self._current, _short(line[3:]))
                    elif line.startswith("E: "):
                        self.emit(self._current, _short(line))
                    elif line.startswith("Setting up ") and now - last_detail > 5:
                        last_detail = now
                        self.emit(self._current, line.split(" (")[0].lower())
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if rc != 0:
            text = "\n".join(tail)
            if "No space left on device" in text:
                raise DiskFull(f"disk full while running {what}; the partial build is removed. Free "
                               f"{MIN_FREE_BYTES / 2**30:.0f} GiB in {self.idir} or point $HALAB_CACHE "
                               "elsewhere")
            raise ImageBuildFailed(f"{what} failed (exit {rc}); last output:\n{text}")
        return "\n".join(out)

    # -- steps --

    def mmdebstrap(self, mirror_url: str) -> None:
        self.phase("mmdebstrap", f"debian {SUITE} {VARIANT}, {len(packages())} packages from {mirror_url}")
        overlay = self.write_overlay()
        hooks = [
            f'chroot "$1" systemctl disable --quiet {" ".join(DISABLED_SERVICES)}',
            f"sync-in {overlay} /",
            f'chroot "$1" systemctl mask --quiet {" ".join(MASKED_UNITS)}',
            # the kernel's postinst built an initrd with MODULES=most before our config was there
            'chroot "$1" update-initramfs -u -k all',
        ]
        argv = [
            # Own mount + PID namespace: if the build is killed, its mounts and processes go too.
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "mmdebstrap", "--verbose", f"--variant={VARIANT}", "--mode=root", "--format=directory",
            f"--architectures={ARCH}", f"--include={','.join(packages())}",
            *[f"--dpkgopt={o}" for o in (*DPKG_OPTIONS, *BUILD_DPKG_OPTIONS)],
            *[f"--customize-hook={h}" for h in hooks],
            SUITE, str(self.rootfs), mirror_url,
        ]
        self.run(argv, "mmdebstrap", stream=True)

    def write_overlay(self) -> Path:
        """Files copied into the rootfs inside mmdebstrap (before the initrd is rebuilt)."""
        overlay = self.tmp / "overlay"
        files = {
            "etc/initramfs-tools/conf.d/halab.conf": INITRAMFS_CONF,
            "etc/initramfs-tools/modules": "# written by halab's image recipe\n"
                                           + "".join(f"{m}\n" for m in INITRD_MODULES),
            "etc/modprobe.d/halab-tcg.conf": MODPROBE_CONF,
            "etc/cloud/cloud.cfg.d/90-halab.cfg": CLOUD_CFG,
            "etc/systemd/system/ssh.service.d/halab.conf": SSH_DROPIN,
        }
        for rel, text in files.items():
            path = overlay / rel
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o644)
        for d in [overlay, *(p for p in overlay.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
        return overlay

    def customize(self) -> None:
        """Files the recipe sets, written after mmdebstrap finished."""
        self.phase("customize", "fstab, hosts, cloud-init settings; per-node host keys removed")
        etc = self.rootfs / "etc"
        # every node gets its own host keys from halab (cloud-init ssh_keys) or from cloud-init
        for key in (etc / "ssh").glob("ssh_host_*"):
            key.unlink()
        (etc / "fstab").write_text(FSTAB)
        (etc / "hosts").write_text(HOSTS)
        (etc / "hostname").write_text("debian\n")
        resolv = etc / "resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text("")  # never the build host's resolver
        (etc / "cloud" / "cloud.cfg.d" / "90-halab.cfg").write_text(CLOUD_CFG)
        system = etc / "systemd" / "system"
        unmasked = [u for u in MASKED_UNITS
                    if not (system / u).is_symlink() or os.readlink(system / u) != "/dev/null"]
        if unmasked:
            raise ImageBuildFailed(f"units not masked in the image: {', '.join(unmasked)}")
        enabled = [s for s in DISABLED_SERVICES
                   if any(system.glob(f"*.wants/{s if '.' in s else s + '.service'}"))]
        if enabled:
            raise ImageBuildFailed(f"services still enabled in the image: {', '.join(enabled)}")

    def verify(self) -> dict[str, Any]:
        self.phase("verify", "kernel, initrd modules, package list")
        boot = self.rootfs / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise ImageBuildFailed(f"expected one kernel in {boot}, found {[k.name for k in kernels]}")
        kver = kernels[0].name.removeprefix("vmlinuz-")
        initrd = boot / f"initrd.img-{kver}"
        if not initrd.is_file():
            raise ImageBuildFailed(f"no initrd for kernel {kver} in {boot}")
        listing = self.run(["chroot", str(self.rootfs), "lsinitramfs", f"/boot/{initrd.name}"], "lsinitramfs")
        names = {Path(line).name for line in listing.splitlines()}
        missing = [m for m in REQUIRED_INITRD_MODULES if m not in names]
        if missing:
            raise ImageBuildFailed(f"initrd {initrd.name} lacks {', '.join(missing)}: the guest could not "
                                   "find its root disk")
        modules = sorted(n for n in names if n.endswith(".ko"))
        if len(modules) > MAX_INITRD_MODULES:
            raise ImageBuildFailed(f"initrd {initrd.name} carries {len(modules)} modules (MODULES=list "
                                   f"should give at most {MAX_INITRD_MODULES}): the initrd config was "
                                   "not applied")
        query = self.run(["dpkg-query", f"--admindir={self.rootfs}/var/lib/dpkg", "-W",
                          "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"], "dpkg-query")
        pkgs = {}
        for line in query.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2].startswith("ii"):
                pkgs[parts[0]] = parts[1]
        absent = [p for p in packages() if p not in pkgs]
        if absent:
            raise ImageBuildFailed(f"packages missing from the rootfs: {', '.join(absent)}")
        self.out.mkdir()
        shutil.copy2(kernels[0], self.out / KERNEL_NAME)
        shutil.copy2(initrd, self.out / INITRD_NAME)
        return {"kernel_version": kver, "packages": pkgs,
                "initrd_virtio_modules": sorted(n for n in names if n.startswith("virtio")),
                "initrd_modules": modules}

    def mkfs(self) -> tuple[int, int]:
        self.phase("mkfs", "ext4 filesystem from the rootfs")
        used = int(self.run(["du", "-sx", "-B1", str(self.rootfs)], "du").split()[0])
        size = used + used // 10 + HEADROOM_BYTES
        size = (size + 2**20 - 1) // 2**20 * 2**20
        raw = self.tmp / "root.ext4"
        with open(raw, "wb") as fh:
            fh.truncate(size)
        self.run(["mkfs.ext4", "-q", "-F", "-L", "halab-root", "-m", "1", "-d", str(self.rootfs), str(raw)],
                 "mkfs.ext4")
        return used, size

    def qcow2(self) -> None:
        self.phase("qcow2", "converting to qcow2")
        raw = self.tmp / "root.ext4"
        self.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(self.out / DISK_NAME)], "qemu-img")
        raw.unlink()


def ensure_image(progress: Callable[[ImageEvent], None] | None = None, force: bool = False) -> BaseImage:
    """The base image for the current recipe: from the cache, or built now (minutes) if missing or
    ``force``. Progress events report phases and elapsed time."""
    rhash = recipe_hash()
    if not force:
        img = find_image(rhash)
        if img is not None:
            return img
    idir = images_dir()
    t0 = time.monotonic()

    def waiting() -> None:
        if progress:
            progress(ImageEvent("wait", time.monotonic() - t0,
                                "another process is building the image; waiting for it"))

    with _build_lock(idir, on_wait=waiting):
        if not force:  # another process may have finished it while we waited
            img = find_image(rhash)
            if img is not None:
                return img
        return _build_locked(progress, idir, rhash)


def _build_locked(progress: Callable[[ImageEvent], None] | None, idir: Path, rhash: str) -> BaseImage:
    b = _Build(progress, idir, rhash)
    b.phase("check", "host tools, free space, mirror")
    check_tools()
    clean_partial_builds(idir, notify=lambda p: b.emit("cleanup", f"removing unfinished build {p.name}"))
    check_free_space(idir)
    mirror_url = mirror()
    check_mirror(mirror_url)
    old: Path | None = None
    try:
        b.tmp.mkdir()
        b.mmdebstrap(mirror_url)
        b.customize()
        info = b.verify()
        rootfs_bytes, fs_bytes = b.mkfs()
        b.qcow2()
        b.phase("finish", "manifest, install into cache")
        b._close_phase(time.monotonic())
        manifest = {
            "recipe_hash": rhash,
            "recipe": recipe(),
            "mirror": mirror_url,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(b.elapsed(), 1),
            "phase_seconds": b.phases,
            "kernel_cmdline": KERNEL_CMDLINE,
            "kernel_version": info["kernel_version"],
            "initrd_virtio_modules": info["initrd_virtio_modules"],
            "initrd_modules": info["initrd_modules"],
            "sizes": {
                "rootfs_bytes": rootfs_bytes,
                "filesystem_bytes": fs_bytes,
                "disk_bytes": (b.out / DISK_NAME).stat().st_size,
                "kernel_bytes": (b.out / KERNEL_NAME).stat().st_size,
                "initrd_bytes": (b.out / INITRD_NAME).stat().st_size,
            },
            "packages": info["packages"],
        }
        write_atomic(b.out / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o644)
        shutil.copy2(b.log_path, b.out / LOG_NAME)
        _fsync_dir_files(b.out)
        final = idir / rhash
        if final.exists():  # --force: move the old one aside, put the new one in, drop the old
            old = idir / f"{OLD_PREFIX}{rhash}-{secrets.token_hex(3)}"
            final.rename(old)
        b.out.rename(final)  # the image appears complete or not at all
    except OSError as exc:
        _keep_failure_log(b)
        _remove_tree(b.tmp)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"disk full while building the image in {idir}: free space or point "
                           "$HALAB_CACHE elsewhere") from None
        raise ImageBuildFailed(f"image build failed: {exc}") from exc
    except BaseException:
        _keep_failure_log(b)
        _remove_tree(b.tmp)
        raise
    b.emit("finish", "removing the build's rootfs")
    try:
        for leftover in (old, b.tmp):
            if leftover is not None:
                _remove_tree(leftover)
    except (OSError, ImageError) as exc:  # the image is installed; the next build retries this
        b.emit("finish", f"could not remove {exc}; the next build removes it")
    with contextlib.suppress(FileNotFoundError):
        (idir / FAILED_LOG_NAME).unlink()
    img = _load(final)
    if img is None:  # pragma: no cover - we just wrote every file
        raise ImageBuildFailed(f"built image at {final} is incomplete")
    b.emit("done", f"image {rhash} ready ({img.size_bytes / 2**20:.0f} MiB)")
    return img


def _fsync_dir_files(path: Path) -> None:
    """Make the image durable before it becomes visible by rename (a crash must not leave a named
    image with truncated files)."""
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_failure_log(b: _Build) -> None:
    with contextlib.suppress(OSError):
        if b.log_path.exists():
            shutil.copy2(b.log_path, b.idir / FAILED_LOG_NAME)


def failure_log() -> Path | None:
    p = images_dir() / FAILED_LOG_NAME
    return p if p.exists() else None


__all__ = [
    "KERNEL_CMDLINE", "BaseImage", "DiskFull", "ImageBuildFailed", "ImageError", "ImageEvent",
    "ImageToolMissing", "MirrorUnreachable", "StockImage", "clean_partial_builds", "ensure_image",
    "find_image", "image_for", "list_images", "packages", "recipe", "recipe_hash", "stock_image",
]
