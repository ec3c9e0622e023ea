"""The Terraform of a lab over several hosts, and the single-host lab's held byte for byte.

- A lab with no `hosts:` writes exactly the working directory it wrote before multi-host labs
  existed (tests/fixtures/terraform/single-host-workdir.json: path -> sha256, recorded from main).
- A lab over two hosts gets one provider alias and one host module per host; real Terraform
  (offline, halab's provider from the mirror) initialises and validates it, and a mocked plan puts
  each node's domain, disk and seed under its host and uploads the base image into every host's pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from halab.lab.cloudinit import NodeSeed
from halab.lab.config import parse_config
from halab.lab.lifecycle import node_addresses
from halab.lab.terraform import lab_tfvars, node_module_address, prepare_workdir
from halab.lab.tfmirror import ensure_mirror

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "terraform" / "single-host-workdir.json"
TWO = """\
name: mh
hosts:
  rack1: {uri: "test:///default", underlay: 10.99.0.1}
  rack2: {uri: "qemu+ssh://root@rack2/system", underlay: 10.99.0.2}
"""


def seeds_of(cfg, lab: str):
    return {n.name: NodeSeed(node=n.name, instance_id=f"{lab}-{n.name}",
                             user_data=f"#cloud-config\n# {n.name}\n",
                             meta_data=f"instance-id: {lab}-{n.name}\n",
                             network_config="version: 2\n")
            for n in cfg.nodes()}


def tfvars_of(cfg, lab: str):
    return lab_tfvars(cfg, base_image="/cache/disk.qcow2", kernel="/cache/vmlinuz",
                      initrd="/cache/initrd.img", accel="qemu", seeds=seeds_of(cfg, lab),
                      cmdline="root=/dev/vda rw", stopped=("mq-1",))


def test_a_lab_on_one_host_writes_the_same_workdir_byte_for_byte(tmp_path):
    cfg = parse_config("name: golden\n", "lab.yaml", host_mem_mib=1 << 20)
    wd = prepare_workdir(tmp_path / "wd", tfvars_of(cfg, "golden"), hosts=[h.name for h in cfg.hosts])
    got = {str(p.relative_to(wd)): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(wd.rglob("*")) if p.is_file()}
    assert got == json.loads(FIXTURE.read_text())
    assert node_addresses("api-2", cfg)[0] == 'module.node["api-2"].libvirt_domain.node'


def tf(argv, cwd, env):
    return subprocess.run(["terraform", *argv], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=180)


def test_two_hosts_get_an_alias_and_a_host_module_each():
    cfg = parse_config(TWO, "lab.yaml", host_mem_mib=1 << 20)
    tfvars = tfvars_of(cfg, "mh")
    assert "libvirt_uri" not in tfvars and tfvars["hosts"]["rack2"] == {
        "uri": "qemu+ssh://root@rack2/system", "gateway": False, "pool_path": "/var/lib/libvirt/images/mh"}
    assert tfvars["hosts"]["rack1"]["gateway"] is True
    assert tfvars["nodes"]["api-2"]["host"] == "rack2"
    assert node_module_address(cfg, "api-2") == 'module.host_rack2.module.node["api-2"]'


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_terraform_validates_and_plans_the_generated_root(tmp_path):
    cfg = parse_config(TWO, "lab.yaml", host_mem_mib=1 << 20)
    wd = prepare_workdir(tmp_path / "wd", tfvars_of(cfg, "mh"), hosts=[h.name for h in cfg.hosts])
    main = (wd / "main.tf").read_text()
    assert main.count('provider "libvirt"') == 2 and 'alias = "rack2"' in main
    assert "qemu+ssh" not in main  # URIs come from the variables, never written into HCL
    mirror = ensure_mirror(tmp_path / "tfcache")
    init = tf(["init", "-input=false", "-no-color"], wd, mirror.env)
    assert init.returncode == 0, init.stdout + init.stderr
    val = tf(["validate", "-no-color"], wd, mirror.env)
    assert val.returncode == 0, val.stdout + val.stderr
    (wd / "tests").mkdir()
    (wd / "tests" / "mh.tftest.hcl").write_text("""
mock_provider "libvirt" {
  alias = "rack1"
  mock_resource "libvirt_volume" {
    defaults = { id = "/pool/mock-volume", path = "/pool/mock-volume" }
  }
}
mock_provider "libvirt" {
  alias = "rack2"
  mock_resource "libvirt_volume" {
    defaults = { id = "/pool/mock-volume", path = "/pool/mock-volume" }
  }
}
run "placed_per_host" {
  command = plan
  assert {
    condition     = length(module.host_rack1.inventory) == 5 && length(module.host_rack2.inventory) == 2
    error_message = "nodes not placed per host"
  }
  assert {
    condition     = module.host_rack2.inventory["api-2"].host == "rack2"
    error_message = "api-2 not on rack2"
  }
  assert {
    condition     = length(module.host_rack1.network.addresses) == 1
    error_message = "the first host's network has the gateway"
  }
  assert {
    condition     = length(module.host_rack2.network.addresses) == 0
    error_message = "only the first host's network has the gateway"
  }
  assert {
    condition     = module.host_rack2.network.mode == "isolated"
    error_message = "the second host's network is a plain bridge"
  }
  assert {
    condition     = module.host_rack2.base_image == "/cache/disk.qcow2"
    error_message = "the second host's network is a plain bridge and its pool gets the base image"
  }
}
""")
    test = tf(["test", "-no-color"], wd, mirror.env)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "1 passed, 0 failed" in test.stdout
