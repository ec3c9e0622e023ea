"""Crash recovery pieces that need no libvirt: the lab lock (re-entrant in one process, refused to
another), Terraform's state lock and state file after a kill, a terraform left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from halab.lab.terraform import (
    LOCK_INFO_FILE,
    PID_FILE,
    STATE_FILE,
    TerraformClient,
    release_stale_lock,
    repair_state,
    running_terraform,
    wait_for_running_terraform,
)
from halab.lock import LabBusy, LabLock

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from halab.lock import LabLock
with LabLock({d!r}, "t"):
    print("held", flush=True)
    time.sleep(30)
"""


def _holder(tmp_path: Path) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=root, d=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lab_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    """A scenario holds the lock and its reset: step takes it again: no deadlock, no refusal."""
    with LabLock(tmp_path, "t"), LabLock(tmp_path, "t"), LabLock(tmp_path, "t"):
        pass
    with LabLock(tmp_path, "t"):  # released after the outermost exit
        pass


def test_lab_lock_refuses_another_process_and_says_who(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LabBusy, match=rf"another lab.py run \(pid {proc.pid}\)"), LabLock(tmp_path, "t"):
            pass
    finally:
        proc.kill()
        proc.wait()
    with LabLock(tmp_path, "t"):  # a SIGKILLed holder's lock is gone with it
        pass


def test_faults_refuse_while_another_run_changes_the_lab(tmp_path: Path) -> None:
    from halab.chaos.faults import Faults
    from halab.lab.config import parse_config

    cfg = parse_config("name: t\nlibvirt_uri: test:///default\n", "lab.yaml", host_mem_mib=1 << 20)
    faults = Faults(cfg, state_dir=tmp_path)
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LabBusy, match="wait for it to finish"):
            faults.kill("api-1")
    finally:
        proc.kill()
        proc.wait()


def test_stale_terraform_lock_released_live_one_kept(tmp_path: Path) -> None:

    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 4, "serial": 3, "resources": []}))
    info = {"ID": "abc", "Operation": "OperationTypeApply", "Who": "root@h", "Created": "now"}
    (tmp_path / LOCK_INFO_FILE).write_text(json.dumps(info))
    # A live holder: another process holds the fcntl lock Terraform takes on the state file.
    code = (f"import fcntl,os,time; fd=os.open({str(tmp_path / STATE_FILE)!r}, os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert release_stale_lock(tmp_path) is None
        assert (tmp_path / LOCK_INFO_FILE).exists()
    finally:
        proc.kill()
        proc.wait()
    msg = release_stale_lock(tmp_path)  # the holder died: its record is stale
    assert msg is not None and "no longer runs" in msg and "abc" in msg
    assert not (tmp_path / LOCK_INFO_FILE).exists()


def test_empty_state_without_backup_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("")
    repair = repair_state(tmp_path)
    assert repair is not None and repair.action == "lost" and "was empty" in repair.message
    assert not (tmp_path / STATE_FILE).exists()
    assert repair_state(tmp_path) is None  # nothing left to repair


def test_valid_state_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 4, "resources": []}))
    assert repair_state(tmp_path) is None


def test_python_terraform_never_parses_a_damaged_state(tmp_path: Path) -> None:
    """python-terraform's constructor used to json.load terraform.tfstate: JSONDecodeError."""
    (tmp_path / STATE_FILE).write_text("")
    TerraformClient(tmp_path)  # no exception


def test_a_terraform_left_running_is_waited_for_never_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"], cwd=tmp_path)
    (tmp_path / PID_FILE).write_text(f"{proc.pid}\n")
    assert running_terraform(tmp_path) == proc.pid
    waited: list[int] = []
    start = time.monotonic()
    wait_for_running_terraform(tmp_path, on_wait=waited.append)
    proc.wait()
    assert waited == [proc.pid] and time.monotonic() - start >= 0.5
    assert running_terraform(tmp_path) is None and not (tmp_path / PID_FILE).exists()


def test_a_recorded_pid_of_another_program_is_not_terraform(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but its cwd is elsewhere
    assert running_terraform(tmp_path) is None
