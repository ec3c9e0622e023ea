"""The base image boots under TCG by direct kernel boot with a NoCloud seed on a virtio disk, and
cloud-init runs: it applies the static network-config (matched by MAC) and a runcmd writes a marker
to the serial console. Runs a plain QEMU inside a network namespace this test creates (no libvirt
needed); the guest's only NIC is QEMU user networking with restrict=on, so nothing leaves."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from halab.lab import image

pytestmark = pytest.mark.e2e

MAC = "52:54:00:4a:11:0b"
ADDR = "10.77.0.11/24"
GATEWAY = "10.77.0.1"
BOOT_TIMEOUT_S = 420  # TCG on 2 cores: cloud-init is done in ~60-130 s; generous for loaded CI hosts

MARK_SCRIPT = """\
set -u
addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}')
states=""
for s in mariadb haproxy rabbitmq-server keepalived; do states="$states $s=$(systemctl is-enabled $s)"; done
echo "HALAB-MARK addr=$addr$states" > /dev/ttyS0
"""
USER_DATA = "#cloud-config\n" + yaml.safe_dump({
    "hostname": "imgtest",
    "write_files": [{"path": "/usr/local/sbin/halab-mark", "permissions": "0755", "content": MARK_SCRIPT}],
    "runcmd": [["/bin/sh", "/usr/local/sbin/halab-mark"]],
    "power_state": {"mode": "poweroff", "condition": True},
}, sort_keys=False)
META_DATA = "instance-id: iid-imgtest-1\nlocal-hostname: imgtest\n"
NETWORK_CONFIG = f"""\
version: 2
ethernets:
  eth0:
    match:
      macaddress: "{MAC}"
    set-name: eth0
    addresses: [{ADDR}]
    gateway4: {GATEWAY}
    nameservers:
      addresses: [{GATEWAY}]
"""


def write_seed_iso(path: Path, files: dict[str, str]) -> None:
    """A NoCloud seed: ISO9660 with volume label `cidata`, Joliet and Rock Ridge long names."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in files.items():
        data = text.encode()
        iso_name = re.sub(r"[^A-Z0-9_]", "", name.upper())[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), f"/{iso_name}", rr_name=name, joliet_path=f"/{name}")
    iso.write(str(path))
    iso.close()


def _need(cond: bool, why: str) -> None:
    if not cond:
        pytest.skip(why)


@pytest.fixture
def netns():
    """A network namespace for the guest: the sandbox's own when run under tests/e2e/sandbox, else
    one created here."""
    if os.environ.get("HALAB_SANDBOX") == "1":
        yield None
        return
    _need(os.geteuid() == 0, "needs root for a network namespace")
    _need(shutil.which("ip") is not None, "needs iproute2")
    name = f"halab-e2e-img-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_base_image_boots_and_cloud_init_runs(netns, tmp_path):
    _need(shutil.which("qemu-system-x86_64") is not None, "needs qemu-system-x86_64")
    img = image.ensure_image()  # a cache hit normally; builds (~2 min) when missing

    overlay = tmp_path / "node.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(img.disk),
                    str(overlay)], check=True)
    seed = tmp_path / "seed.iso"
    write_seed_iso(seed, {"user-data": USER_DATA, "meta-data": META_DATA, "network-config": NETWORK_CONFIG})
    console = tmp_path / "console.log"
    argv = [
        *(["ip", "netns", "exec", netns] if netns else []),
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1", "-no-reboot",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
        "-kernel", str(img.kernel), "-initrd", str(img.initrd), "-append", img.kernel_cmdline,
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-drive", f"file={seed},format=raw,if=virtio,readonly=on",
        "-netdev", "user,id=n0,restrict=on", "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=BOOT_TIMEOUT_S)  # the guest powers off after cloud-init's final stage
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    took = time.monotonic() - t0
    log = console.read_text(errors="replace") if console.exists() else ""
    qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    tail = "\n".join(log.splitlines()[-40:])
    assert "HALAB-MARK" in log, f"no runcmd marker after {took:.0f}s; qemu: {qemu_out}\nconsole tail:\n{tail}"
    mark = log[log.index("HALAB-MARK"):].splitlines()[0]
    assert f"addr={ADDR}" in mark, mark
    for svc in ("mariadb", "haproxy", "rabbitmq-server", "keepalived"):
        assert f"{svc}=disabled" in mark, mark
    assert re.search(r"Cloud-init v\. \S+ finished at", log), f"cloud-init final stage missing:\n{tail}"
    print(f"booted and cloud-init finished in {took:.0f}s: {mark}")
