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

from halab.lab.terraform import Drift, ResourceComplete, TerraformClient, prepare_workdir
from halab.lab.tfmirror import ensure_mirror, module_dir

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


def _ids(client: TerraformClient) -> list[tuple[str, str]]:
    """(address, import id) of every resource in the state, as halab's rebuild derives them."""
    state = client.show()
    out = []

    def walk(module: dict) -> None:
        for r in module.get("resources", []):
            v = r["values"]
            ident = v["id"] if r["type"] in ("libvirt_domain",) else (
                f"{v['pool']}/{v['name']}" if r["type"] in ("libvirt_volume", "libvirt_cloudinit_disk")
                else v["name"])
            out.append((r["address"], ident))
        for child in module.get("child_modules", []):
            walk(child)

    walk((state.get("values") or {}).get("root_module") or {})
    return out


def test_empty_state_is_rebuilt_by_import_and_converges(tmp_path: Path, mirror, dev: DevProvider) -> None:
    """A run killed while Terraform wrote its state leaves terraform.tfstate empty: with no backup,
    halab moves it aside and imports the lab's objects; the next plan then says "no changes"."""
    from halab.lab.terraform import BACKUP_FILE, STATE_FILE, clear_imports, repair_state, write_imports

    wd = prepare_workdir(tmp_path / "wd", sample_tfvars(tmp_path, lab="tfcrash"))
    client = TerraformClient(wd, mirror=mirror)
    client.init()
    client.extra_env.update(dev.env)
    client.apply()
    targets = _ids(client)
    assert len(targets) == 11

    (wd / STATE_FILE).write_text("")  # what a SIGKILL during a state write leaves
    (wd / BACKUP_FILE).unlink(missing_ok=True)
    assert repair_state(wd).action == "lost"
    assert (wd / (STATE_FILE + ".damaged")).exists()
    assert write_imports(wd, targets) == 11
    # Imported volumes do not record their upload source, so Terraform replaces them: the rebuilt
    # lab converges, with fresh node disks.
    res = client.apply()
    clear_imports(wd)
    assert res.summary is not None and "11 imported" in res.summary.message
    assert sorted(client.state_addresses()) == sorted(a for a, _ in targets)
    assert not client.plan().has_changes
    client.destroy()
    left = dev.command(op="list")
    assert not [n for kind in left.values() for n in kind if n.startswith("tfcrash")]


def test_damaged_state_restored_from_terraforms_backup(tmp_path: Path, mirror, dev: DevProvider) -> None:
    from halab.lab.terraform import BACKUP_FILE, STATE_FILE, repair_state

    wd = prepare_workdir(tmp_path / "wd", sample_tfvars(tmp_path, lab="tfbackup"))
    client = TerraformClient(wd, mirror=mirror)
    client.init()
    client.extra_env.update(dev.env)
    client.apply()
    client.apply()  # a second write: Terraform's backup now holds the full state too
    assert (wd / BACKUP_FILE).exists()
    (wd / STATE_FILE).write_text('{"version": 4, "resources": [')  # torn mid-write
    repair = repair_state(wd)
    assert repair is not None and repair.action == "backup"
    assert "restored Terraform's backup" in repair.message
    assert not client.plan().has_changes
    client.destroy()


def test_rebuild_replaces_one_node_and_keeps_the_rest(tmp_path: Path, mirror, dev: DevProvider) -> None:
    """`./lab.py rebuild api-1` is an apply with -replace for the node's domain, disk and seed."""
    from halab.lab.lifecycle import node_addresses

    wd = prepare_workdir(tmp_path / "wd", sample_tfvars(tmp_path, lab="tfrebuild"))
    client = TerraformClient(wd, mirror=mirror)
    client.init()
    client.extra_env.update(dev.env)
    client.apply()
    before = dict(_ids(client))
    seen = []
    res = client.apply(on_event=seen.append, replace=node_addresses("api-1"))
    assert res.summary is not None and (res.summary.add, res.summary.remove) == (3, 3)
    after = dict(_ids(client))
    changed = {a for a in before if before[a] != after[a]}
    assert changed <= set(node_addresses("api-1"))
    assert before['module.node["haproxy-1"].libvirt_domain.node'] == after[
        'module.node["haproxy-1"].libvirt_domain.node']
    assert not client.plan().has_changes
    client.destroy()
