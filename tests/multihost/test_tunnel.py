"""The VXLAN tunnel on real kernels: two network namespaces as two hosts, a veth pair as the
underlay, a bridge in each standing in for the lab network's. halab's tunnel code runs inside each
namespace as that host's own side; then a frame crosses from one bridge to the other, a host cut
stops it, the undo brings it back and removal leaves no device. No packet leaves the namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.multihost,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                 reason="needs root and iproute2 (network namespaces)")]

ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def lab_yaml(local: str) -> str:
    """The same two hosts, seen from ``local`` (that side's own commands run there, not over ssh)."""
    other = "rack2" if local == "rack1" else "rack1"
    addr = {"rack1": "10.231.0.1", "rack2": "10.231.0.2"}
    return textwrap.dedent(f"""\
        name: tuntest
        hosts:
          {local}: {{uri: "qemu:///system", underlay: {addr[local]}}}
          {other}: {{uri: "qemu+ssh://root@{other}/system", underlay: {addr[other]}}}
        """)


def in_ns(ns: str, local: str, code: str, tmp: Path) -> subprocess.CompletedProcess:
    lab = tmp / f"{local}.yaml"
    lab.write_text(lab_yaml(local))
    prog = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            + "from halab.lab.config import load_config\nfrom halab.lab import tunnel\n"
            + f"cfg = load_config({str(lab)!r})\n" + code)
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", prog], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    ns = (f"hlmh1-{tag}", f"hlmh2-{tag}")
    for n in ns:
        sh("ip", "netns", "add", n)
    try:
        sh("ip", "link", "add", f"hv1{tag}", "netns", ns[0], "type", "veth", "peer", "name", f"hv2{tag}",
           "netns", ns[1])
        for i, n in enumerate(ns, 1):
            sh("ip", "-n", n, "link", "set", "lo", "up")
            sh("ip", "-n", n, "addr", "add", f"10.231.0.{i}/24", "dev", f"hv{i}{tag}")
            sh("ip", "-n", n, "link", "set", f"hv{i}{tag}", "up")
        yield ns
    finally:
        for n in ns:
            sh("ip", "netns", "del", n, check=False)


def test_frames_cross_the_tunnel_cut_and_come_back(two_hosts, tmp_path):
    from halab.lab.config import parse_config

    cfg = parse_config(lab_yaml("rack1"), "lab.yaml", host_mem_mib=1 << 20)
    br, vx = cfg.bridge_name, cfg.tunnel_name
    for i, n in enumerate(two_hosts, 1):  # what libvirt's network would be: a bridge with the lab
        sh("ip", "-n", n, "link", "add", br, "type", "bridge")
        sh("ip", "-n", n, "addr", "add", f"10.77.0.{i}/24", "dev", br)
        sh("ip", "-n", n, "link", "set", br, "up")
    for n, local in zip(two_hosts, ("rack1", "rack2"), strict=True):
        res = in_ns(n, local, f"print('\\n'.join(tunnel.ensure(cfg, only={local!r})))", tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"tunnel {vx} created on host {local}" in res.stdout
        again = in_ns(n, local, f"print(tunnel.ensure(cfg, only={local!r}))", tmp_path)
        assert again.stdout.strip() == "[]", again.stdout  # idempotent
        link = sh("ip", "-n", n, "-d", "link", "show", vx).stdout
        assert f"vxlan id {cfg.vni}" in link and f"master {br}" in link

    def ping() -> bool:
        """A TCP connect from host 1's bridge to host 2's: refused (a RST came back) means the frames
        crossed; a timeout means they did not. (The namespaces have no ping binary to rely on.)"""
        probe = ("import socket\ntry:\n    socket.create_connection(('10.77.0.2', 9), 2)\n"
                 "except ConnectionRefusedError:\n    raise SystemExit(0)\n"
                 "except OSError:\n    raise SystemExit(1)")
        res = sh("ip", "netns", "exec", two_hosts[0], sys.executable, "-c", probe, check=False)
        return res.returncode == 0

    assert ping(), "no frame crossed the tunnel"
    res = in_ns(two_hosts[1], "rack2", "tunnel.cut(cfg, 'rack2')", tmp_path)
    assert res.returncode == 0, res.stderr
    assert not ping(), "the cut host still answers"
    res = in_ns(two_hosts[1], "rack2", "tunnel.ensure(cfg, only='rack2')", tmp_path)
    assert res.returncode == 0, res.stderr
    assert ping(), "the undo did not bring the host back"
    for n, local in zip(two_hosts, ("rack1", "rack2"), strict=True):
        res = in_ns(n, local, f"print(tunnel.remove(cfg, only={local!r}))", tmp_path)
        assert res.returncode == 0, res.stderr
        assert sh("ip", "-n", n, "link", "show", vx, check=False).returncode != 0
