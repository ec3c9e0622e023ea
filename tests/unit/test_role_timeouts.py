"""Role setup timeouts scale with the accelerator: KVM seconds in the scripts, times 15 under TCG."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from halab.lab.cloudinit import TIMEOUT_SCALE, node_variables, render_template, templates_dir
from halab.lab.config import parse_config
from halab.lab.secrets import LabSecrets


def _lib(accel: str, tmp_path: Path) -> Path:
    cfg = parse_config(f"name: t\naccel: {accel}\n", "lab.yaml", host_mem_mib=1 << 20)
    variables = node_variables(cfg, cfg.nodes()[0], LabSecrets.generate())
    text = render_template((templates_dir() / "common/lib.sh").read_text(), variables)
    out = tmp_path / f"lib-{accel}.sh"
    out.write_text(text)
    return out


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_lib_carries_the_accelerators_factor(accel: str, tmp_path: Path) -> None:
    assert f"HALAB_TIMEOUT_SCALE={TIMEOUT_SCALE[accel]}\n" in _lib(accel, tmp_path).read_text()
    assert TIMEOUT_SCALE["tcg"] >= 10 * TIMEOUT_SCALE["kvm"]


def test_wait_for_gives_up_after_the_scaled_limit(tmp_path: Path) -> None:
    lib = _lib("kvm", tmp_path)
    start = time.monotonic()
    res = subprocess.run(["bash", "-c", f". {lib}; HALAB_TIMEOUT_SCALE=2; wait_for 1 false"],
                         capture_output=True, text=True, timeout=30)
    took = time.monotonic() - start
    assert res.returncode == 1 and "gave up after 2s" in res.stderr
    assert 1.5 <= took < 10
