"""End-to-end fixtures: one real lab per test session, inside the sandbox's network namespace.

Booting seven VMs under TCG takes minutes, so the lab is built once and the tests run against it
in file order (roles → faults → drift/heal → down). Run with: tests/e2e/sandbox .venv/bin/pytest -m e2e
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "lab.py"


def _in_sandbox() -> bool:
    return os.environ.get("HALAB_SANDBOX") == "1"


class LabRunner:
    """Runs ./lab.py as a user would, with the lab's state in a temporary directory."""

    def __init__(self, state: Path, config: Path):
        self.state = state
        self.config = config
        self.env = {**os.environ, "HALAB_STATE": str(state), "HALAB_CONFIG": str(config)}

    def run(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, str(LAB_PY), *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        sys.stdout.write(f"\n$ lab.py {' '.join(args)}  (rc={proc.returncode})\n{proc.stdout}{proc.stderr}")
        if check and proc.returncode != 0:
            raise AssertionError(
                f"lab.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args).stdout)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not _in_sandbox():
        pytest.skip("NOT RUN: needs tests/e2e/sandbox (network namespace with a private libvirtd)")
    base = tmp_path_factory.mktemp("lab")
    config = base / "lab.yaml"
    config.write_text("name: e2e\nnetwork: {cidr: 10.77.0.0/24, mode: nat}\n")
    runner = LabRunner(base / "state", config)
    runner.run("up", "--json", str(base / "up.json"))
    runner.up_summary = json.loads((base / "up.json").read_text())
    print("UP PHASES", json.dumps(runner.up_summary["phases_s"]))
    yield runner
    runner.run("down", check=False)


@pytest.fixture
def from_ready(lab):
    """Each failover test starts from the same known-good cut (the `ready` checkpoint `up` took),
    in seconds, instead of from the previous test's aftermath: runs are repeatable and the tier
    boots the lab once."""
    res = lab.json("reset", "--json")
    print(f"RESET to ready: {res['seconds']}")
    assert res["healthy"], res["problems"]
    return res
