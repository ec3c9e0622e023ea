#!/usr/bin/python3
"""halab lab API: a small, honest, OpenStack-shaped "servers" service.

Runs on every api node under systemd (halab-api.service), on Debian 12's python3 with PyMySQL and pika
from the image. Only the standard library is needed to import this file (the drivers are imported
when first used), so its logic is unit-tested on the host.

HTTP (every response carries ``X-Served-By: <node>``):
  GET  /                          version document
  GET  /v2/servers                {"servers": [{"id", "name", "links"}]}, newest first (?limit=N)
  GET  /v2/servers/detail         {"servers": [<full server>]}
  GET  /v2/servers/<uuid>         {"server": <full server>}
  POST /v2/servers                {"server": {"name": ...}} -> 202 {"server": {... "status": "BUILD"}}
  GET  /v2/os-services            {"services": [...]} heartbeat rows with age, like `nova service-list`
  GET  /ec2/instances             {"instancesSet": [...]} the same servers with EC2 ids i-<hex>
  GET  /ec2/instances/<i-hex>     {"instancesSet": [<one>]}
  GET  /healthcheck               {"status": "ok"|"degraded"|"down", "db": {...}, "mq": {...}}
                                  200 while the DB answers (the node can serve), else 503. MQ down
                                  alone is "degraded" with 200: reads still work, writes fail (the
                                  cloud goes read-only). ?strict=1 answers 503 unless both are up.

A POST inserts the row (BUILD) and publishes {"id": uuid} to a durable quorum queue; a worker thread
on every api node consumes it and sets the server ACTIVE with its own node as host. A heartbeat
thread upserts (node, "halab-api") in `services` every second; /v2/os-services shows the age DB-side.

Failures: DB and MQ connections use short timeouts (connect 2 s, read/write 5 s, AMQP heartbeat 5 s,
blocked-connection timeout 5 s). After a failed connect, new connects are held back by a Backoff
(0.2 s doubling to 1 s) during which requests fail fast with 503 instead of piling up; a request never
waits more than a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import queue
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOG = logging.getLogger("halab-api")
BINARY = "halab-api"
DEFAULT_QUEUE = "halab.servers"
MAX_BODY = 64 * 1024
DB_CONNECT_TIMEOUT = 2
DB_RW_TIMEOUT = 5
MQ_HEARTBEAT = 5
MQ_BLOCKED_TIMEOUT = 5
MQ_SOCKET_TIMEOUT = 2
MQ_LOCK_TIMEOUT = 5.0
MQ_PUBLISH_TIMEOUT = 3.0  # a publish still unconfirmed after this is cut off by the keepalive thread


# ---- errors ------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A dependency (db or mq) cannot be reached right now."""

    def __init__(self, what: str, detail: str):
        super().__init__(f"{what} unavailable: {detail}")
        self.what = what
        self.detail = detail


class HTTPError(Exception):
    """An error answered to the client in Nova's shape: {"itemNotFound": {"code": 404, ...}}."""

    KINDS = {400: "badRequest", 404: "itemNotFound", 405: "methodNotAllowed", 413: "badRequest",
             503: "serviceUnavailable", 500: "computeFault"}

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {self.KINDS.get(self.status, "computeFault"): {"code": self.status, "message": self.message}}


# ---- reconnect policy --------------------------------------------------------------------------


