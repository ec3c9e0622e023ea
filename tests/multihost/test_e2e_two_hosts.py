"""End to end on two "hosts" (tests/multihost/sandbox2: two network namespaces, a private libvirtd in
each, the second reached over qemu+tcp and its tunnel over ssh, a veth pair as the underlay):

    vmlock tests/multihost/sandbox2 .venv/bin/pytest -m multihost tests/multihost/test_e2e_two_hosts.py

`up` of the default lab spread over both; GETs through the VIP answered by API nodes of both hosts;
`measure --fault host-cut --node rack2`: the second host's API node DOWN in HAProxy within the
preset's budget while reads go on, the undo brings it back; `down` leaves nothing on either host.
Boots seven TCG VMs: 6-10 minutes here. The numbers go to $HALAB_MH_REPORT (default /tmp)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.multihost, pytest.mark.e2e,
              pytest.mark.skipif(not os.environ.get("HALAB_MH_HOST2"),
                                 reason="runs only inside tests/multihost/sandbox2 (two libvirtd hosts)")]

ROOT = Path(__file__).resolve().parents[2]
HOST2 = f"qemu+tcp://{os.environ.get('HALAB_MH_HOST2', '')}/system"


def lab(tmp: Path) -> Path:
    p = tmp / "lab.yaml"
    p.write_text(f"""\
name: mhe2e
accel: tcg
hosts:
  rack1: {{uri: "qemu:///system", underlay: 10.231.0.1}}
  rack2:
    uri: {HOST2}
    underlay: {os.environ.get('HALAB_MH_HOST2')}
    ssh: {{target: root@{os.environ.get('HALAB_MH_HOST2')}, keyfile: {os.environ.get('HALAB_MH_KEY')},
          known_hosts: {os.environ.get('HALAB_MH_KNOWN_HOSTS')}}}
""")
    return p


def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "lab.py"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def virsh(uri: str, *args: str) -> list[str]:
    out = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60).stdout
    return [w for w in out.split() if w.startswith("mhe2e")]


def test_a_lab_over_two_hosts_end_to_end(tmp_path):
    cfg_file = lab(tmp_path)
    report: dict = {}
    started = time.monotonic()
    up = run("-c", str(cfg_file), "up", "--json", str(tmp_path / "up.json"))
    report["up_s"] = round(time.monotonic() - started, 1)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        here, there = virsh("qemu:///system", "list", "--name"), virsh(HOST2, "list", "--name")
        report["rack1"], report["rack2"] = sorted(here), sorted(there)
        assert sorted(there) == ["mhe2e-api-2", "mhe2e-api-4"]
        assert len(here) == 5
        status = json.loads(run("-c", str(cfg_file), "status", "--json").stdout)
        report["hosts_in_status"] = {n["name"]: n.get("host") for n in status["nodes"]}
        vip = status["vip"]
        served = []
        for _ in range(40):
            with urllib.request.urlopen(f"http://{vip}/v2/servers", timeout=5) as resp:
                served.append(resp.headers.get("X-Served-By"))
        report["gets_served_by"] = {n: served.count(n) for n in sorted(set(served))}
        assert {"api-2", "api-4"} & set(served) and {"api-1", "api-3"} & set(served), served
        m = run("-c", str(cfg_file), "measure", "--fault", "host-cut", "--node", "rack2", "--json",
                str(tmp_path / "m.json"), timeout=1200)
        assert m.returncode == 0, m.stdout[-3000:] + m.stderr[-3000:]
        res = json.loads((tmp_path / "m.json").read_text())
        report["measure"] = {k: res.get(k) for k in ("node", "detection_s", "expected_detection_s",
                                                     "failed_reads", "total_reads", "failed_pages",
                                                     "failed_writes", "error_window_s", "recovery_s",
                                                     "notes")}
        assert res["detection_s"] is not None and res["detection_s"] <= res["expected_detection_s"] + 2.0
        assert res["total_reads"] > 0 and res["failed_reads"] == 0
        assert res["recovery_s"] is not None
    finally:
        started = time.monotonic()
        down = run("-c", str(cfg_file), "down")
        report["down_s"] = round(time.monotonic() - started, 1)
        report["left_rack1"] = virsh("qemu:///system", "list", "--all", "--name") + virsh(
            "qemu:///system", "net-list", "--all", "--name") + virsh("qemu:///system", "pool-list", "--all",
                                                                     "--name")
        report["left_rack2"] = virsh(HOST2, "list", "--all", "--name") + virsh(
            HOST2, "net-list", "--all", "--name") + virsh(HOST2, "pool-list", "--all", "--name")
        out = Path(os.environ.get("HALAB_MH_REPORT", "/tmp")) / "halab-multihost-e2e.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert report["left_rack1"] == [] and report["left_rack2"] == []
