"""halab's SSH client against a real SSH server whose handshake is slow, as a busy TCG guest's is."""

from __future__ import annotations

import socket
import time

import pytest

from halab.lab.ssh import NodeSSH, SSHUnavailable, answer_wait_s
from tests.support.ssh_server import SlowHandshakeSSHServer


@pytest.fixture
def slow_server(tmp_path):
    server = SlowHandshakeSSHServer(tmp_path, handshake_delay_s=3.0)
    yield server
    server.close()


def test_a_slow_handshake_is_waited_for_not_cut_by_the_connect_timeout(slow_server):
    """The node accepted TCP at once but its sshd took 3 s to start the handshake: with a 1 s
    connect timeout the command still runs (paramiko's own `timeout` would have cut the key exchange
    and failed with "No existing session": every mq node in `status` on a loaded ha lab)."""
    ssh = NodeSSH(slow_server.key_file, slow_server.known_hosts, connect_timeout=1.0, port=slow_server.port)
    try:
        t0 = time.monotonic()
        res = ssh.run("127.0.0.1", "true", timeout=10)
        assert (res.rc, res.stdout) == (0, "ran: true\n")
        assert time.monotonic() - t0 >= 3.0  # it really waited for the slow handshake
    finally:
        ssh.close()


def test_a_handshake_that_outlasts_its_bound_says_so(slow_server):
    ssh = NodeSSH(slow_server.key_file, slow_server.known_hosts, connect_timeout=1.0,
                  handshake_timeout=1.0, port=slow_server.port)
    try:
        with pytest.raises(SSHUnavailable, match=r"answered on port \d+, but the SSH handshake did not "
                                                 r"finish it within 1 s"):
            ssh.run("127.0.0.1", "true", timeout=10)
    finally:
        ssh.close()


def test_nothing_listening_fails_within_the_connect_timeout(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "id").write_text("")
    ssh = NodeSSH(tmp_path / "id", tmp_path / "known_hosts", connect_timeout=1.0, port=port)
    t0 = time.monotonic()
    with pytest.raises(SSHUnavailable, match=r"cannot reach 127\.0\.0\.1 over SSH"):
        ssh.run("127.0.0.1", "true")
    assert time.monotonic() - t0 < 2.0


@pytest.fixture
def quick_server(tmp_path):
    server = SlowHandshakeSSHServer(tmp_path)
    yield server
    server.close()


def test_a_command_that_outlasts_its_wait_is_not_run_a_second_time(quick_server):
    """A slow rabbitmqctl on a starved guest used to be re-run after the SSH wait ran out (two
    Erlang VMs instead of one), and failed with a blank message ("command on … failed: ")."""
    ssh = NodeSSH(quick_server.key_file, quick_server.known_hosts, connect_timeout=1.0,
                  port=quick_server.port)
    try:
        with pytest.raises(SSHUnavailable, match=r"127\.0\.0\.1: `sleep 5` gave no answer within 1 s"):
            ssh.run("127.0.0.1", "sleep 5", timeout=1)
        assert quick_server.commands == [b"sleep 5"]
        # the connection stays usable for the next command
        assert ssh.run("127.0.0.1", "true", timeout=10).stdout == "ran: true\n"
        assert quick_server.commands == [b"sleep 5", b"true"]
    finally:
        ssh.close()


@pytest.mark.parametrize(("command", "wait"), [
    ("timeout 60 rabbitmqctl cluster_status", 75.0),
    ("timeout 90 rabbitmqctl -q list_queues", 105.0),
    ("timeout 5 true", 30.0),  # never shorter than the default
    ("systemctl is-active haproxy", 30.0),
    ("echo timeout 600 x", 30.0),  # only a leading bound counts
])
def test_the_answer_wait_follows_a_guest_side_bound(command, wait):
    assert answer_wait_s(command) == wait
