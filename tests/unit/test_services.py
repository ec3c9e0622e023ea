"""`status` names a role service that fails or keeps restarting, and a role setup that failed —
from `systemctl show` blocks and the setup markers (halab.lab.services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.lab_cmd import _print_roles
from halab.lab.config import parse_config
from halab.lab.services import (
    classify,
    command,
    parse,
    parse_quorum_queues,
    quorum_command,
    read_quorum_queues,
    read_services,
    summary_line,
)
from halab.lab.ssh import SSHUnavailable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "systemd"
HA = parse_config("name: s\nprofile: ha\n", "lab.yaml", host_mem_mib=1 << 20)

# What `systemctl show --property=Id,ActiveState,SubState,Result,NRestarts` prints: one block per unit
# in the order asked, blank line between, properties in systemd's own order (not the one asked) —
# shaped as captured on a lab node (tests/fixtures/systemd/show-db.txt). RabbitMQ waiting to restart:
RESTARTING = """Result=exit-code
NRestarts=4
Id=rabbitmq-server.service
ActiveState=activating
SubState=auto-restart
--halab-setup--
running
"""
FAILED_SETUP = """Result=exit-code
NRestarts=0
Id=halab-galera.service
ActiveState=failed
SubState=failed

Result=success
NRestarts=0
Id=halab-clustercheck.service
ActiveState=active
SubState=running
--halab-setup--
failed
step=wait for the cluster
exit=1
line=40
time=2026-12-02T21:00:00Z
"""
HEALTHY = """Result=success
NRestarts=0
Id=haproxy.service
ActiveState=active
SubState=running