class Backoff:
    """When may we try to (re)connect? After a failure, wait ``delay`` (doubling from ``initial`` up
    to ``maximum``); while waiting, callers fail fast. Once the wait is over exactly one caller gets
    to try (``attempt()`` returns True once) and the others keep failing fast until it reports.
    A success resets everything."""

    def __init__(self, initial: float = 0.2, maximum: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self.failures = 0
        self.delay = 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def attempt(self) -> bool:
        with self._lock:
            now = self.clock()
            if self.failures == 0:
                return True
            if now < self._next:
                return False
            # Claim this attempt: others wait for at least another delay while it runs.
            self._next = now + self.delay
            return True

    def remaining(self) -> float:
        with self._lock:
            return 0.0 if self.failures == 0 else max(0.0, self._next - self.clock())

    def failed(self, error: str = "") -> None:
        with self._lock:
            self.failures += 1
            self.delay = min(self.maximum, self.initial * (2 ** (self.failures - 1)))
            self._next = self.clock() + self.delay
            self.last_error = error or self.last_error

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self.delay = 0.0
            self._next = 0.0
            self.last_error = None


# ---- pure helpers ------------------------------------------------------------------------------

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EC2_RE = re.compile(r"^i-([0-9a-f]{8,16})$")


def ec2_id(n: int) -> str:
    """Nova's EC2 layer showed the instance's integer id as i-%08x; so do we."""
    if n < 0:
        raise ValueError("negative id")
    return f"i-{n:08x}"


def parse_ec2_id(text: str) -> int | None:
    m = _EC2_RE.match(text)
    return int(m.group(1), 16) if m else None


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text))


def rotate_hosts(hosts: list[str], node: str) -> list[str]:
    """Each api node tries the MQ nodes starting at a different one, spreading the connections."""
    if not hosts:
        return []
    m = re.search(r"(\d+)$", node)
    k = (int(m.group(1)) - 1) % len(hosts) if m else 0
    return hosts[k:] + hosts[:k]


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_VM_STATE = {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}
_EC2_STATE = {"BUILD": (0, "pending"), "ACTIVE": (16, "running"), "ERROR": (48, "terminated")}


def server_links(base_url: str, sid: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base_url}/v2/servers/{sid}"},
            {"rel": "bookmark", "href": f"{base_url}/servers/{sid}"}]


