"""The `ha` profile end to end, after the default lab is gone (its file sorts after test_99_down):
twelve TCG VMs booted in waves, the clusters formed, the whole lab restored from its `ready`
checkpoint, and the VIP's failover measured from that checkpoint.

Slow (about 15 minutes of boot under TCG): marked `ha` as well as `e2e`, so `-m "e2e and not ha"`
leaves it out."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import ROOT, LabRunner, _in_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.ha]


@pytest.fixture(scope="module")
def ha_lab(tmp_path_factory):
    if not _in_sandbox():
        pytest.skip("NOT RUN: needs tests/e2e/sandbox (network namespace with a private libvirtd)")
    base = tmp_path_factory.mktemp("ha")
    config = base / "lab.yaml"
    config.write_text("name: e2eha\nprofile: ha\nnetwork: {cidr: 10.79.0.0/24, mode: nat}\n")
    runner = LabRunner(base / "state", config)
    try:
        runner.run("up", "--json", str(base / "up.json"), timeout=2700)
        runner.up_summary = json.loads((base / "up.json").read_text())
        print("HA UP PHASES", json.dumps(runner.up_summary["phases_s"]))
        yield runner
    finally:
        runner.run("down", check=False)


def _check_clusters(lab: LabRunner) -> dict:
    st = lab.json("status", "--json")
    roles = st["roles"]
    assert all(n["state"] == "running" and n["reachable"] for n in st["nodes"]), st["nodes"]
    g = roles["galera"]
    assert g["size"] == 3 and set(g["nodes"].values()) == {"synced"}, g
    assert roles["rabbitmq"]["members"] == {"mq-1": "running", "mq-2": "running", "mq-3": "running"}, \
        roles["rabbitmq"]
    assert roles["quorum_queues"].get("queues", {}).get("halab.servers") == ["mq-1", "mq-2", "mq-3"], \
        roles["quorum_queues"]
    assert len(roles["vip_holders"]) == 1, roles["vip_holders"]
    assert all(s["state"] == "running" for ns in roles["services"].values()
               for s in ns["services"].values()), roles["services"]
    return roles


def test_ha_boots_in_waves_and_forms_its_clusters(ha_lab):
    phases = ha_lab.up_summary["phases_s"]
    assert [k for k in phases if k.startswith("boot wave")] == [f"boot wave {i}" for i in (1, 2, 3, 4)]
    print(f"HA cold up: boot {phases['boot']:.0f} s, total {phases['total']:.0f} s")
    _check_clusters(ha_lab)


def test_ha_reset_restores_the_whole_lab_from_one_cut(ha_lab):
    res = ha_lab.json("reset", "--json")
    print(f"HA RESET: {res['seconds']}")
    assert res["healthy"], res["problems"]
    assert len(res["nodes"]) == 12
    assert max(abs(v) for v in res["clock_offsets_s"].values()) < 1.0, res["clock_offsets_s"]
    _check_clusters(ha_lab)


def test_haproxy_loss_from_the_checkpoint_moves_the_vip(ha_lab, tmp_path):
    proc = ha_lab.run("scenario", "run", str(ROOT / "scenarios" / "haproxy-loss.yaml"), "--reset",
                      "--report", str(tmp_path), check=False, timeout=1800)
    result = json.loads((tmp_path / "haproxy-loss.json").read_text())
    measured = result.get("measurements") or []
    print("HAPROXY-LOSS", json.dumps(measured)[:2000])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert measured and measured[0]["detection_s"] is not None, measured
