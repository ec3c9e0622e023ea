"""`status` prints role health in one screen: balancers' backends, the VIP holder, API health,
heartbeat ages, Galera and RabbitMQ (from halab.live.status.role_health's data)."""

from __future__ import annotations

from cli.lab_cmd import _print_roles


def test_role_health_lines(capsys):
    _print_roles({
        "haproxy": {"haproxy-1": {"api_nodes/api-1": "UP", "api_nodes/api-2": "DOWN"},
                    "haproxy-2": {"error": "timed out"}},
        "vip_holders": ["haproxy-1"],
        "api": {"api-1": "ok", "api-2": "down (db unreachable)"},
        "heartbeat_age_s": {"api-1": 0.8, "api-2": None},
        "galera": {"size": 3, "nodes": {"db-1": "synced", "db-2": "synced", "db-3": "synced"}},
        "rabbitmq": {"members": {"mq-1": "running", "mq-2": "stopped"}, "partitions": {"mq-1": []}},
    })
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "roles:"
    assert "  haproxy haproxy-1: api_nodes/api-1 UP, api_nodes/api-2 DOWN" in out
    assert "  haproxy haproxy-2: error timed out" in out
    assert "  VIP held by: haproxy-1" in out
    assert "  api health: api-1 ok, api-2 down (db unreachable)" in out
    assert "  heartbeat age: api-1 0.8s, api-2 never" in out
    assert "  galera: size 3; db-1 synced, db-2 synced, db-3 synced" in out
    assert "  rabbitmq: mq-1 running, mq-2 stopped; partitions: none" in out
