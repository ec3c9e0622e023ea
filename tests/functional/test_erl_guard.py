"""cloud-init/mq/erl-guard.sh, the stand-in for erl on mq nodes, run by a real /bin/sh with its two
paths (epmd and the diverted real erl) pointed at stand-ins that record how they were called."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parents[2] / "cloud-init" / "mq" / "erl-guard.sh"
EPMD_STARTER = ["-boot", "no_dot_erlang", "-sname", "epmd-starter-123456", "-noinput", "-s", "erlang", "halt"]


@pytest.fixture
def guard(tmp_path):
    """The guard installed as tmp/bin/erl, with a fake epmd (exit code in tmp/epmd-rc) and a fake
    real erl that writes its $0 and arguments, one per line, to tmp/real-erl.log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "epmd-rc").write_text("0")
    epmd = bindir / "epmd"
    epmd.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/epmd.log\nexit "$(cat {tmp_path}/epmd-rc)"\n')
    real = bindir / "erl.distrib"
    real.write_text(f'printf "%s\\n" "$0" "$@" > {tmp_path}/real-erl.log\nexit 7\n')  # sourced, not run
    text = GUARD.read_text()
    assert "/usr/bin/epmd" in text and "/usr/lib/erlang/bin/erl.distrib" in text
    erl = bindir / "erl"
    erl.write_text(text.replace("/usr/bin/epmd", str(epmd))
                   .replace("/usr/lib/erlang/bin/erl.distrib", str(real)))
    for f in (epmd, erl):
        f.chmod(0o755)
    return tmp_path


def run(guard: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(guard / "bin" / "erl"), *args], capture_output=True, text=True, timeout=10)


def real_erl_calls(guard: Path) -> list[str] | None:
    log = guard / "real-erl.log"
    return log.read_text().splitlines() if log.exists() else None


def test_an_epmd_starter_vm_is_skipped_while_epmd_answers(guard):
    res = run(guard, *EPMD_STARTER)
    assert res.returncode == 0
    assert (guard / "epmd.log").read_text() == "-names\n"
    assert real_erl_calls(guard) is None  # no Erlang VM started


def test_an_epmd_starter_vm_still_starts_epmd_when_epmd_is_down(guard):
    (guard / "epmd-rc").write_text("1")
    res = run(guard, *EPMD_STARTER)
    assert res.returncode == 7  # the real erl's exit code
    assert real_erl_calls(guard) == [str(guard / "bin" / "erl"), *EPMD_STARTER]


def test_every_other_erl_runs_the_real_script_with_its_own_name_and_arguments(guard):
    """$0 must stay .../erl: the real script finds its root directory and PROGNAME from it."""
    args = ["-sname", "rabbit", "-eval", 'io:format("a b")', "", "-s", "epmd-starter-like"]
    res = run(guard, *args)
    assert res.returncode == 7
    assert real_erl_calls(guard) == [str(guard / "bin" / "erl"), *args]
    assert not (guard / "epmd.log").exists()  # epmd is asked only for an epmd-starter VM
