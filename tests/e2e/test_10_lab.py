"""Issue 4 and 5 acceptance on real VMs: the default lab comes up through Terraform, every node
finished cloud-init with a verified host key, the roles work, drift is seen and healed, `down`
leaves nothing behind. One lab for the whole file (session fixture), tests run in file order."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

API_NODES = {"api-1", "api-2", "api-3", "api-4"}


def _http(url: str, method: str = "GET", body: dict | None = None, auth: tuple[str, str] | None = None,
          timeout: float = 5.0) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers, resp.read()


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], check=True, text=True,
                          capture_output=True).stdout


def _cfg(lab):
    import os

    os.environ["HALAB_STATE"] = lab.env["HALAB_STATE"]
    from halab.lab.config import load_config

    return load_config(lab.config)


def test_up_brings_every_node_to_ready(lab):
    summary = lab.up_summary
    assert len(summary["nodes"]) == 7
    assert {n["state"] for n in summary["nodes"]} == {"running"}
    for phase in ("image", "terraform", "boot"):
        assert phase in summary["phases_s"]


def test_status_reports_every_node_reachable(lab):
    status = lab.json("status", "--json")
    assert status["up"] is True
    assert [n["name"] for n in status["nodes"]] == [
        "haproxy-1", "api-1", "api-2", "api-3", "api-4", "db-1", "mq-1"]
    assert all(n["state"] == "running" and n["reachable"] for n in status["nodes"]), status


def test_get_through_vip_is_served_by_all_four_api_nodes(lab):
    vip = lab.up_summary["vip"]
    served = set()
    for _ in range(40):
        status, headers, body = _http(f"http://{vip}/v2/servers")
        assert status == 200
        assert "servers" in json.loads(body)
        served.add(headers["X-Served-By"])
    assert served == API_NODES


def test_post_reaches_active_within_two_seconds(lab):
    vip = lab.up_summary["vip"]
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    status, _h, body = _http(f"http://{vip}/v2/servers", "POST", {"server": {"name": name}})
    assert status in (200, 201, 202)
    server = json.loads(body)["server"]
    assert server["status"] == "BUILD"
    while time.monotonic() - start < 10:
        _s, _h, body = _http(f"http://{vip}/v2/servers/{server['id']}")
        if json.loads(body)["server"]["status"] == "ACTIVE":
            break
        time.sleep(0.1)
    took = time.monotonic() - start
    print(f"POST -> ACTIVE in {took:.2f}s")
    assert json.loads(body)["server"]["status"] == "ACTIVE"
    assert took <= 2.0


def test_four_heartbeats_are_fresh(lab):
    vip = lab.up_summary["vip"]
    _s, _h, body = _http(f"http://{vip}/v2/os-services")
    services = json.loads(body)["services"]
    fresh = {s["host"] for s in services if s.get("state") == "up"}
    assert fresh >= API_NODES, services


def test_haproxy_shows_four_backends_up(lab):
    from halab.lab.secrets import load_or_create_secrets
    from halab.observe.probes import parse_haproxy_csv

    cfg = _cfg(lab)
    secrets = load_or_create_secrets(cfg)
    _s, _h, body = _http(f"http://{cfg.vip}:8404/stats;csv",
                         auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password))
    rows = [r for r in parse_haproxy_csv(body.decode()) if r.server in API_NODES]
    assert {r.server for r in rows} == API_NODES
    assert all(r.state == "UP" for r in rows), [(r.server, r.status) for r in rows]


def test_wrong_host_key_is_refused(lab, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from halab.lab.secrets import load_or_create_keys
    from halab.lab.ssh import HostKeyMismatch, NodeSSH

    cfg = _cfg(lab)
    keys = load_or_create_keys(cfg)
    node = cfg.node("api-1")
    impostor = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    bad_known_hosts = tmp_path / "known_hosts"
    bad_known_hosts.write_text(f"{node.ip} {impostor}\n")
    with pytest.raises(HostKeyMismatch, match="man in the middle"):
        NodeSSH(keys.client_key_path, bad_known_hosts).run(node.ip, "true")


def test_rerunning_up_changes_nothing(lab, tmp_path):
    out = tmp_path / "up2.json"
    lab.run("up", "--json", str(out))
    assert json.loads(out.read_text())["terraform_changes"] == 0


def test_external_destroy_shows_as_drift_and_heal_repairs_it(lab):
    _virsh("destroy", "e2e-api-2")
    plan = lab.run("plan")
    assert "api-2" in plan.stdout
    assert "no changes" not in plan.stdout
    lab.run("heal")
    assert "running" in _virsh("domstate", "e2e-api-2")
    plan = lab.run("plan")
    assert "no changes" in plan.stdout
