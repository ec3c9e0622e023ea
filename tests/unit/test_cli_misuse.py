"""74+ ways to get the command line wrong (issue 15): none ends in a traceback, each exits non-zero
with a message. Runs tests/support/cli_misuse.py once, in its own process, against temp state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "support" / "cli_misuse.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    w = tmp_path_factory.mktemp("misuse")
    env = {k: v for k, v in os.environ.items() if k != "HALAB_CONFIG"}
    env.update(HALAB_STATE=str(w / "state"), HALAB_CACHE=str(w / "cache"))
    out = subprocess.run([sys.executable, str(SCRIPT), str(w / "work")], capture_output=True, text=True,
                         env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_at_least_74_misuses_and_no_traceback(results):
    assert len(results) >= 74
    crashed = [(r["argv"], r["crash"][-800:]) for r in results if r["crash"] or "Traceback" in r["stderr"]]
    assert crashed == []


def test_each_misuse_fails_with_its_message(results):
    wrong = []
    for r in results:
        said = r["stderr"] + r["stdout"]
        if (r["rc"] == 0) != r["ok"] or (r["expect"] and r["expect"] not in said) or (
                not r["ok"] and not r["stderr"].strip()):
            wrong.append((r["argv"][:4], r["rc"], said[-300:]))
    assert wrong == []


def test_messages_are_short(results):
    """A 1 MB value or a 5000-character path is never echoed whole."""
    long = [(r["argv"][:3], len(line)) for r in results for line in r["stderr"].splitlines()
            if len(line) > 700]
    assert long == []
