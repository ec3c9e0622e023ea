"""Test helpers: halab's provider as one re-attachable process over libvirt's test:///default, and a
lab's tfvars pointing at small local files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from halab.lab.tfmirror import provider_dir

HERE = Path(__file__).resolve().parent


class DevProvider:
    """The provider in one process (see tf_devserver.py) plus a back door to its libvirt state."""

    def __init__(self, uri: str = "test:///default"):
        env = {**os.environ, "PYTHONPATH": str(provider_dir())}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "tf_devserver.py"), uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.reattach = self.proc.stdout.readline().strip()
        if not self.reattach:
            raise RuntimeError("the provider dev server did not start")

    @property
    def env(self) -> dict[str, str]:
        return {"TF_REATTACH_PROVIDERS": self.reattach}

    def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sample_tfvars(
    tmp: Path, lab: str = "tfunc", uri: str = "test:///default", running: bool = True
) -> dict[str, Any]:
    files = {}
    for name, data in (
        ("base.qcow2", b"QFI\xfb" + bytes(20) + (1 << 20).to_bytes(8, "big")),
        ("vmlinuz", b"kernel"),
        ("initrd.img", b"initrd"),
    ):
        path = tmp / name
        path.write_bytes(data)
        files[name] = str(path)

    def node(name: str, role: str, ip: str, mac: str) -> dict[str, Any]:
        return {
            "name": name,
            "role": role,
            "ip": ip,
            "mac": mac,
            "memory_mib": 256,
            "vcpus": 1,
            "user_data": "#cloud-config\n",
            "meta_data": f"instance-id: {lab}-{name}\n",
            "network_config": "version: 2\n",
            "running": running,
        }

    return {
        "lab": lab,
        "libvirt_uri": uri,
        "network": {
            "name": f"{lab}-net",
            "bridge": "hltfunc0",
            "cidr": "10.88.0.0/24",
            "mode": "nat",
            "gateway": "10.88.0.1",
        },
        "pool_path": str(tmp / "pool"),
        "base_image": files["base.qcow2"],
        "kernel": files["vmlinuz"],
        "initrd": files["initrd.img"],
        "accel": "qemu",
        "nodes": {
            "haproxy-1": node("haproxy-1", "haproxy", "10.88.0.11", "52:54:00:00:88:11"),
            "api-1": node("api-1", "api", "10.88.0.12", "52:54:00:00:88:12"),
        },
    }
