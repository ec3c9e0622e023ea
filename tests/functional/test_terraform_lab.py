"""Real Terraform over halab's provider and root module, no VMs.

- The module itself: ``terraform fmt -check``, ``validate`` and ``terraform test`` (mock_provider),
  with the provider installed offline from halab's filesystem mirror.
- The whole cycle against libvirt's ``test:///default``: apply, a node destroyed and another
  undefined "outside Terraform", plan shows the drift, apply heals, destroy leaves nothing. The test
  driver keeps state only inside one process, so the provider runs as one long-lived process that
  Terraform re-attaches to (tf_devserver.py); init still goes through the mirror.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tfdev import DevProvider, sample_tfvars

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from halab.terraform import Drift, ResourceComplete, TerraformClient, prepare_workdir
from halab.tfmirror import ensure_mirror, module_dir

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


@pytest.fixture
def mirror(tmp_path: Path):
    return ensure_mirror(tmp_path / "tfcache")


def tf(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        ["terraform", *argv], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_module_is_formatted_valid_and_its_tests_pass(tmp_path: Path, mirror) -> None:
    fmt = tf(["fmt", "-check", "-recursive", "-no-color"], module_dir(), mirror.env)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    wd = prepare_workdir(tmp_path / "wd")
    shutil.copytree(module_dir() / "tests", wd / "tests")
    init = tf(["init", "-input=false", "-no-color"], wd, mirror.env)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "halab.local/halab/libvirt v0.1.0" in init.stdout
    val = tf(["validate", "-no-color"], wd, mirror.env)
    assert val.returncode == 0, val.stdout + val.stderr
    test = tf(["test", "-no-color"], wd, mirror.env)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "4 passed, 0 failed" in test.stdout


@pytest.fixture
def dev():
    d = DevProvider()
    yield d
    d.close()


def test_apply_drift_heal_destroy_against_the_test_driver(tmp_path: Path, mirror, dev: DevProvider) -> None:
    wd = prepare_workdir(tmp_path / "wd", sample_tfvars(tmp_path, lab="tfcycle"))
    client = TerraformClient(wd, mirror=mirror)
    client.init()  # through the mirror (no reattach yet)
    client.extra_env.update(dev.env)

    seen = []
    res = client.apply(on_event=seen.append)
    done = {e.address for e in seen if isinstance(e, ResourceComplete)}
    assert 'module.node["api-1"].libvirt_domain.node' in done and len(done) == 11
    assert res.summary is not None and res.summary.add == 11
    inventory = client.outputs()["inventory"]
    assert inventory["api-1"] == {
        "name": "api-1",
        "role": "api",
        "ip": "10.88.0.12",
        "mac": "52:54:00:00:88:12",
        "domain": "tfcycle-api-1",
    }
    assert not client.plan().has_changes  # re-running changes nothing

    dev.command(op="destroy", domain="tfcycle-api-1")  # virsh destroy
    dev.command(op="undefine", domain="tfcycle-haproxy-1")  # virsh undefine
    drift_events = []
    plan = client.plan(on_event=drift_events.append)
    assert {(c.address, c.action) for c in plan.drift} == {
        ('module.node["api-1"].libvirt_domain.node', "update"),
        ('module.node["haproxy-1"].libvirt_domain.node', "delete"),
    }
    assert any(isinstance(e, Drift) for e in drift_events)
    assert {(c.address, c.action) for c in plan.changes} == {
        ('module.node["api-1"].libvirt_domain.node', "update"),
        ('module.node["haproxy-1"].libvirt_domain.node', "create"),
    }

    heal = client.apply()
    assert heal.summary.add == 1 and heal.summary.change == 1
    assert dev.command(op="state", domain="tfcycle-api-1")["active"] is True
    assert not client.plan().has_changes

    client.destroy()
    left = dev.command(op="list")
    assert not [n for kind in left.values() for n in kind if n.startswith("tfcycle")]
    assert client.state_addresses() == []
    client.destroy()  # idempotent
