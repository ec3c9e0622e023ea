"""haproxy.cfg rendering: the preset knobs land where they should, and every rendered file passes
`haproxy -c` (skipped, with the reason shown, where haproxy is not installed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from halab.lab.config import parse_config
from halab.lab.haproxy_config import render_haproxy_cfg
from halab.lab.secrets import LabSecrets

SECRETS = LabSecrets.generate()
CASES = [(p, pre) for p in ("default", "ha") for pre in ("fast", "kolla")]


def _cfg(profile: str, preset: str, extra: str = ""):
    return parse_config(f"profile: {profile}\nhaproxy:\n  preset: {preset}\n{extra}", host_mem_mib=1 << 20)


def test_fast_defaults():
    text = render_haproxy_cfg(_cfg("default", "fast"), SECRETS)
    assert "default-server check inter 1000ms fastinter 250ms downinter 1000ms rise 2 fall 2 " \
           "observe layer4 error-limit 1 on-error mark-down" in text
    assert "    retries 3\n" in text
    assert "option redispatch 1\n" in text
    assert "retry-on conn-failure empty-response response-timeout 502 503 504" in text
    assert "http-request disable-l7-retry if !METH_GET !METH_HEAD" in text
    # reads in flight to a dead node are replayed elsewhere before the client's 2 s timeout
    assert "http-request set-timeout server 1500ms if METH_GET || METH_HEAD" in text
    assert "timeout check 2000ms" in text
    assert "option dontlog-normal" in text
    assert "option httpchk GET /healthcheck" in text
    assert "bind :80\n" in text and "bind :8404\n" in text
    assert "prometheus-exporter" in text and "stats uri /stats" in text
    assert f"insecure-password {SECRETS.haproxy_stats_password}" in text
    assert "listen galera" not in text
    cfg = _cfg("default", "fast")
    for n in cfg.nodes():
        if n.role == "api":
            assert f"server {n.name} {n.ip}:8080" in text


def test_kolla_preset():
    text = render_haproxy_cfg(_cfg("default", "kolla"), SECRETS)
    assert "inter 2000ms" in text and "rise 2 fall 5" in text
    assert "observe layer4" not in text
    assert "set-timeout" not in text
    assert "option redispatch\n" in text
    assert "    retries 3\n" in text


def test_values_from_lab_yaml_override_preset():
    text = render_haproxy_cfg(_cfg("default", "fast", "  inter_ms: 500\n  fall: 3\n  retries: 1\n"), SECRETS)
    assert "inter 500ms" in text and "fall 3" in text and "    retries 1\n" in text


def test_ha_galera_one_active_rest_backup():
    cfg = _cfg("ha", "fast")
    text = render_haproxy_cfg(cfg, SECRETS)
    dbs = [n for n in cfg.nodes() if n.role == "db"]
    assert "listen galera" in text and "bind :3306" in text
    assert f"server {dbs[0].name} {dbs[0].ip}:3306\n" in text
    for n in dbs[1:]:
        assert f"server {n.name} {n.ip}:3306 backup" in text
    assert "port 9200" in text and "on-marked-down shutdown-sessions" in text


@pytest.mark.parametrize(("profile", "preset"), CASES)
def test_haproxy_accepts_config(tmp_path, profile, preset):
    haproxy = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin:/sbin"))
    if not haproxy:
        pytest.skip("SKIPPED LOUDLY: haproxy is not installed, rendered configs were NOT checked with "
                    "`haproxy -c` (setup.sh installs it)")
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_haproxy_cfg(_cfg(profile, preset), SECRETS))
    r = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
