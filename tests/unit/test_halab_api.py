"""The lab API service (cloud-init/api/halab_api.py): its pure logic, and the real HTTP handler on
127.0.0.1 with in-memory stand-ins for MariaDB and RabbitMQ (the stand-ins live here, not in the
product). The service itself runs on Debian 12's python3 in the guests; importing it needs only the
standard library."""

from __future__ import annotations

import http.client
import importlib.util
import json
import sys
import threading
from datetime import UTC, datetime

import pytest

from halab.paths import project_root


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, project_root() / rel)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


api = _load("halab_api", "cloud-init/api/halab_api.py")
clustercheck = _load("halab_clustercheck", "cloud-init/db/clustercheck.py")


# ---- pure logic --------------------------------------------------------------------------------


def test_ec2_ids_round_trip():
    assert api.ec2_id(10) == "i-0000000a"
    assert api.ec2_id(0xDEADBEEF1) == "i-deadbeef1"
    for n in (1, 255, 2**32 - 1, 2**40):
        assert api.parse_ec2_id(api.ec2_id(n)) == n
    for bad in ("i-0a", "i-XYZXYZXY", "0000000a", "i-", "ami-0000000a", "i-0000000A"):
        assert api.parse_ec2_id(bad) is None
    with pytest.raises(ValueError):
        api.ec2_id(-1)


@pytest.mark.parametrize(("method", "path", "name", "params"), [
    ("GET", "/", "versions", {}),
    ("GET", "/v2/", "versions", {}),
    ("GET", "/healthcheck", "healthcheck", {}),
    ("GET", "/v2/servers", "list_servers", {}),
    ("GET", "/v2/servers/", "list_servers", {}),
    ("POST", "/v2/servers", "create_server", {}),
    ("GET", "/v2/servers/detail", "list_servers_detail", {}),
    ("GET", "/v2/servers/abc", "show_server", {"sid": "abc"}),
    ("HEAD", "/v2/servers", "list_servers", {}),
    ("GET", "/v2/os-services", "list_services", {}),
    ("GET", "/ec2/instances", "ec2_list", {}),
    ("GET", "/ec2/instances/i-0000000a", "ec2_show", {"iid": "i-0000000a"}),
])
def test_routes(method, path, name, params):
    assert api.route(method, path) == (name, params)


def test_route_errors():
    with pytest.raises(api.HTTPError) as e:
        api.route("GET", "/v2/flavors")
    assert e.value.status == 404
    with pytest.raises(api.HTTPError) as e:
        api.route("DELETE", "/v2/servers")
    assert e.value.status == 405 and "GET, POST" in e.value.message
    assert e.value.body() == {"methodNotAllowed": {"code": 405, "message": e.value.message}}


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_backoff_policy():
    clock = Clock()
    b = api.Backoff(initial=0.2, maximum=1.0, clock=clock)
    assert b.attempt() and b.attempt()  # healthy: everyone may connect
    b.failed("refused")
    assert b.last_error == "refused"
    assert not b.attempt()  # within the delay: fail fast
    clock.t += 0.2
    assert b.attempt()  # one caller gets to try...
    assert not b.attempt()  # ...the others keep failing fast while it runs
    b.failed()
    assert b.delay == pytest.approx(0.4) and b.last_error == "refused"
    for _ in range(5):
        b.failed()
    assert b.delay == 1.0  # capped
    assert b.remaining() == pytest.approx(1.0)
    clock.t += 1.0
    assert b.attempt()
    b.succeeded()
    assert b.failures == 0 and b.attempt() and b.attempt() and b.last_error is None


def test_bus_check_reports_last_contact_without_blocking():
    clock = Clock()
    bus = api.RabbitBus({"hosts": ["m1"], "user": "u", "password": "p", "vhost": "v"}, "api-1", clock=clock)
    with pytest.raises(api.Unavailable, match="not connected yet"):
        bus.check()
    bus._ok()
    bus.check()
    clock.t += 2.0
    bus.check()
    clock.t += 2.0  # no contact for 4 s: the keepalive thread is stuck or the broker hangs
    with pytest.raises(api.Unavailable, match="no successful contact"):
        bus.check()
    bus._ok()
    bus._failed("Stream connection lost")
    with pytest.raises(api.Unavailable, match="Stream connection lost"):
        bus.check()
    clock.t += 0.5
    bus._ok()
    bus.check()