Result=success
NRestarts=1
Id=keepalived.service
ActiveState=active
SubState=running
--halab-setup--
ready
"""


@pytest.mark.parametrize(("active", "sub", "result", "want"), [
    ("active", "running", "success", "running"),
    ("active", "exited", "success", "running"),  # a oneshot that ran
    ("activating", "auto-restart", "exit-code", "restarting"),
    ("activating", "start", "success", "starting"),
    ("failed", "failed", "exit-code", "failed"),
    ("inactive", "dead", "timeout", "failed"),
    ("inactive", "dead", "success", "stopped"),
    ("weird", "x", "", "unknown"),
])
def test_systemd_states_in_the_words_a_user_acts_on(active, sub, result, want):
    assert classify(active, sub, result) == want


def test_a_restarting_service_and_an_unfinished_setup():
    ns = parse("mq-1", ["rabbitmq-server"], RESTARTING)
    (s,) = ns.services
    assert (s.unit, s.state, s.active, s.restarts) == (
        "rabbitmq-server", "restarting", "activating/auto-restart", 4)
    assert ns.setup == "running" and not ns.healthy
    assert summary_line({"mq-1": ns}) == (
        "mq-1 rabbitmq-server restarting (activating/auto-restart, 4 restarts); "
        "mq-1 role setup still running")


def test_the_captured_output_of_a_galera_node():
    text = (FIXTURES / "show-db.txt").read_text() + "--halab-setup--\nready\n"
    ns = parse("db-1", ["halab-galera", "halab-clustercheck"], text)
    assert [(s.unit, s.state, s.active) for s in ns.services] == [
        ("halab-galera", "running", "active/exited"), ("halab-clustercheck", "running", "active/running")]
    assert ns.healthy


def test_a_failed_setup_names_its_step():
    ns = parse("db-2", ["halab-galera", "halab-clustercheck"], FAILED_SETUP)
    assert [s.state for s in ns.services] == ["failed", "running"]
    assert ns.setup == "failed" and ns.setup_failed_step == "wait for the cluster"
    line = summary_line({"db-2": ns})
    assert "db-2 halab-galera failed (failed/failed)" in line
    assert "db-2 role setup FAILED at wait for the cluster" in line


def test_healthy_nodes_say_so_but_restarts_are_not_hidden():
    ns = parse("haproxy-1", ["haproxy", "keepalived"], HEALTHY)
    assert ns.healthy
    assert summary_line({"haproxy-1": ns}) == "haproxy-1 keepalived running after 1 restarts"
    calm = parse("haproxy-1", ["haproxy"], HEALTHY.replace("NRestarts=1", "NRestarts=0"))
    assert summary_line({"haproxy-1": calm}) == "all 1 role services running on 1 nodes"


def test_missing_or_garbled_output_is_unknown_never_healthy():
    ns = parse("api-1", ["halab-api"], "")
    assert ns.services[0].state == "unknown" and ns.setup == "unknown" and not ns.healthy
    ns = parse("api-1", ["halab-api"], "Id=halab-api.service\nNRestarts=lots\n--halab-setup--\nready\n")
    assert ns.services[0].restarts == 0 and not ns.healthy


def test_read_services_asks_each_node_for_its_role_units_and_skips_the_unreachable():
    asked: dict[str, str] = {}

    def run(node: str, cmd: str) -> tuple[int, str, str]:
        asked[node] = cmd
        if node == "mq-2":
            raise SSHUnavailable("mq-2: no route")
        return 0, RESTARTING if node.startswith("mq") else HEALTHY, ""

    got = read_services(HA, run, nodes=["mq-1", "mq-2", "haproxy-1"])
    assert set(asked) == {"mq-1", "mq-2", "haproxy-1"}
    assert asked["haproxy-1"] == command(["haproxy", "keepalived"])
    assert "rabbitmq-server" in asked["mq-1"]
    assert set(got) == {"mq-1", "haproxy-1"}  # mq-2's unreachability is the node list's to say
    assert got["mq-1"].services[0].state == "restarting"


def test_status_prints_the_services_line(capsys):
    line = "mq-1 rabbitmq-server restarting (activating/auto-restart, 4 restarts)"
    _print_roles({"haproxy": {}, "api": {}, "heartbeat_age_s": {}, "services_summary": line})
    assert f"  services: {line}" in capsys.readouterr().out.splitlines()


def test_quorum_queue_members_from_captured_rabbitmqctl_output():
    """`rabbitmqctl list_queues name type members --formatter json` on the `ha` lab's mq-1."""
    text = (FIXTURES.parent / "rabbitmq" / "list_queues_quorum.json").read_text()
    assert parse_quorum_queues(text) == {"halab.servers": ["mq-1", "mq-2", "mq-3"]}
    assert parse_quorum_queues('[\n{"name":"q","type":"classic","members":[]}\n]') == {}
    with pytest.raises(ValueError):
        parse_quorum_queues("Error: vhost halab does not exist")


def test_quorum_queues_are_asked_of_the_first_mq_node_that_answers():
    def run(node: str, cmd: str) -> tuple[int, str, str]:
        if node == "mq-1":
            raise SSHUnavailable("mq-1: timed out")
        assert cmd == quorum_command("halab")
        return 0, '[{"name":"halab.servers","type":"quorum","members":["rabbit@mq-3","rabbit@mq-2"]}]', ""

    assert read_quorum_queues(HA, run, "halab", ["mq-1", "mq-2"]) == {
        "queues": {"halab.servers": ["mq-2", "mq-3"]}, "asked": "mq-2"}
    assert "error" in read_quorum_queues(HA, lambda n, c: (69, "", "Error: unable to perform"), "halab",
                                         ["mq-2"])
    assert read_quorum_queues(HA, run, "halab", []) == {"error": "no mq node running"}


def test_status_prints_where_the_quorum_queue_lives(capsys):
    base = {"haproxy": {}, "api": {}, "heartbeat_age_s": {}}
    _print_roles({**base, "quorum_queues": {"queues": {"halab.servers": ["mq-1", "mq-2", "mq-3"]}}})
    _print_roles({**base, "quorum_queues": {"error": "no mq node running"}})
    out = capsys.readouterr().out.splitlines()
    assert "  quorum queues: halab.servers on mq-1, mq-2, mq-3 (3)" in out
    assert "  quorum queues: unknown (no mq node running)" in out
