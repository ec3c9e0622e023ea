"""Last in the e2e session: `down` removes every object the lab owns, and is idempotent."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_10_lab import _cfg, _virsh

pytestmark = pytest.mark.e2e


def test_down_leaves_nothing_behind(lab):
    cfg = _cfg(lab)
    start = time.monotonic()
    lab.run("down")
    print(f"down took {time.monotonic() - start:.1f}s")
    assert "e2e-" not in _virsh("list", "--all", "--name")
    assert "e2e-" not in _virsh("net-list", "--all", "--name")
    assert "e2e-" not in _virsh("pool-list", "--all", "--name")
    from halab.paths import state_root

    assert not (state_root() / cfg.name).exists()
    lab.run("down")  # idempotent
