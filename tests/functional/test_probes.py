"""Probe parsers on recorded samples, change detection, and a live HAProxy on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from halab.lab.config import parse_config
from halab.lab.virt import LabVirt, ownership_xml
from halab.observe.probes import (
    ChangeDetector,
    GaleraSample,
    HAProxyProbe,
    HAProxySample,
    HealthProbe,
    HeartbeatProbe,
    LibvirtProbe,
    ProbeSet,
    RabbitProbe,
    parse_haproxy_csv,
    parse_healthcheck,
    parse_os_services,
    parse_rabbitmq_cluster_status,
    parse_wsrep_status,
)
from halab.observe.timeline import Timeline
from tests.support.fake_api import FakeAPI

FIX = Path(__file__).resolve().parent.parent / "fixtures"
CFG = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)


def servers(name: str) -> dict[str, object]:
    rows = parse_haproxy_csv((FIX / "haproxy" / name).read_text())
    return {r.server: r for r in rows if r.proxy == "api_nodes" and r.is_server}


def test_haproxy_csv_recorded():
    s = servers("stats-2.6-two-down.csv")
    assert {n: r.state for n, r in s.items()} == {"api-1": "UP", "api-2": "UP", "api-3": "DOWN",
                                                  "api-4": "DOWN"}
    assert s["api-1"].check_status == "L7OK" and s["api-1"].sessions_total == 10
    assert s["api-3"].check_status == "L4CON" and s["api-3"].check_desc == "Layer4 connection problem"
    assert s["api-3"].down_transitions == 1 and s["api-3"].downtime_s == 4
    t = servers("stats-2.6-transition.csv")
    assert t["api-1"].status == "UP 1/2" and t["api-1"].state == "UP"
    assert all(r.state == "DOWN" for r in servers("stats-2.6-all-down.csv").values())
    with pytest.raises(ValueError):
        parse_haproxy_csv("<html>401 Unauthorized</html>")


def _hs(name: str, at: float) -> HAProxySample:
    rows = tuple(parse_haproxy_csv((FIX / "haproxy" / name).read_text()))
    return HAProxySample("haproxy", at, haproxy_node="haproxy-1", servers=rows)


def test_change_detection_from_recorded_sequence():
    det = ChangeDetector()
    assert det.feed(_hs("stats-2.6-two-down.csv", 1.0)) == []  # first reading: baseline only
    assert det.feed(_hs("stats-2.6-transition.csv", 2.0)) == []  # "UP 1/2" is still UP
    evs = det.feed(_hs("stats-2.6-all-down.csv", 3.0))
    assert [e.message for e in evs] == ["HAProxy marked api-1 DOWN (on haproxy-1)",
                                        "HAProxy marked api-2 DOWN (on haproxy-1)"]
    assert all(e.at == 3.0 and e.data["direction"] == "down" and e.kind == "probe" for e in evs)
    back = det.feed(_hs("stats-2.6-two-down.csv", 4.0))
    assert [(e.node, e.data["direction"]) for e in back] == [("api-1", "up"), ("api-2", "up")]
    gone = det.feed(HAProxySample("haproxy", 5.0, False, "timed out", haproxy_node="haproxy-1"))
    assert [e.message for e in gone] == ["HAProxy stats unreachable"]


def test_galera_parsers():
    g = parse_wsrep_status((FIX / "galera" / "wsrep-synced-3.tsv").read_text())
    assert (g.cluster_size, g.cluster_status, g.local_state, g.ready, g.state) == (3, "Primary", "Synced",
                                                                                   True, "synced")
    assert len(g.incoming_addresses) == 3
    n = parse_wsrep_status((FIX / "galera" / "wsrep-non-primary.txt").read_text())
    assert n.state == "non-primary" and not n.ready
    s1 = GaleraSample("galera", 1.0, nodes={"db-1": g, "db-2": g, "db-3": g})
    s2 = GaleraSample("galera", 2.0, nodes={"db-1": g, "db-2": n, "db-3": None})
    det = ChangeDetector()
    det.feed(s1)
    msgs = {e.message: e.data["direction"] for e in det.feed(s2)}
    assert msgs == {"Galera db-2 non-primary": "down", "Galera db-3 unreachable": "down"}
    with pytest.raises(ValueError):
        parse_wsrep_status("ERROR 2002 (HY000): Can't connect to local server")


def test_rabbitmq_parser_and_probe():
    text = (FIX / "rabbitmq" / "cluster-status-2-of-3.json").read_text()
    st = parse_rabbitmq_cluster_status(text)
    assert st.running("mq-1") and not st.running("mq-2") and st.partitions == {}
    calls = []

    def ssh(node, cmd):
        calls.append((node, cmd))
        return (69, "", "Error: unable to perform an operation on node") if node == "mq-1" else (0, text, "")

    probe = RabbitProbe(["mq-1", "mq-2", "mq-3"], ssh)
    s = probe.sample()
    assert s.members == {"mq-1": "running", "mq-2": "stopped", "mq-3": "running"}
    assert [c[0] for c in calls] == ["mq-1", "mq-2"]
    # The next sample asks the node that answered first: a dead mq-1 costs no SSH timeout again.
    calls.clear()
    assert probe.sample().members == s.members
    assert [c[0] for c in calls] == ["mq-2"]


def test_os_services_and_healthcheck():
    body = ('{"services": [{"binary": "halab-api", "host": "api-1", "state": "up", '
            '"updated_at": "2026-11-25T14:00:09.500000"}, '
            '{"host": "api-2", "updated_at": "2026-11-25T14:00:01Z"},'
            ' {"host": "api-3", "age_s": 0.4}]}')
    now = 1795615210.0  # 2026-11-25T14:00:10Z
    ages = parse_os_services(body, now)
    assert ages == {"api-1": pytest.approx(0.5), "api-2": pytest.approx(9.0), "api-3": 0.4}
    # The lab API's own shape (cloud-init/api/halab_api.py): its "status" wins.
    lab_api = ('{"node": "api-1", "status": "degraded", "db": {"ok": true, "error": null, "ms": 0.4}, '
               '"mq": {"ok": false, "error": "connection refused", "ms": 0.1}, "worker": "reconnecting"}')
    assert parse_healthcheck(200, lab_api) == ("degraded", {"db": "ok", "mq": "down"})
    both_ok = '{"db": {"ok": true}, "mq": {"ok": true}}'
    assert parse_healthcheck(200, both_ok) == ("ok", {"db": "ok", "mq": "ok"})
    assert parse_healthcheck(503, '{"db": false, "mq": true}') == ("degraded", {"db": "down", "mq": "ok"})
    assert parse_healthcheck(502, "")[0] == "down"


def test_http_probes_against_fake_api():
    with FakeAPI(("api-1",)) as api:
        def fetch(host, port, path, timeout, auth=None):
            from halab.observe.probes import http_get
            return http_get("127.0.0.1", api.port if host == "10.0.0.1" else 1, path, timeout, auth)

        hp = HealthProbe({"api-1": "10.0.0.1", "api-2": "10.0.0.2"}, fetch=fetch)
        s = hp.sample()
        assert s.nodes["api-1"] == "ok" and s.nodes["api-2"] == "down"
        hb = HeartbeatProbe("10.0.0.2", ["api-1"], fetch=fetch).sample()
        assert not hb.ok and hb.states()["heartbeat:probe"] == (None, "unreachable")


def test_libvirt_probe_and_probeset_events():
    conn = libvirt.open("test:///default")
    node = CFG.node("api-2")
    try:  # test:///default state is shared while other modules hold a connection
        old = conn.lookupByName("lab1-api-2")
        if old.isActive():
            old.destroy()
        old.undefine()
    except libvirt.libvirtError:
        pass
    dom = conn.defineXML(f"""<domain type='test'><name>lab1-api-2</name><memory>65536</memory>
