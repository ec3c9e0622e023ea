"""Each constant is said once: a port, the ownership namespace, the rate limit. A second copy
drifts silently (the API's MQ port and the probe's were two numbers that happened to agree)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from halab import ports
from halab.errors import UsageError
from halab.lab import cloudinit, haproxy_config, virt
from halab.lab.config import MAX_RATE, MIN_RATE, check_rate, parse_config
from halab.lab.secrets import LabSecrets
from halab.lab.tfmirror import provider_dir

ROOT = Path(__file__).resolve().parents[2]


def _assigned_ints(path: Path) -> dict[str, int]:
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name) and isinstance(node.value.value, int):
                    out[t.id] = node.value.value
    return out


def test_ports_are_defined_only_in_halab_ports():
    for path in sorted((ROOT / "halab").glob("*.py")):
        if path.name == "ports.py":
            continue
        again = {k: v for k, v in _assigned_ints(path).items() if k.endswith("_PORT")}
        assert not again, f"{path.name} defines {again}: import them from halab.ports"


def test_rendered_configs_use_the_ports():
    cfg = parse_config("profile: ha\n")
    secrets = LabSecrets.generate()
    text = haproxy_config.render_haproxy_cfg(cfg, secrets)
    assert f"bind :{ports.FRONTEND_PORT}" in text and f"bind :{ports.STATS_PORT}" in text
    assert f":{ports.API_PORT}" in text and f"port {ports.GALERA_CHECK_PORT}" in text
    api = cloudinit.api_config(cfg, cfg.node("api-1"), secrets)
    assert (api["port"], api["db"]["port"], api["mq"]["port"]) == (
        ports.API_PORT, ports.GALERA_PORT, ports.AMQP_PORT)


def test_the_provider_writes_the_ownership_namespace_halab_reads():
    sys.path.insert(0, str(provider_dir()))
    try:
        from halab_provider.common import HALAB_NS
    finally:
        sys.path.remove(str(provider_dir()))
    assert HALAB_NS == virt.HALAB_XMLNS


@pytest.mark.parametrize("rate", [MIN_RATE, 8, MAX_RATE])
def test_rate_limit_accepts_its_range(rate):
    assert check_rate(rate) == rate


@pytest.mark.parametrize("rate", [0, MIN_RATE / 2, MAX_RATE + 1, float("nan")])
def test_rate_limit_refuses_outside_it_in_operations_per_second(rate):
    with pytest.raises(UsageError, match="operations/s"):
        check_rate(rate)
