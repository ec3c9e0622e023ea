"""Last in the e2e session: `down` removes every object the lab owns — even after a node was removed
by hand outside halab (issue 15: `down` then failed on that node's console log) — and is idempotent."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_10_lab import _cfg, _virsh

pytestmark = pytest.mark.e2e

REMOVED_BY_HAND = "api-4"


def _virsh_any(*args: str) -> subprocess.CompletedProcess:
    """virsh without check: a domain may already be shut off (the lab stopped by an earlier test)."""
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], text=True, capture_output=True,
                          timeout=120)


def _lab_volumes(prefix: str) -> list[str]:
    """Volumes named after the lab in any pool libvirt still has."""
    out = []
    for pool in _virsh("pool-list", "--all", "--name").split():
        _virsh_any("pool-refresh", pool)
        rows = _virsh_any("vol-list", pool).stdout.splitlines()[2:]  # under a two-line header
        names = [row.split()[0] for row in rows if row.strip()]
        out += [f"{pool}/{name}" for name in names if name.startswith(prefix)]
    return out


def test_down_leaves_nothing_behind_after_a_node_removed_by_hand(lab):
    cfg = _cfg(lab)
    from halab.lab.terraform import VARS_FILE
    from halab.paths import state_root

    state_dir = state_root() / cfg.name
    tfvars = json.loads((state_dir / "terraform" / VARS_FILE).read_text())
    pool_dir = Path(tfvars["pool_path"])
    assert pool_dir.is_dir(), f"the lab's pool directory {pool_dir} should exist while the lab is up"
    prefix = f"{cfg.name}-"
    dom = cfg.domain_name(REMOVED_BY_HAND)
    assert dom in _virsh("list", "--all", "--name").split()

    # Outside halab, as a user would: stop the domain hard and forget its definition. Its console
    # log, disk and seed stay in the pool; Terraform's state still lists the domain.
    _virsh_any("destroy", dom)  # fails harmlessly when the node is already shut off
    undefine = _virsh_any("undefine", dom, "--managed-save")
    assert undefine.returncode == 0, undefine.stderr
    assert dom not in _virsh("list", "--all", "--name").split()

    start = time.monotonic()
    res = lab.run("down")
    print(f"down took {time.monotonic() - start:.1f}s")
    assert "Traceback" not in res.stdout + res.stderr
    assert [d for d in _virsh("list", "--all", "--name").split() if d.startswith(prefix)] == []
    assert [n for n in _virsh("net-list", "--all", "--name").split() if n.startswith(prefix)] == []
    assert [p for p in _virsh("pool-list", "--all", "--name").split() if p.startswith(prefix)] == []
    assert _lab_volumes(prefix) == []
    assert not pool_dir.exists(), f"{pool_dir} is left: {sorted(p.name for p in pool_dir.iterdir())}"
    assert not state_dir.exists()

    again = lab.run("down")  # idempotent
    assert "nothing to do" in again.stdout + again.stderr
