"""Long commands refuse an output file they could not write before they start, not after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HALAB_CONFIG"}
    env["HALAB_STATE"] = str(cwd / "state")  # a run that started would create its lab's state here
    return subprocess.run([sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=60, check=False)


@pytest.mark.parametrize("command", [["bench"], ["measure", "--fault", "kill", "--node", "api-2"]])
@pytest.mark.parametrize("option", ["--json", "--timeline"])
def test_unwritable_output_is_refused_before_anything_runs(tmp_path, command, option):
    missing = tmp_path / "no-such-dir" / "out.json"
    out = lab(*command, option, str(missing), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"error: {option} {missing}: directory {missing.parent} does not exist\n"
    assert "bench:" not in out.stderr and "measure:" not in out.stdout  # nothing started
    assert not (tmp_path / "state").exists()


def test_a_directory_is_not_an_output_file(tmp_path):
    out = lab("bench", "--json", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == f"error: --json {tmp_path}: is a directory; give a file name\n"
