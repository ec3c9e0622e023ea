"""Real Terraform over two real libvirtds, no VM started (every node `running = false`): inside
tests/multihost/sandbox2,

    tests/multihost/sandbox2 .venv/bin/pytest -m multihost tests/multihost/test_apply_two_hosts.py

apply places each node's domain, disk and seed on its host and uploads the base image into both
pools (host 2 over qemu+tcp); the tunnel comes up on both bridges with a flood entry to the other
host; plan then shows no change and no drift; down leaves no domain, network, pool or tunnel on
either host."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = [pytest.mark.multihost,
              pytest.mark.skipif(not os.environ.get("HALAB_MH_HOST2"),
                                 reason="runs only inside tests/multihost/sandbox2 (two libvirtd hosts)")]


def names(uri: str, *cmd: str) -> list[str]:
    out = subprocess.run(["virsh", "-c", uri, *cmd, "--name"], capture_output=True, text=True, timeout=60)
    return sorted(w for w in out.stdout.split() if w.startswith("mhdry"))


def test_apply_plan_down_over_two_libvirtds(tmp_path):
    from halab.lab import lifecycle, tunnel
    from halab.lab.config import load_config

    host2 = os.environ["HALAB_MH_HOST2"]
    uri2 = f"qemu+tcp://{host2}/system"
    lab = tmp_path / "lab.yaml"
    lab.write_text(f"""\
name: mhdry
accel: tcg
hosts:
  rack1: {{uri: "qemu:///system", underlay: 10.231.0.1}}
  rack2:
    uri: {uri2}
    underlay: {host2}
    ssh: {{target: root@{host2}, keyfile: {os.environ['HALAB_MH_KEY']},
          known_hosts: {os.environ['HALAB_MH_KNOWN_HOSTS']}}}
""")
    cfg = load_config(lab)
    clock = lifecycle._Clock(None)
    try:
        lifecycle.prepare(cfg, clock, stopped=tuple(n.name for n in cfg.nodes()))
        tf = lifecycle._terraform_client(cfg)
        tf.init()
        res = tf.apply()
        assert res.summary is not None and res.summary.add == 31
        tunnel.ensure(cfg)
        assert names("qemu:///system", "list", "--all") == [
            "mhdry-api-1", "mhdry-api-3", "mhdry-db-1", "mhdry-haproxy-1", "mhdry-mq-1"]
        assert names(uri2, "list", "--all") == ["mhdry-api-2", "mhdry-api-4"]
        vols = subprocess.run(["virsh", "-c", uri2, "vol-list", "mhdry-pool"], capture_output=True,
                              text=True).stdout
        assert "mhdry-base.qcow2" in vols and "mhdry-vmlinuz" in vols  # uploaded by the provider
        assert [(t.host, t.up, t.peers) for t in tunnel.state(cfg)] == [
            ("rack1", True, (host2,)), ("rack2", True, ("10.231.0.1",))]
        plan = lifecycle.plan(cfg)
        assert plan.changes == [] and plan.drift == []
    finally:
        lifecycle.down(cfg)
    for uri in ("qemu:///system", uri2):
        assert names(uri, "list", "--all") == names(uri, "net-list", "--all") == names(
            uri, "pool-list", "--all") == []
    assert [t.present for t in tunnel.state(cfg)] == [False, False]