def test_keepalive_loop_survives_any_error():
    calls = []
    stop = threading.Event()

    def fn():
        calls.append(1)
        if len(calls) == 1:
            raise api.Unavailable("db", "down")
        if len(calls) == 2:
            raise RuntimeError("a driver bug")
        if len(calls) >= 4:
            stop.set()

    t = threading.Thread(target=api.keepalive_loop, args=("db", fn, 0.01, stop))
    t.start()
    t.join(5)
    assert not t.is_alive() and len(calls) >= 4


def test_rotate_hosts_spreads_api_nodes():
    hosts = ["m1", "m2", "m3"]
    firsts = [api.rotate_hosts(hosts, f"api-{i}")[0] for i in range(1, 5)]
    assert firsts == ["m1", "m2", "m3", "m1"]
    assert sorted(api.rotate_hosts(hosts, "api-2")) == hosts
    assert api.rotate_hosts(hosts, "weird") == hosts
    assert api.rotate_hosts([], "api-1") == []


def test_parse_create():
    assert api.parse_create(b'{"server": {"name": " web-1 ", "flavorRef": "1"}}') == "web-1"
    for bad in (b"", b"nope", b"[]", b'{"server": 1}', b'{"server": {}}', b'{"server": {"name": ""}}',
                b'{"server": {"name": 5}}', ('{"server": {"name": "%s"}}' % ("x" * 256)).encode(), b"\xff"):
        with pytest.raises(api.HTTPError) as e:
            api.parse_create(bad)
        assert e.value.status == 400


def test_parse_limit():
    assert api.parse_limit({}) == 100
    assert api.parse_limit({"limit": ["5"]}) == 5
    assert api.parse_limit({"limit": ["100000"]}) == 1000
    for bad in ("0", "-1", "x"):
        with pytest.raises(api.HTTPError):
            api.parse_limit({"limit": [bad]})


T0 = datetime(2026, 1, 2, 3, 4, 5, 678000)


def _row(n=10, status="BUILD", host=None):
    return {"id": n, "uuid": "6f1c2a3b-0000-4000-8000-00000000000a", "name": "web", "status": status,
            "created_by": "api-1", "host": host, "created_at": T0, "updated_at": T0}


