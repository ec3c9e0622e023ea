"""Issue 14 on the real default lab: `up` took the `ready` checkpoint; `reset` returns to it in
seconds (writes after it are gone, Terraform sees no change, guest clocks match the host); `stop`
and `start`; warm revive of a stateless node; the refusals leave the lab exactly as it was."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
import urllib.error
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_10_lab import _cfg, _http, _virsh

pytestmark = pytest.mark.e2e


def _states(lab) -> dict[str, str]:
    return {n["name"]: n["state"] for n in lab.json("status", "--json", "--no-ssh")["nodes"]}


def _checkpoints(lab) -> dict[str, dict]:
    return {c["name"]: c for c in lab.json("checkpoint", "list", "--json")}


def _clock_offsets(lab) -> dict[str, float]:
    """Each guest's clock minus the host's, read independently of halab's own stepping."""
    from halab.lab.lifecycle import lab_ssh

    cfg = _cfg(lab)
    ssh = lab_ssh(cfg)
    out = {}
    try:
        for n in cfg.nodes():
            ssh.run(n.ip, "true", timeout=30)  # connect first: the handshake is not the clock
            best = None
            for _ in range(3):
                t0 = time.time()
                res = ssh.run(n.ip, "date +%s.%N", timeout=30)
                t1 = time.time()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, float(res.stdout) - (t0 + t1) / 2)
            out[n.name] = best[1]
    finally:
        ssh.close()
    return out


def test_up_took_the_ready_checkpoint(lab):
    assert "checkpoint" in lab.up_summary["phases_s"], lab.up_summary["phases_s"]
    cps = _checkpoints(lab)
    assert "ready" in cps and cps["ready"]["matches_definition"] is True
    ready = cps["ready"]
    assert set(ready["nodes"]) == {n.name for n in _cfg(lab).nodes()}
    print(f"ready checkpoint: {ready['size_bytes'] / 1e9:.2f} GB, taken in {ready['seconds']}")
    root = Path(lab.env["HALAB_STATE"]) / _cfg(lab).name / "checkpoints" / "ready"
    for f in root.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_reset_forgets_writes_and_leaves_nothing_for_terraform(lab):
    vip = lab.up_summary["vip"]
    name = f"gone-{uuid.uuid4().hex[:6]}"
    status, _h, body = _http(f"http://{vip}/v2/servers", "POST", {"server": {"name": name}})
    assert status in (200, 201, 202)
    sid = json.loads(body)["server"]["id"]
    assert _http(f"http://{vip}/v2/servers/{sid}")[0] == 200
    start = time.monotonic()
    res = lab.json("reset", "--json")
    took = time.monotonic() - start
    boot_s = lab.up_summary["phases_s"]["boot"]
    print(f"RESET {took:.1f} s (lab.py), {res['seconds']}; cold boot {boot_s:.0f} s: "
          f"{boot_s / res['seconds']['total']:.1f}x")
    assert res["healthy"] is True, res["problems"]
    if res["seconds"]["total"] > 20.0:
        print(f"LOUD: reset took {res['seconds']['total']} s (issue 14 asks <= 20 s; bench measures it)")
    with pytest.raises(urllib.error.HTTPError) as exc:
        _http(f"http://{vip}/v2/servers/{sid}")
    assert exc.value.code == 404
    offsets = _clock_offsets(lab)
    print("clock offsets after reset:", {k: round(v, 3) for k, v in offsets.items()})
    assert all(abs(v) <= 1.0 for v in offsets.values()), offsets
    assert "no changes" in lab.run("plan").stdout


def test_stop_frees_the_lab_and_start_brings_it_back(lab):
    lab.run("stop")
    assert set(_states(lab).values()) == {"saved"}
    assert lab.json("status", "--json")["stopped"] is True
    assert "STOPPED" in lab.run("status", "--no-ssh").stdout
    assert "e2e-" not in _virsh("list", "--name"), "a stopped lab still runs a QEMU"
    res = lab.json("start", "--json")
    print(f"START {res['seconds']}")
    assert res["healthy"] is True, res["problems"]
    if res["seconds"]["total"] > 20.0:
        print(f"LOUD: start took {res['seconds']['total']} s (issue 14 asks <= 20 s)")
    assert set(_states(lab).values()) == {"running"}
    assert all(abs(v) <= 1.0 for v in _clock_offsets(lab).values())
    assert "no changes" in lab.run("plan").stdout


def test_warm_revive_of_an_api_node_and_refusal_for_the_database(lab):
    lab.run("kill", "api-2")
    out = lab.run("revive", "api-2", "--warm").stdout
    assert "warm from checkpoint 'ready'" in out, out
    assert _states(lab)["api-2"] == "running"
    vip = lab.up_summary["vip"]
    served = set()
    deadline = time.monotonic() + 30
    while "api-2" not in served and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            served.add(_http(f"http://{vip}/v2/servers")[1]["X-Served-By"])
        time.sleep(0.2)
    assert "api-2" in served, "a warm api-2 did not serve within 30 s"
    proc = lab.run("revive", "db-1", "--warm", check=False)
    assert proc.returncode == 2
    assert "never revived warm" in proc.stderr and "Traceback" not in proc.stderr
    assert _states(lab)["db-1"] == "running"


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_resets_are_refused_and_change_nothing(lab, tmp_path):
    before = _states(lab)
    line = _one_line_error(lab.run("reset", "nosuch", check=False))
    assert "no checkpoint 'nosuch'" in line
    other = tmp_path / "other.yaml"  # same lab, other nodes: the checkpoint is not theirs
    other.write_text(Path(lab.config).read_text() + "roles: {api: {count: 4, memory_mib: 640}}\n")
    proc = lab.run("-c", str(other), "reset", check=False)
    assert "another definition" in _one_line_error(proc)
    assert _states(lab) == before
    root = Path(lab.env["HALAB_STATE"]) / _cfg(lab).name / "checkpoints"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(root)], check=True)
    try:
        line = _one_line_error(lab.run("checkpoint", "save", "small", check=False))
        assert "not enough free disk" in line
        assert _states(lab) == before
    finally:
        subprocess.run(["umount", str(root)], check=True)
    assert "ready" in _checkpoints(lab)
    assert os.listdir(root) == ["ready"]