def server_brief(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {"id": row["uuid"], "name": row["name"], "links": server_links(base_url, row["uuid"])}


def server_detail(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {
        "id": row["uuid"],
        "name": row["name"],
        "status": row["status"],
        "created": iso(row["created_at"]),
        "updated": iso(row["updated_at"]),
        "OS-EXT-STS:vm_state": _VM_STATE.get(row["status"], row["status"].lower()),
        "OS-EXT-SRV-ATTR:host": row.get("host"),
        # Nova's own integer id leaks here, as it did (instance_name_template = instance-%08x).
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{row['id']:08x}",
        "halab:created_by": row.get("created_by"),
        "links": server_links(base_url, row["uuid"]),
    }


def ec2_instance(row: dict[str, Any]) -> dict[str, Any]:
    code, name = _EC2_STATE.get(row["status"], (48, "terminated"))
    return {
        "instanceId": ec2_id(row["id"]),
        "instanceState": {"code": code, "name": name},
        "launchTime": iso(row["created_at"]),
        "privateDnsName": row.get("host"),
        "tagSet": [{"key": "Name", "value": row["name"]}],
    }


def service_view(row: dict[str, Any], down_after_s: float) -> dict[str, Any]:
    age = float(row["age_s"]) if row.get("age_s") is not None else None
    return {
        "binary": row["binary"],
        "host": row["host"],
        "zone": "internal",
        "status": "enabled",
        "state": "up" if age is not None and age <= down_after_s else "down",
        "updated_at": iso(row["updated_at"]),
        "age_s": None if age is None else round(age, 3),
        "report_count": int(row.get("report_count") or 0),
    }


def parse_create(body: bytes) -> str:
    """The name from a Nova create request; HTTPError 400 otherwise."""
    try:
        data = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "Malformed request body: not JSON") from None
    server = data.get("server") if isinstance(data, dict) else None
    if not isinstance(server, dict):
        raise HTTPError(400, "Malformed request body: expected {\"server\": {...}}")
    name = server.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise HTTPError(400, "Invalid input: 'name' must be a non-empty string of at most 255 characters")
    return name.strip()


def parse_limit(qs: dict[str, list[str]], default: int = 100, maximum: int = 1000) -> int:
    raw = qs.get("limit", [str(default)])[-1]
    try:
        n = int(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid limit {raw!r}: must be an integer") from None
    if n < 1:
        raise HTTPError(400, "Invalid limit: must be >= 1")
    return min(n, maximum)


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/?$"), "versions"),
    ("GET", re.compile(r"^/v2/?$"), "versions"),
    ("GET", re.compile(r"^/healthcheck$"), "healthcheck"),
    ("GET", re.compile(r"^/v2/servers$"), "list_servers"),
    ("POST", re.compile(r"^/v2/servers$"), "create_server"),
    ("GET", re.compile(r"^/v2/servers/detail$"), "list_servers_detail"),
    ("GET", re.compile(r"^/v2/servers/(?P<sid>[^/]+)$"), "show_server"),
    ("GET", re.compile(r"^/v2/os-services$"), "list_services"),
    ("GET", re.compile(r"^/ec2/instances$"), "ec2_list"),
    ("GET", re.compile(r"^/ec2/instances/(?P<iid>[^/]+)$"), "ec2_show"),
]


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """(handler name, path parameters); HTTPError 404/405 when nothing matches."""
    path = path.rstrip("/") or "/"
    allowed = []
    for m, rx, name in ROUTES:
        match = rx.match(path)
        if match:
            if m == method or (method == "HEAD" and m == "GET"):
                return name, match.groupdict()
            allowed.append(m)
    if allowed:
        methods = ", ".join(sorted(set(allowed)))
        raise HTTPError(405, f"Method {method} not allowed on {path} (allowed: {methods})")
    raise HTTPError(404, f"No such resource: {path}")


def handle_message(store: Any, node: str, body: bytes) -> str:
    """The worker's job for one queue message: "ack" (done or unusable), "requeue" (DB down)."""
    try:
        data = json.loads(body.decode("utf-8"))
        sid = data["id"]
        if not isinstance(sid, str) or not is_uuid(sid):
            raise ValueError("bad id")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        LOG.warning("dropping malformed message (%d bytes)", len(body))
        return "ack"
    try:
        changed = store.set_status(sid, "ACTIVE", node)
    except Unavailable:
        return "requeue"
    if not changed:
        LOG.info("server %s: no BUILD row to activate (gone, or done by another worker)", sid)
    return "ack"


# ---- the application (storage and bus are injected) ------------------------------------------


class Response:
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class App:
    def __init__(self, node: str, store: Any, bus: Any, down_after_s: float = 5.0,
                 worker_state: Callable[[], dict[str, Any]] | None = None):
        self.node = node
        self.store = store
        self.bus = bus
        self.down_after_s = down_after_s
        self.worker_state = worker_state or (lambda: {})

    def handle(self, method: str, target: str, body: bytes, host: str) -> Response:
        parts = urlsplit(target)
        qs = parse_qs(parts.query)
        base = f"http://{host}" if host else ""
        try:
            name, params = route(method, parts.path)
            return getattr(self, "h_" + name)(params=params, qs=qs, body=body, base=base)
        except HTTPError as exc:
            return Response(exc.status, exc.body())
        except Unavailable as exc:
            return Response(503, HTTPError(503, str(exc)).body(), {"Retry-After": "1"})

    # handlers -----------------------------------------------------------------------------------
    def h_versions(self, base: str, **_: Any) -> Response:
        return Response(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                            "links": [{"rel": "self", "href": f"{base}/v2/"}]}]})

    def h_healthcheck(self, qs: dict[str, list[str]], **_: Any) -> Response:
        db = self._probe(self.store.ping)
        mq = self._probe(self.bus.check)
        status = "ok" if db["ok"] and mq["ok"] else ("degraded" if db["ok"] else "down")
        strict = qs.get("strict", ["0"])[-1] not in ("0", "", "false")
        code = 200 if (db["ok"] and (mq["ok"] or not strict)) else 503
        return Response(code, {"node": self.node, "status": status, "db": db, "mq": mq,
                               "worker": self.worker_state()})

    @staticmethod
    def _probe(fn: Callable[[], None]) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            fn()
        except Unavailable as exc:
            return {"ok": False, "error": exc.detail, "ms": round((time.monotonic() - t0) * 1000, 1)}
        return {"ok": True, "error": None, "ms": round((time.monotonic() - t0) * 1000, 1)}

    def h_list_servers(self, qs: dict[str, list[str]], base: str, **_: Any) -> Response:
        rows = self.store.list_servers(parse_limit(qs), brief=True)
        return Response(200, {"servers": [server_brief(r, base) for r in rows]})

    def h_list_servers_detail(self, qs: dict[str, list[str]], base: str, **_: Any) -> Response:
        rows = self.store.list_servers(parse_limit(qs))
        return Response(200, {"servers": [server_detail(r, base) for r in rows]})

    def h_show_server(self, params: dict[str, str], base: str, **_: Any) -> Response:
        sid = params["sid"]
        row = self.store.get_server(sid) if is_uuid(sid) else None
        if row is None:
            raise HTTPError(404, f"Instance {sid} could not be found.")
        return Response(200, {"server": server_detail(row, base)})

    def h_create_server(self, body: bytes, base: str, **_: Any) -> Response:
        name = parse_create(body)
        sid = str(uuid.uuid4())
        row = self.store.create_server(sid, name, self.node)
        try:
            self.bus.publish({"id": sid, "requested_by": self.node})
        except Unavailable as exc:
            # Without the queue nothing will build it: say so on the row too (best effort).
            with contextlib.suppress(Unavailable):
                self.store.set_status(sid, "ERROR", None, only_from="BUILD")
            raise Unavailable("mq", f"{exc.detail}; server {sid} set to ERROR") from None
        return Response(202, {"server": server_detail(row, base)},
                        {"Location": f"{base}/v2/servers/{sid}"})

    def h_list_services(self, **_: Any) -> Response:
        rows = self.store.list_services()
        return Response(200, {"services": [service_view(r, self.down_after_s) for r in rows]})

    def h_ec2_list(self, qs: dict[str, list[str]], **_: Any) -> Response:
        rows = self.store.list_servers(parse_limit(qs))
        return Response(200, {"instancesSet": [ec2_instance(r) for r in rows]})

    def h_ec2_show(self, params: dict[str, str], **_: Any) -> Response:
        iid = params["iid"]
        n = parse_ec2_id(iid)
        row = self.store.get_server_by_num(n) if n is not None else None
        if row is None:
            raise HTTPError(404, f"The instance ID '{iid}' does not exist")
        return Response(200, {"instancesSet": [ec2_instance(row)]})


class Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a page load's burst of calls through HAProxy
    # overflowed it, the dropped SYN was retried after 1 s, HAProxy's connect timed out and
    # `observe layer4` marked a healthy node DOWN.
    request_queue_size = 256
    daemon_threads = True


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "halab-api"
        sys_version = ""
        timeout = 15  # a stuck client cannot hold a thread forever
        # Headers and body leave in one segment: unbuffered, they went as two writes, and on a
        # keep-alive connection Nagle held the body back until the client's delayed ACK (~40 ms
        # added to every response). The buffer is flushed after each request by http.server.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            body = b""
            length = self.headers.get("Content-Length")
            if length:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0 or n > MAX_BODY:
                    self._send(Response(413 if n > MAX_BODY else 400,
                                        HTTPError(400, "Invalid Content-Length").body()), close=True)
                    return
                body = self.rfile.read(n)
            try:
                resp = app.handle(self.command, self.path, body, self.headers.get("Host", ""))
            except Exception:
                LOG.exception("unhandled error on %s %s", self.command, self.path)
                resp = Response(500, HTTPError(500, "Internal error").body())
            self._send(resp)

        def _send(self, resp: Response, close: bool = False) -> None:
            data = (json.dumps(resp.body) + "\n").encode()
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Served-By", app.node)
            self.send_header("X-Openstack-Request-Id", f"req-{uuid.uuid4()}")
            for k, v in resp.headers.items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("%s %s", self.address_string(), format % args)

    return Handler


