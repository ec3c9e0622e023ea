"""`./lab.py config show|check` as a user runs them: real process, real exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "fixtures" / "bad-configs"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_config import FIXTURE_ERRORS  # noqa: E402


def lab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HALAB_CONFIG"}
    return subprocess.run([sys.executable, str(ROOT / "lab.py"), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=60, check=False)


def test_config_show_prints_the_seven_node_default(tmp_path):
    out = lab("config", "show", cwd=tmp_path)  # no lab.yaml here: the built-in default
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# source: <built-in default>\n")
    data = yaml.safe_load(out.stdout)
    assert [n["name"] for n in data["nodes"]] == [
        "haproxy-1", "api-1", "api-2", "api-3", "api-4", "db-1", "mq-1",
    ]
    assert data["nodes"][0]["domain"] == "halab-haproxy-1"
    assert data["vip"] == "10.77.0.11"
    assert {r: s["count"] for r, s in data["roles"].items()} == {"haproxy": 1, "api": 4, "db": 1, "mq": 1}


def test_config_check_ok(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: good\nprofile: ha\n")
    out = lab("config", "check", str(f))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{f}: ok (12 nodes, profile ha)\n"


@pytest.mark.parametrize("fixture", sorted(FIXTURE_ERRORS))
def test_config_check_fixture_exits_2_with_the_message(fixture):
    rel = f"tests/fixtures/bad-configs/{fixture}"
    out = lab("config", "check", rel)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    first, summary = out.stderr.splitlines()
    assert summary == "1 problem found"
    assert first.startswith(f"{rel}:")
    expected = FIXTURE_ERRORS[fixture]
    rest = first[len(rel) + 1:]
    assert rest == expected if isinstance(expected, str) else expected.fullmatch(rest), first


def test_config_check_reports_all_problems(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("roles:\n  db: {count: 2}\n  mq: {count: 4}\n")
    out = lab("config", "check", str(f))
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == "2 problems found"


def test_global_config_option_goes_through_the_same_errors():
    out = lab("-c", "tests/fixtures/bad-configs/count-zero.yaml", "config", "show")
    assert out.returncode == 2
    assert out.stderr == ("error: tests/fixtures/bad-configs/count-zero.yaml:12: roles.api.count: "
                          "must be >= 1 (got 0)\n")


def test_missing_file_is_exit_2():
    out = lab("config", "check", "no/such/lab.yaml")
    assert out.returncode == 2
    assert "no/such/lab.yaml: no such file" in out.stderr