def test_views():
    row = _row(status="ACTIVE", host="api-3")
    d = api.server_detail(row, "http://vip")
    assert d["id"] == row["uuid"] and d["status"] == "ACTIVE" and d["created"] == "2026-01-02T03:04:05Z"
    assert d["OS-EXT-SRV-ATTR:host"] == "api-3" and d["OS-EXT-STS:vm_state"] == "active"
    assert d["OS-EXT-SRV-ATTR:instance_name"] == "instance-0000000a"
    assert d["links"][0] == {"rel": "self", "href": f"http://vip/v2/servers/{row['uuid']}"}
    links = api.server_links("", row["uuid"])
    assert api.server_brief(row, "") == {"id": row["uuid"], "name": "web", "links": links}
    e = api.ec2_instance(row)
    assert e["instanceId"] == "i-0000000a" and e["instanceState"] == {"code": 16, "name": "running"}
    assert api.ec2_instance(_row(status="BUILD"))["instanceState"]["name"] == "pending"
    assert api.iso(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


def test_service_view_up_down():
    row = {"host": "api-1", "binary": "halab-api", "updated_at": T0, "report_count": 7, "age_s": 0.4}
    v = api.service_view(row, 5.0)
    assert v["state"] == "up" and v["age_s"] == 0.4 and v["status"] == "enabled" and v["host"] == "api-1"
    assert api.service_view({**row, "age_s": 6}, 5.0)["state"] == "down"
    assert api.service_view({**row, "age_s": None}, 5.0)["state"] == "down"


# ---- in-memory stand-ins (test-only) ------------------------------------------------------------


class MemStore:
    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.services: dict[str, dict] = {}
        self.down = False
        self.n = 0
        self.lock = threading.Lock()

    def _check(self):
        if self.down:
            raise api.Unavailable("db", "Can't connect to MySQL server (timed out)")

    def ping(self):
        self._check()

    def list_servers(self, limit, brief=False):
        self._check()
        rows = sorted(self.rows.values(), key=lambda r: -r["id"])[:limit]
        # Like the real store: a brief listing gets only what the brief view may use.
        return [{"uuid": r["uuid"], "name": r["name"]} for r in rows] if brief else rows

    def get_server(self, sid):
        self._check()
        return self.rows.get(sid)

    def get_server_by_num(self, n):
        self._check()
        return next((r for r in self.rows.values() if r["id"] == n), None)

    def create_server(self, sid, name, node):
        self._check()
        with self.lock:
            self.n += 3  # Galera steps auto-increments by the cluster size
            self.rows[sid] = {"id": self.n, "uuid": sid, "name": name, "status": "BUILD", "created_by": node,
                              "host": None, "created_at": T0, "updated_at": T0}
        return dict(self.rows[sid])

    def set_status(self, sid, status, host, only_from="BUILD"):
        self._check()
        row = self.rows.get(sid)
        if row is None or row["status"] != only_from:
            return False
        row.update(status=status, host=host)
        return True

    def heartbeat(self, node):
        self._check()
        self.services[node] = {"host": node, "binary": "halab-api", "updated_at": T0, "report_count": 1,
                               "age_s": 0.25}

    def list_services(self):
        self._check()
        return list(self.services.values())


class MemBus:
    def __init__(self):
        self.messages: list[bytes] = []
        self.down = False

    def publish(self, message):
        if self.down:
            raise api.Unavailable("mq", "connection refused")
        self.messages.append(json.dumps(message).encode())

    def check(self):
        if self.down:
            raise api.Unavailable("mq", "connection refused")


@pytest.fixture
def served():
    store, bus = MemStore(), MemBus()
    app = api.App("api-2", store, bus, 5.0, lambda: {"consuming": True})
    server = api.ThreadingHTTPServer(("127.0.0.1", 0), api.make_handler(app))
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield server.server_address[1], store, bus
    server.shutdown()
    server.server_close()


def _req(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), (json.loads(raw) if raw else None)


def test_create_activate_and_read_through_http(served):
    port, store, bus = served
    status, headers, body = _req(port, "POST", "/v2/servers", {"server": {"name": "vm-1"}})
    assert status == 202 and headers["X-Served-By"] == "api-2"
    server = body["server"]
    assert server["status"] == "BUILD" and server["name"] == "vm-1"
    assert headers["Location"].endswith(f"/v2/servers/{server['id']}")
    assert json.loads(bus.messages[0]) == {"id": server["id"], "requested_by": "api-2"}

    # the worker's job, as the Worker thread does it for each delivery
    assert api.handle_message(store, "api-4", bus.messages[0]) == "ack"
    status, _, body = _req(port, "GET", f"/v2/servers/{server['id']}")
    assert status == 200 and body["server"]["status"] == "ACTIVE"
    assert body["server"]["OS-EXT-SRV-ATTR:host"] == "api-4"

    status, _, body = _req(port, "GET", "/v2/servers")
    assert status == 200 and body["servers"][0]["id"] == server["id"] and set(body["servers"][0]) == {
        "id", "name", "links"}
    status, _, body = _req(port, "GET", "/v2/servers/detail")
    assert body["servers"][0]["status"] == "ACTIVE"

    status, _, body = _req(port, "GET", "/ec2/instances")
    inst = body["instancesSet"][0]
    assert status == 200 and inst["instanceId"] == "i-00000003"
    assert inst["instanceState"]["name"] == "running"
    status, _, body = _req(port, "GET", "/ec2/instances/i-00000003")
    assert status == 200 and body["instancesSet"][0]["tagSet"] == [{"key": "Name", "value": "vm-1"}]
    assert _req(port, "GET", "/ec2/instances/i-00000004")[0] == 404
    assert _req(port, "GET", f"/ec2/instances/{server['id']}")[0] == 404  # a Nova id is not an EC2 id


def test_handle_message_verdicts():
    store = MemStore()
    row = store.create_server("6f1c2a3b-0000-4000-8000-00000000000a", "x", "api-1")
    msg = json.dumps({"id": row["uuid"]}).encode()
    store.down = True
    assert api.handle_message(store, "api-1", msg) == "requeue"
    store.down = False
    assert api.handle_message(store, "api-1", msg) == "ack"
    assert api.handle_message(store, "api-1", msg) == "ack"  # already ACTIVE: nothing to do
    assert api.handle_message(store, "api-1", b"garbage") == "ack"  # dropped, not redelivered forever
    assert api.handle_message(store, "api-1", b'{"id": "../../etc"}') == "ack"


def test_errors_are_nova_shaped_and_name_the_node(served):
    port, _, _ = served
    status, headers, body = _req(port, "GET", "/v2/servers/6f1c2a3b-0000-4000-8000-0000000000ff")
    assert status == 404 and headers["X-Served-By"] == "api-2" and body["itemNotFound"]["code"] == 404
    assert _req(port, "GET", "/v2/servers/not-a-uuid")[0] == 404
    status, headers, body = _req(port, "POST", "/v2/servers", b"{not json")
    assert status == 400 and "badRequest" in body and headers["X-Served-By"] == "api-2"
    status, _, body = _req(port, "PUT", "/v2/servers")
    assert status == 405
    status, _, body = _req(port, "GET", "/nowhere")
    assert status == 404


def test_heartbeats_listed_like_service_list(served):
    port, store, _ = served
    store.heartbeat("api-1")
    store.heartbeat("api-2")
    status, _, body = _req(port, "GET", "/v2/os-services")
    assert status == 200
    assert {s["host"]: s["state"] for s in body["services"]} == {"api-1": "up", "api-2": "up"}


def test_healthcheck_states(served):
    port, store, bus = served
    status, headers, body = _req(port, "GET", "/healthcheck")
    assert status == 200 and body["status"] == "ok" and body["db"]["ok"] and body["mq"]["ok"]
    assert body["node"] == "api-2" and headers["X-Served-By"] == "api-2"
    bus.down = True  # read-only cloud: still in rotation
    status, _, body = _req(port, "GET", "/healthcheck")
    assert status == 200 and body["status"] == "degraded" and body["mq"] == {
        "ok": False, "error": "connection refused", "ms": body["mq"]["ms"]}
    assert _req(port, "GET", "/healthcheck?strict=1")[0] == 503
    store.down = True
    status, _, body = _req(port, "GET", "/healthcheck")
    assert status == 503 and body["status"] == "down"


def test_write_without_queue_fails_and_marks_error(served):
    port, store, bus = served
    bus.down = True
    status, headers, body = _req(port, "POST", "/v2/servers", {"server": {"name": "vm"}})
    assert status == 503 and headers["Retry-After"] == "1" and "serviceUnavailable" in body
    assert [r["status"] for r in store.rows.values()] == ["ERROR"]
    assert _req(port, "GET", "/v2/servers")[0] == 200  # reads still work


def test_db_down_is_503_fast(served):
    port, store, _ = served
    store.down = True
    status, _, body = _req(port, "GET", "/v2/servers")
    assert status == 503 and "db unavailable" in body["serviceUnavailable"]["message"]


def test_oversized_body_refused(served):
    port, _, _ = served
    status, headers, _ = _req(port, "POST", "/v2/servers", b"x" * (api.MAX_BODY + 1))
    assert status == 413 and headers["X-Served-By"] == "api-2"


# ---- Galera health endpoint --------------------------------------------------------------------


def test_clustercheck_verdict():
    assert clustercheck.verdict({"wsrep_local_state": "4", "wsrep_ready": "ON"})[0] == 200
    assert clustercheck.verdict({"wsrep_local_state": "2", "wsrep_ready": "ON"}) == (
        503, "Galera node is not synced (Donor/Desynced, ready=ON).\r\n")
    assert clustercheck.verdict({"wsrep_local_state": "4", "wsrep_ready": "OFF"})[0] == 503
    assert clustercheck.verdict({})[0] == 503
    assert clustercheck.verdict(None)[0] == 503


# ---- the DB pool when the Galera node behind HAProxy dies --------------------------------------

class _FakePyMySQL:
    """Stands in for PyMySQL's module (not on the host): connections that either work or have been
    cut by HAProxy, as after `on-marked-down shutdown-sessions`."""

    class err:  # mirrors pymysql.err
        class OperationalError(Exception):
            pass
        InterfaceError = InternalError = OperationalError

    class cursors:  # mirrors pymysql.cursors
        DictCursor = object

    def __init__(self):
        self.opened = 0

    def connect(self, **_kw):
        self.opened += 1
        return _FakeConn(self, cut=False)


class _FakeConn:
    def __init__(self, mod, cut):
        self.mod, self.cut, self.closed = mod, cut, False

    def cursor(self):
        conn = self

        class Cur:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, *_a):
                if conn.cut:
                    raise conn.mod.err.OperationalError(2013, "Lost connection to MySQL server")

            def fetchall(self):
                return []
        return Cur()

    def close(self):
        self.closed = True


def test_one_cut_pooled_connection_empties_the_pool(monkeypatch):
    """db-1 died, HAProxy cut every session to it: the first request that meets a dead pooled
    connection must not leave the other dead ones for the next requests to fail on."""
    fake = _FakePyMySQL()
    monkeypatch.setitem(sys.modules, "pymysql", fake)
    store = api.MySQLStore({"host": "vip", "user": "u", "password": "p", "database": "d"}, pool_size=8)
    store._schema_ready = True
    dead = [_FakeConn(fake, cut=True) for _ in range(5)]
    for c in dead:
        store._pool.put_nowait(c)
    for _ in range(5):  # every request succeeds, none fails on a sibling of a dead connection
        store.ping()
    assert all(c.closed for c in dead)
    assert fake.opened == 1  # one fresh connection, reused from then on