# ---- MariaDB -----------------------------------------------------------------------------------

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS servers (
        id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        uuid CHAR(36) NOT NULL,
        name VARCHAR(255) NOT NULL,
        status VARCHAR(16) NOT NULL,
        created_by VARCHAR(64) NOT NULL,
        host VARCHAR(64) NULL,
        created_at DATETIME(6) NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        UNIQUE KEY uuid (uuid),
        KEY created_at (created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS services (
        host VARCHAR(64) NOT NULL,
        `binary` VARCHAR(64) NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        report_count BIGINT UNSIGNED NOT NULL DEFAULT 0,
        PRIMARY KEY (host, `binary`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
]
_SERVER_COLS = "id, uuid, name, status, created_by, host, created_at, updated_at"


class MySQLStore:
    """PyMySQL connections in a small pool. A pooled connection that fails at once empties the pool
    (its siblings share its fate) and the statement is retried once on a new connection; new
    connections are gated by a Backoff."""

    def __init__(self, db: dict[str, Any], backoff: Backoff | None = None, pool_size: int = 8):
        self.db = db
        self.backoff = backoff or Backoff()
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=pool_size)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def _connect(self) -> Any:
        import pymysql

        if not self.backoff.attempt():
            raise Unavailable("db", f"reconnecting (last error: {self.backoff.last_error})")
        try:
            conn = pymysql.connect(
                host=self.db["host"], port=int(self.db.get("port", 3306)), user=self.db["user"],
                password=self.db["password"], database=self.db["database"], autocommit=True,
                connect_timeout=DB_CONNECT_TIMEOUT, read_timeout=DB_RW_TIMEOUT,
                write_timeout=DB_RW_TIMEOUT, charset="utf8mb4",
                cursorclass=pymysql.cursors.DictCursor, init_command="SET time_zone = '+00:00'",
            )
            if not self._schema_ready:
                with self._schema_lock, conn.cursor() as cur:
                    for stmt in SCHEMA:
                        cur.execute(stmt)
                    self._schema_ready = True
        except Exception as exc:  # whatever stops us from getting a session: the DB is unavailable
            self.backoff.failed(_why(exc))
            raise Unavailable("db", _why(exc)) from None
        self.backoff.succeeded()
        return conn

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        import pymysql

        t0 = time.monotonic()
        for _ in range(2):
            try:
                conn, pooled = self._pool.get_nowait(), True
            except queue.Empty:
                conn, pooled = self._connect(), False
            try:
                with conn.cursor() as cur:
                    result = fn(cur)
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, pymysql.err.InternalError,
                    OSError) as exc:
                with contextlib.suppress(Exception):
                    conn.close()
                if pooled and time.monotonic() - t0 < 1.0:
                    # A stale pooled connection that failed at once: the others went the same way
                    # (HAProxy cut every session to the node that died), so drop them all and retry
                    # on a fresh one instead of failing requests until the pool drains.
                    self._drop_pool()
                    continue
                self.backoff.failed(_short(exc))
                raise Unavailable("db", _short(exc)) from None
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            try:
                self._pool.put_nowait(conn)
            except queue.Full:
                conn.close()
            return result
        raise Unavailable("db", "connection lost twice")

    def _drop_pool(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def ping(self) -> None:
        self._run(lambda cur: cur.execute("SELECT 1"))

    def list_servers(self, limit: int, brief: bool = False) -> list[dict[str, Any]]:
        # The brief list needs two columns: decoding rows (datetimes above all) in pure-Python
        # PyMySQL is most of a list's CPU on an emulated guest.
        cols = "uuid, name" if brief else _SERVER_COLS

        def q(cur: Any) -> list[dict[str, Any]]:
            cur.execute(f"SELECT {cols} FROM servers ORDER BY created_at DESC, id DESC LIMIT %s", (limit,))
            return list(cur.fetchall())
        return self._run(q)

    def get_server(self, sid: str) -> dict[str, Any] | None:
        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(f"SELECT {_SERVER_COLS} FROM servers WHERE uuid = %s", (sid,))
            return cur.fetchone()
        return self._run(q)

    def get_server_by_num(self, n: int) -> dict[str, Any] | None:
        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(f"SELECT {_SERVER_COLS} FROM servers WHERE id = %s", (n,))
            return cur.fetchone()
        return self._run(q)

    def create_server(self, sid: str, name: str, node: str) -> dict[str, Any]:
        def q(cur: Any) -> dict[str, Any]:
            cur.execute("INSERT INTO servers (uuid, name, status, created_by, created_at, updated_at) "
                        "VALUES (%s, %s, 'BUILD', %s, NOW(6), NOW(6))", (sid, name, node))
            cur.execute(f"SELECT {_SERVER_COLS} FROM servers WHERE uuid = %s", (sid,))
            return cur.fetchone()
        return self._run(q)

    def set_status(self, sid: str, status: str, host: str | None, only_from: str = "BUILD") -> bool:
        def q(cur: Any) -> bool:
            n = cur.execute("UPDATE servers SET status = %s, host = %s, updated_at = NOW(6) "
                            "WHERE uuid = %s AND status = %s", (status, host, sid, only_from))
            return n > 0
        return self._run(q)

    def heartbeat(self, node: str) -> None:
        self._run(lambda cur: cur.execute(
            "INSERT INTO services (host, `binary`, updated_at, report_count) VALUES (%s, %s, NOW(6), 1) "
            "ON DUPLICATE KEY UPDATE updated_at = NOW(6), report_count = report_count + 1",
            (node, BINARY)))

    def list_services(self) -> list[dict[str, Any]]:
        def q(cur: Any) -> list[dict[str, Any]]:
            cur.execute("SELECT host, `binary`, updated_at, report_count, "
                        "TIMESTAMPDIFF(MICROSECOND, updated_at, NOW(6)) / 1000000 AS age_s "
                        "FROM services ORDER BY host, `binary`")
            return list(cur.fetchall())
        return self._run(q)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _why(exc: BaseException) -> str:
    return _short(exc) if str(exc) else type(exc).__name__


# ---- RabbitMQ ----------------------------------------------------------------------------------


def _mq_params(mq: dict[str, Any], node: str) -> list[Any]:
    import pika

    creds = pika.PlainCredentials(mq["user"], mq["password"])
    return [
        pika.ConnectionParameters(
            host=h, port=int(mq.get("port", 5672)), virtual_host=mq["vhost"], credentials=creds,
            heartbeat=MQ_HEARTBEAT, blocked_connection_timeout=MQ_BLOCKED_TIMEOUT,
            socket_timeout=MQ_SOCKET_TIMEOUT, stack_timeout=MQ_BLOCKED_TIMEOUT,
            connection_attempts=1, retry_delay=0, client_properties={"connection_name": f"{node}"},
        )
        for h in rotate_hosts(list(mq["hosts"]), node)
    ]


def _declare(ch: Any, queue_name: str) -> None:
    ch.queue_declare(queue=queue_name, durable=True, arguments={"x-queue-type": "quorum"})


class RabbitBus:
    """One publishing connection shared by request threads (pika is not thread-safe: a lock, taken
    with a timeout) with publisher confirms, so a 202 means the broker has the message.

    Any failure to connect or publish is an Unavailable: pika raises more than AMQPError (e.g. its
    connection workflow's AMQPConnectorStackTimeout when a broker accepts TCP but never answers).
    ``check()`` never blocks: it reports what the last ping/publish saw, so /healthcheck stays fast
    (HAProxy's check timeout is about a second) even while the broker hangs."""

    STALE_AFTER_S = 3.0

    def __init__(self, mq: dict[str, Any], node: str, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.mq = mq
        self.node = node
        self.queue = mq.get("queue", DEFAULT_QUEUE)
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ch: Any = None
        self._ok_at: float | None = None
        self._err_at: float | None = None
        self._err = "not connected yet"
        self._inflight: tuple[float, Any] | None = None  # (started, connection) of a running publish

    # health bookkeeping -------------------------------------------------------------------------
    def _ok(self) -> None:
        self._ok_at = self.clock()

    def _failed(self, why: str) -> Unavailable:
        self._err_at, self._err = self.clock(), why
        return Unavailable("mq", why)

    def check(self) -> None:
        """Unavailable unless the last contact with the broker succeeded, recently."""
        now = self.clock()
        if self._ok_at is None:
            raise Unavailable("mq", self._err)
        if self._err_at is not None and self._err_at >= self._ok_at:
            raise Unavailable("mq", self._err)
        if now - self._ok_at > self.STALE_AFTER_S:
            raise Unavailable("mq", f"no successful contact for {now - self._ok_at:.0f}s")

    # connection ---------------------------------------------------------------------------------
    def _close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _ensure(self) -> Any:
        import pika

        if self._conn is not None and self._conn.is_open and self._ch is not None and self._ch.is_open:
            return self._ch
        self._close()
        if not self.backoff.attempt():
            raise self._failed(f"reconnecting (last error: {self.backoff.last_error})")
        conn = None
        try:
            conn = pika.BlockingConnection(_mq_params(self.mq, self.node))
            ch = conn.channel()
            ch.confirm_delivery()
            _declare(ch, self.queue)
        except Exception as exc:  # any way of not getting a channel means: the broker is unavailable
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self.backoff.failed(_why(exc))
            raise self._failed(_why(exc)) from None
        self._conn, self._ch = conn, ch
        self.backoff.succeeded()
        return ch

    @contextlib.contextmanager
    def _locked(self, timeout: float = MQ_LOCK_TIMEOUT) -> Iterator[None]:
        if not self._lock.acquire(timeout=timeout):
            raise self._failed("publisher busy (a publish is waiting for the broker)")
        try:
            yield
        finally:
            self._lock.release()

    def publish(self, message: dict[str, Any]) -> None:
        import pika

        body = json.dumps(message).encode()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        t0 = self.clock()
        with self._locked():
            for attempt in range(2):
                fresh = self._conn is None
                ch = self._ensure()
                self._inflight = (self.clock(), self._conn)
                try:
                    ch.basic_publish(exchange="", routing_key=self.queue, body=body, properties=props,
                                     mandatory=True)
                    self._ok()
                    return
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise Unavailable("mq", f"broker refused the message ({type(exc).__name__})") from None
                except Exception as exc:
                    self._close()
                    # A stale connection that failed at once is retried on a fresh one; a publish
                    # that already waited (broker hung until the heartbeat gave up) is not.
                    if fresh or attempt or self.clock() - t0 > 1.0:
                        self.backoff.failed(_why(exc))
                        raise self._failed(_why(exc)) from None
                finally:
                    self._inflight = None

    def _cut_overdue_publish(self) -> None:
        """A publish waiting for its confirm longer than MQ_PUBLISH_TIMEOUT (broker hung, or a
        quorum queue without a majority) would otherwise wait until pika's heartbeat check gives up
        (10-20 s). Shutting the socket down, the one thing safe from another thread, makes the
        waiting publish fail at once; the next request reconnects."""
        inflight = self._inflight
        if inflight is None or self.clock() - inflight[0] <= MQ_PUBLISH_TIMEOUT:
            return
        sock = getattr(getattr(getattr(inflight[1], "_impl", None), "_transport", None), "_sock", None)
        if sock is not None:
            LOG.warning("publish unconfirmed for %.0fs: dropping the broker connection", MQ_PUBLISH_TIMEOUT)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def ping(self) -> None:
        """Services the publishing connection's heartbeats (called every second by the heartbeat
        thread) and records whether the broker answers."""
        self._cut_overdue_publish()
        with self._locked(timeout=1.0):
            self._ensure()
            try:
                self._conn.process_data_events(time_limit=0)
            except Exception as exc:
                self._close()
                self.backoff.failed(_why(exc))
                raise self._failed(_why(exc)) from None
            self._ok()


class Worker(threading.Thread):
    """Consumes the queue and activates servers; reconnects on its own."""

    def __init__(self, mq: dict[str, Any], node: str, store: Any, stop: threading.Event):
        super().__init__(name="worker", daemon=True)
        self.mq = mq
        self.node = node
        self.store = store
        self.stop_event = stop
        self.queue = mq.get("queue", DEFAULT_QUEUE)
        self.backoff = Backoff(maximum=2.0)
        self.consuming = False
        self.processed = 0

    def state(self) -> dict[str, Any]:
        return {"consuming": self.consuming, "processed": self.processed,
                "last_error": self.backoff.last_error}

    def run(self) -> None:
        import pika

        while not self.stop_event.is_set():
            if not self.backoff.attempt():
                self.stop_event.wait(max(0.05, self.backoff.remaining()))
                continue
            conn = None
            try:
                conn = pika.BlockingConnection(_mq_params(self.mq, self.node))
                ch = conn.channel()
                _declare(ch, self.queue)
                ch.basic_qos(prefetch_count=16)
                self.backoff.succeeded()
                self.consuming = True
                LOG.info("worker consuming %s", self.queue)
                for method, _props, body in ch.consume(self.queue, inactivity_timeout=1.0):
                    if self.stop_event.is_set():
                        break
                    if method is None:
                        continue
                    verdict = handle_message(self.store, self.node, body)
                    if verdict == "ack":
                        ch.basic_ack(method.delivery_tag)
                        self.processed += 1
                    else:
                        ch.basic_nack(method.delivery_tag, requeue=True)
                        self.stop_event.wait(0.2)  # the DB is down: do not spin on redeliveries
            except Exception as exc:  # never let the worker thread die: log once, back off, retry
                if self.consuming or self.backoff.failures == 0:
                    LOG.warning("worker lost the queue: %s", _why(exc))
                self.backoff.failed(_why(exc))
            finally:
                self.consuming = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()


def keepalive_loop(what: str, fn: Callable[[], None], interval: float, stop: threading.Event) -> None:
    """Call ``fn`` every ``interval`` s (the DB heartbeat row; the MQ publisher's ping), logging
    only changes between reachable and unreachable. One thread each, so a hung DB cannot delay the
    MQ keepalive (and the other way round)."""
    ok = True
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            fn()
            if not ok:
                LOG.info("%s reachable again", what)
            ok = True
        except Exception as exc:  # the loop must outlive any failure
            if ok:
                LOG.warning("%s", exc if isinstance(exc, Unavailable) else f"{what}: {_why(exc)}")
            ok = False
        stop.wait(max(0.05, interval - (time.monotonic() - t0)))


# ---- main --------------------------------------------------------------------------------------


def load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    for key in ("node", "db", "mq"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing {key!r}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="halab lab API")
    ap.add_argument("--config", default="/etc/halab/api.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(threadName)s: %(message)s")
    # pika logs every connect step at INFO and each lost socket with a traceback; our own one-line
    # messages say when the DB or the broker goes away and comes back.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    cfg = load_config(args.config)
    node = cfg["node"]
    stop = threading.Event()
    store = MySQLStore(cfg["db"])
    bus = RabbitBus(cfg["mq"], node)
    worker = Worker(cfg["mq"], node, store, stop)
    app = App(node, store, bus, float(cfg.get("service_down_after_s", 5.0)), worker.state)
    address = (cfg.get("listen", "0.0.0.0"), int(cfg.get("port", 8080)))
    server = Server(address, make_handler(app))

    def _stop(_sig: int, _frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.start()
    interval = float(cfg.get("heartbeat_interval_s", 1.0))
    threading.Thread(target=keepalive_loop, name="heartbeat", daemon=True,
                     args=("db", lambda: store.heartbeat(node), interval, stop)).start()
    threading.Thread(target=keepalive_loop, name="mq-keepalive", daemon=True,
                     args=("mq", bus.ping, 1.0, stop)).start()
    LOG.info("%s serving on %s:%s", node, *server.server_address[:2])
    server.serve_forever(poll_interval=0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