<os><type arch='x86_64'>hvm</type></os><metadata>{ownership_xml("lab1", "api-2", "api")}</metadata>
</domain>""")
    dom.create()
    tl = Timeline()
    ps = ProbeSet([LibvirtProbe(LabVirt(CFG, conn))], tl)
    ps.sample_once(ps.probes[0])
    dom.destroy()
    s = ps.sample_once(ps.probes[0])
    assert s.nodes[node.name] == "shut off"
    assert [e.message for e in tl.events()] == ["api-2 is shut off"]
    dom.undefine()
    conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_live_haproxy_csv(tmp_path):
    """A real HAProxy on loopback, the lab's backend layout: the probe sees a server go DOWN within
    inter + (fall - 1) * fastinter of its process dying, and the event says so."""
    front, stats = _free_port(), _free_port()
    with FakeAPI(("api-1",)) as a1, FakeAPI(("api-2",)) as a2:
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(f"""global
    maxconn 256
defaults
    mode http
    timeout connect 1000ms
    timeout client 30s
    timeout server 10000ms
    timeout check 1000ms
userlist halab_stats
    user halab insecure-password pw
frontend api
    bind 127.0.0.1:{front}
    default_backend api_nodes
backend api_nodes
    option httpchk GET /healthcheck
    http-check expect status 200
    default-server check inter 1000ms fastinter 250ms downinter 1000ms rise 2 fall 2
    server api-1 127.0.0.1:{a1.port}
    server api-2 127.0.0.1:{a2.port}
listen stats
    bind 127.0.0.1:{stats}
    mode http
    http-request auth realm halab unless {{ http_auth(halab_stats) }}
    stats enable
    stats uri /stats
