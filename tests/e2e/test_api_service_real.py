"""The lab API service against a real MariaDB and a real RabbitMQ, all on 127.0.0.1 of this host
(no VMs): create -> ACTIVE through the queue, heartbeats, and recovery on its own after the
database and the broker are killed and come back.

Needs Debian's mariadb-server, rabbitmq-server, python3-pymysql and python3-pika on the host (the
same packages as the guests' image); skipped, saying so, where they are missing. Every process is
started here, on loopback ports, and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from halab.lab.cloudinit import api_config, node_variables, render_template
from halab.lab.config import parse_config
from halab.lab.secrets import LabSecrets
from halab.paths import project_root

pytestmark = pytest.mark.e2e

PY = "/usr/bin/python3"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
API_SRC = project_root() / "cloud-init" / "api" / "halab_api.py"


def _require() -> None:
    missing = [what for what, ok in (
        ("mariadb-server", shutil.which("mariadbd", path="/usr/sbin:/usr/bin")
         and shutil.which("mariadb-install-db")),
        ("rabbitmq-server", (RABBIT_BIN / "rabbitmq-server").exists()),
        ("python3-pymysql/python3-pika", Path(PY).exists() and subprocess.run(
            [PY, "-c", "import pymysql, pika"], capture_output=True).returncode == 0),
    ) if not ok]
    if missing:
        pytest.skip(f"SKIPPED LOUDLY: needs {', '.join(missing)} on the host (apt-get install them)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # keep polling until the deadline; report the last problem
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class MariaDB:
    def __init__(self, base: Path):
        self.base = base
        self.port = _free_port()
        self.sock = base / "mysqld.sock"
        self.proc: subprocess.Popen | None = None
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={base / 'data'}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        log = open(self.base / "mysqld.log", "a")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.base / 'data'}", f"--socket={self.sock}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
             f"--pid-file={self.base / 'mysqld.pid'}", "--innodb-buffer-pool-size=32M"],
            stdout=log, stderr=log, start_new_session=True)
        _wait(lambda: self.sql("SELECT 1").returncode == 0, 60, "MariaDB")

    def sql(self, text: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot", "-e", text],
                              capture_output=True, text=True, timeout=30)

    def kill(self) -> None:
        _stop(self.proc)


class RabbitMQ:
    def __init__(self, base: Path):
        self.base = base
        self.port = _free_port()
        self.node = f"halabtest{self.port}@localhost"
        (base / "home").mkdir()
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text("HALABTESTCOOKIE")
        cookie.chmod(0o400)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "disk_free_limit.absolute = 10MB\n")
        (base / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ, "HOME": str(base / "home"), "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(_free_port()), "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"), "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"), "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.base / "rabbit.out", "a")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=log,
                                     stderr=log, start_new_session=True)
        # await_startup fails at once until the node has registered with epmd: poll it.
        _wait(lambda: self.ctl("await_startup", "--timeout", "10", timeout=30).returncode == 0, 120,
              "RabbitMQ", interval=1.0)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def kill(self) -> None:
        _stop(self.proc)


def _req(port: int, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _require()
    base = tmp_path_factory.mktemp("realapi")
    (base / "db").mkdir()
    (base / "mq").mkdir()
    db, mq = MariaDB(base / "db"), RabbitMQ(base / "mq")
    api = None
    try:
        db.start()
        # The database and users exactly as the db nodes create them (cloud-init/db/init.sql).
        cfg = parse_config("", host_mem_mib=1 << 20)
        secrets = LabSecrets.generate()
        init_sql = render_template((project_root() / "cloud-init" / "db" / "init.sql").read_text(),
                                   node_variables(cfg, cfg.node("db-1"), secrets))
        r = db.sql(init_sql)
        assert r.returncode == 0, r.stderr
        mq.start()
        for args in (("add_vhost", "halab"), ("add_user", "halab", secrets.mq_password),
                     ("set_permissions", "-p", "halab", "halab", ".*", ".*", ".*")):
            r = mq.ctl(*args)
            assert r.returncode == 0, r.stdout + r.stderr
        port = _free_port()
        # The api.json the api nodes get, pointed at the loopback services.
        api_cfg = api_config(cfg, cfg.node("api-1"), secrets)
        api_cfg["listen"], api_cfg["port"] = "127.0.0.1", port
        api_cfg["db"].update(host="127.0.0.1", port=db.port)
        api_cfg["mq"].update(hosts=["127.0.0.1"], port=mq.port)
        (base / "api.json").write_text(json.dumps(api_cfg))
        log = open(base / "api.log", "a")  # noqa: SIM115 (kept open for the process)
        api = subprocess.Popen([PY, str(API_SRC), "--config", str(base / "api.json")], stdout=log,
                               stderr=log, start_new_session=True)
        _wait(lambda: _req(port, "GET", "/healthcheck")[0] == 200, 30, "the API to be healthy")
        yield {"port": port, "db": db, "mq": mq, "base": base, "secrets": secrets}
    finally:
        _stop(api)
        mq.kill()
        db.kill()


def _create_and_wait_active(port: int, limit_s: float) -> float:
    t0 = time.monotonic()
    status, headers, body = _req(port, "POST", "/v2/servers", {"server": {"name": "e2e"}})
    assert status == 202, body
    assert headers["X-Served-By"] == "api-1"
    sid = body["server"]["id"]
    _wait(lambda: _req(port, "GET", f"/v2/servers/{sid}")[2]["server"]["status"] == "ACTIVE", limit_s,
          f"server {sid} ACTIVE", interval=0.05)
    return time.monotonic() - t0


def test_create_reaches_active_quickly(lab):
    assert _create_and_wait_active(lab["port"], 2.0) < 2.0
    status, _, body = _req(lab["port"], "GET", "/ec2/instances")
    assert status == 200 and body["instancesSet"][0]["instanceId"].startswith("i-")


def test_heartbeat_fresh(lab):
    time.sleep(1.5)
    status, _, body = _req(lab["port"], "GET", "/v2/os-services")
    svc = {s["host"]: s for s in body["services"]}
    assert status == 200 and svc["api-1"]["state"] == "up" and svc["api-1"]["age_s"] < 2.0


def test_clustercheck_user_reads_status_over_the_socket(lab):
    """The Galera health endpoint's query, as its USAGE-only user from init.sql (no wsrep here, so
    the answer is 503 - but a reachable, authenticated 503, not 'MariaDB down')."""
    s = lab["secrets"]
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import clustercheck as c; "
        "st = c.read_status(json.loads(sys.argv[2])); print(json.dumps([st, c.verdict(st)]))"
    )
    cfg = {"user": s.db_check_user, "password": s.db_check_password, "socket": str(lab["db"].sock)}
    r = subprocess.run([PY, "-c", code, str(project_root() / "cloud-init" / "db"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    status, (http_code, text) = json.loads(r.stdout)
    assert status is not None and "wsrep_local_state" not in status  # reachable, no Galera here
    assert http_code == 503 and "not synced" in text


def test_mq_loss_is_read_only_then_recovers(lab):
    port, mq = lab["port"], lab["mq"]
    mq.kill()
    status, _, _ = _wait(lambda: (r := _req(port, "GET", "/healthcheck"))[2]["status"] == "degraded" and r,
                         15, "healthcheck degraded")
    assert status == 200
    t0 = time.monotonic()
    status, _, body = _req(port, "POST", "/v2/servers", {"server": {"name": "no-mq"}})
    assert "serviceUnavailable" in body
    assert status == 503 and time.monotonic() - t0 < 6.0
    assert _req(port, "GET", "/v2/servers")[0] == 200  # reads still served
    mq.start()
    _wait(lambda: _req(port, "GET", "/healthcheck")[2]["status"] == "ok", 30, "MQ reconnect")
    _wait(lambda: _req(port, "GET", "/healthcheck")[2]["worker"]["consuming"], 30, "worker reconnect")
    assert _create_and_wait_active(port, 5.0) < 5.0


def test_hung_broker_bounds_writes_and_keeps_healthcheck_fast(lab):
    """SIGSTOP the broker: TCP stays up, nothing answers (a suspended VM looks the same). A write
    must give up within a few seconds (not pika's 10-20 s heartbeat check), /healthcheck must stay
    fast (HAProxy's check timeout is about a second) and say degraded, and all must recover."""
    port, mq = lab["port"], lab["mq"]
    os.killpg(mq.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, _, body = _req(port, "POST", "/v2/servers", {"server": {"name": "hung"}}, timeout=30)
        assert status == 503 and time.monotonic() - t0 < 6.0, body
        t0 = time.monotonic()
        status, _, body = _req(port, "GET", "/healthcheck", timeout=30)
        assert status == 200 and body["status"] == "degraded" and time.monotonic() - t0 < 1.0
    finally:
        os.killpg(mq.proc.pid, signal.SIGCONT)
    _wait(lambda: _req(port, "GET", "/healthcheck")[2]["status"] == "ok", 30, "MQ back")
    assert _create_and_wait_active(port, 10.0) < 10.0


def test_hung_database_bounds_requests(lab):
    """SIGSTOP MariaDB: reads must fail within the driver's timeouts (read 5 s), not hang."""
    port, db = lab["port"], lab["db"]
    os.killpg(db.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            status, headers, _ = _req(port, "GET", "/v2/servers", timeout=30)
            assert status == 503 and headers["X-Served-By"] == "api-1"
            assert time.monotonic() - t0 < 8.0
    finally:
        os.killpg(db.proc.pid, signal.SIGCONT)
    _wait(lambda: _req(port, "GET", "/v2/servers")[0] == 200, 30, "DB back")


def test_db_loss_is_503_fast_then_recovers(lab):
    port, db = lab["port"], lab["db"]
    db.kill()
    _wait(lambda: _req(port, "GET", "/healthcheck")[0] == 503, 15, "healthcheck 503")
    t0 = time.monotonic()
    status, headers, _ = _req(port, "GET", "/v2/servers")
    assert status == 503 and headers["X-Served-By"] == "api-1" and time.monotonic() - t0 < 3.0
    db.start()
    _wait(lambda: _req(port, "GET", "/v2/servers")[0] == 200, 30, "DB reconnect")
    assert _create_and_wait_active(port, 5.0) < 5.0