""")
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            tl = Timeline()
            probe = HAProxyProbe("haproxy-1", "127.0.0.1", ("halab", "pw"), port=stats)
            ps = ProbeSet([probe], tl)
            deadline = time.time() + 5
            while time.time() < deadline:
                s = ps.sample_once(probe)
                states = {x.server: x.state for x in s.servers if x.is_server}
                if s.ok and states == {"api-1": "UP", "api-2": "UP"}:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"servers never both UP: {s}")
            wrong = HAProxyProbe("haproxy-1", "127.0.0.1", ("halab", "nope"), port=stats).sample()
            assert not wrong.ok and "401" in wrong.error
            a2.server.shutdown()
            a2.server.server_close()
            killed = time.time()
            while time.time() < killed + 5:
                ps.sample_once(probe)
                if any(e.node == "api-2" for e in tl.events()):
                    break
                time.sleep(0.1)
            ev = [e for e in tl.events() if e.node == "api-2"]
            assert ev and ev[0].message == "HAProxy marked api-2 DOWN (on haproxy-1)"
            assert ev[0].at - killed <= 1.0 + 0.25 + 0.5  # expected detection + sampling period
        finally:
            proc.terminate()
            proc.wait(5)


def _one_shot_server(reply: bytes | None):
    """127.0.0.1 server for one connection: reads the client's 8 bytes, answers `reply` (None:
    closes without a word)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            got.append(conn.recv(8))
            if reply is not None:
                conn.sendall(reply)
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], got


def test_amqp_probe_needs_a_real_protocol_answer():
    from halab.lab.config import parse_config
    from halab.observe.probes import AMQP_HEADER, AmqpProbe, ProbeSet, amqp_answers

    # Connection.Start: frame type 1 (method), channel 0, then size and payload.
    port, got = _one_shot_server(b"\x01\x00\x00\x00\x00\x01\xf4\x00\x0a\x00\x0a")
    assert amqp_answers("127.0.0.1", port) is True
    assert got == [AMQP_HEADER]
    port, _ = _one_shot_server(None)  # a port that accepts but is no broker
    assert amqp_answers("127.0.0.1", port) is False
    port, _ = _one_shot_server(b"HTTP/1.1 400 Bad Request\r\n")
    assert amqp_answers("127.0.0.1", port) is False
    s = AmqpProbe({"mq-1": "10.0.0.5"}, check=lambda ip: ip == "10.0.0.5").sample()
    assert s.states()["rabbitmq:mq-1"] == ("mq-1", "running")
    s = AmqpProbe({"mq-1": "10.0.0.5"}, check=lambda ip: False).sample()
    assert s.states()["rabbitmq:mq-1"] == ("mq-1", "stopped")

    def kinds(profile):
        cfg = parse_config(f"name: t1\nprofile: {profile}\n", host_mem_mib=1 << 20)
        ps = ProbeSet.for_lab(cfg, None, stats_auth=("u", "p"), ssh=lambda n, c: (0, "", ""))
        return {type(p).__name__ for p in ps.probes}

    # One broker: no rabbitmqctl (an Erlang VM per call) at all; a cluster: rabbitmqctl, slowly.
    assert "AmqpProbe" in kinds("default") and "RabbitProbe" not in kinds("default")
    assert "RabbitProbe" in kinds("ha") and "AmqpProbe" not in kinds("ha")


def test_backends_not_up_names_each_server_and_each_unread_balancer():
    body = (FIX / "haproxy" / "stats-2.6-two-down.csv").read_text()
    answers = iter([(200, {}, body), (200, {}, body.replace(",DOWN,", ",UP,")), (503, {}, "")])
    probe = HAProxyProbe("haproxy-1", "10.0.0.2", ("halab", "pw"), fetch=lambda *_a: next(answers))
    ps = ProbeSet([probe])
    assert ps.backends_not_up() == ["haproxy-1 stats not read yet"]
    ps.sample_once(probe)
    assert ps.backends_not_up() == ["api_nodes/api-3 DOWN on haproxy-1", "api_nodes/api-4 DOWN on haproxy-1"]
    ps.sample_once(probe)
    assert ps.backends_not_up() == []
    ps.sample_once(probe)
    assert ps.backends_not_up() == ["haproxy-1 stats unreachable"]


def test_a_silence_is_stamped_when_the_wait_ended():
    """A sample begun just before a kill times out after it: its "down" must not be dated before
    the fault (the measurement then saw no detection at all). Answers keep their start time."""

    def slow_silence(*_a, **_k):
        time.sleep(0.3)
        raise TimeoutError("timed out")

    before = time.time()
    s = HAProxyProbe("haproxy-1", "10.0.0.1", ("u", "p"), fetch=slow_silence).sample()
    assert not s.ok and s.at >= before + 0.29
    h = HealthProbe({"api-1": "10.0.0.2"}, fetch=slow_silence).sample()
    assert h.nodes == {"api-1": "down"} and h.at >= before + 0.59

    def answer(*_a, **_k):
        time.sleep(0.3)
        return 200, {}, '{"status": "ok", "db": {"ok": true}, "mq": {"ok": true}}'

    t = time.time()
    h = HealthProbe({"api-1": "10.0.0.2"}, fetch=answer).sample()
    assert h.nodes == {"api-1": "ok"} and h.at < t + 0.1
