"""Probes: what the lab looks like from outside, sampled at >= 2 Hz without disturbing it.

Sources (one thread each, so a slow one never holds back another):

* ``libvirt``   — domain state per node (one listing per sample)
* ``haproxy``   — backend server states and counters from ``http://<haproxy>:8404/stats;csv``
* ``health``    — ``GET /healthcheck`` on each API node directly (port 8080), in parallel
* ``heartbeat`` — heartbeat age per API node from ``GET /v2/os-services`` through the VIP
* ``galera``    — ``mysql -e "SHOW STATUS LIKE 'wsrep_%'"`` on each db node over SSH
* ``rabbitmq``  — a cluster (ha): ``rabbitmqctl cluster_status --formatter json`` over SSH, every
  30 s under a guest-side ``timeout``: rabbitmqctl boots an Erlang VM per call, seconds of CPU on a
  TCG guest, and calls that outlived the SSH timeout piled up and took most of the broker's vCPU.
  A single broker (default lab): the AMQP protocol handshake on port 5672 every 0.5 s, from here.
  HAProxy's stats every 0.25 s (detection times are read from them), the rest every 0.5 s.

Parsers are pure functions (tested on recorded output). Every sample reduces to discrete states
(``ProbeSample.states()``); ``ChangeDetector`` turns state changes into timeline events such as
"HAProxy marked api-2 DOWN", with ``data["direction"]`` = "down" / "up" for the measurement.
"""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from halab.errors import HalabError
from halab.lab.config import LabConfig
from halab.observe.timeline import Event, Timeline
from halab.ports import AMQP_PORT, API_PORT, FRONTEND_PORT, STATS_PORT

SshRunner = Callable[[str, str], tuple[int, str, str]]

HEARTBEAT_STALE_S = 3.0

GALERA_QUERY = "mysql -B -e \"SHOW STATUS LIKE 'wsrep_%'\""
RABBIT_QUERY = "timeout 60 rabbitmqctl cluster_status --formatter json"  # 16 s idle, >25 s busy (12 TCG VMs)
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"

# States that mean "this thing is not serving" (a change into one is direction "down").
DOWN_STATES = {"DOWN", "MAINT", "DRAIN", "NOLB", "shut off", "paused", "crashed", "missing", "down",
               "degraded", "stale", "unreachable", "stopped", "partitioned", "non-primary", "not synced",
               "unknown"}


def direction(old: str | None, new: str) -> str | None:
    if old is None or old == new:
        return None
    if new in DOWN_STATES or (new.isdigit() and old.isdigit() and int(new) < int(old)):
        return "down"
    if old in DOWN_STATES or (new.isdigit() and old.isdigit() and int(new) > int(old)):
        return "up"
    return None


# ---- parsers (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HAProxyServer:
    proxy: str  # pxname, e.g. "api_nodes"
    server: str  # svname, e.g. "api-2" (or FRONTEND / BACKEND)
    status: str  # raw: "UP", "UP 1/2", "DOWN", "MAINT", "no check", ...
    check_status: str  # "L7OK", "L4CON", "L4TOUT", ...
    check_desc: str
    last_change_s: int | None  # seconds since the last status change
    sessions_current: int
    sessions_total: int
    conn_errors: int  # econ
    resp_errors: int  # eresp
    retries: int  # wretr
    redispatches: int  # wredis
    check_failures: int  # chkfail
    down_transitions: int  # chkdown
    downtime_s: int | None
    http_5xx: int

    @property
    def state(self) -> str:
        """UP / DOWN / MAINT / DRAIN / NOLB / no check (transitions like "UP 1/2" keep their side)."""
        s = self.status.strip()
        if s.startswith("no check"):
            return "no check"
        return s.split(" ", 1)[0] if s else "unknown"

    @property
    def is_server(self) -> bool:
        return self.server not in ("FRONTEND", "BACKEND")


def _int(v: str | None) -> int:
    try:
        return int(v) if v not in (None, "") else 0
    except ValueError:
        return 0


def _opt_int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


def parse_haproxy_csv(text: str) -> list[HAProxyServer]:
    """HAProxy's ``stats;csv``: a ``# pxname,svname,...`` header line, then one row per proxy/server."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stats CSV (no '# pxname,...' header)")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    out = []
    for row in reader:
        if not row.get("pxname"):
            continue
        out.append(HAProxyServer(
            proxy=row["pxname"], server=row.get("svname") or "", status=row.get("status") or "",
            check_status=row.get("check_status") or "", check_desc=row.get("check_desc") or "",
            last_change_s=_opt_int(row.get("lastchg")), sessions_current=_int(row.get("scur")),
            sessions_total=_int(row.get("stot")), conn_errors=_int(row.get("econ")),
            resp_errors=_int(row.get("eresp")), retries=_int(row.get("wretr")),
            redispatches=_int(row.get("wredis")), check_failures=_int(row.get("chkfail")),
            down_transitions=_int(row.get("chkdown")), downtime_s=_opt_int(row.get("downtime")),
            http_5xx=_int(row.get("hrsp_5xx")),
        ))
    return out


@dataclass(frozen=True)
class GaleraStatus:
    cluster_size: int | None
    cluster_status: str  # "Primary" / "non-Primary" / "Disconnected"
    local_state: str  # wsrep_local_state_comment: "Synced", "Donor/Desynced", "Joining", ...
    ready: bool
    connected: bool
    incoming_addresses: tuple[str, ...]
    raw: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def state(self) -> str:
        if not self.connected or self.cluster_status != "Primary":
            return "non-primary"
        return "synced" if self.local_state == "Synced" and self.ready else "not synced"


def parse_wsrep_status(text: str) -> GaleraStatus:
    """``mysql -e "SHOW STATUS LIKE 'wsrep_%'"`` output: batch (tab-separated, what mysql prints
    when not on a terminal, with or without the header) or the boxed table of an interactive run."""
    vals: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("+"):
            continue
        parts = [p.strip() for p in line.strip("|").split("|")] if line.startswith("|") else line.split("\t")
        if len(parts) < 2 or parts[0] == "Variable_name":
            continue
        vals[parts[0].strip()] = parts[1].strip() if len(parts) > 1 else ""
    if not any(k.startswith("wsrep_") for k in vals):
        raise ValueError("no wsrep_ variables in the output (is Galera enabled?)")
    size = vals.get("wsrep_cluster_size")
    addrs = tuple(a for a in (vals.get("wsrep_incoming_addresses") or "").split(",") if a)
    return GaleraStatus(
        cluster_size=int(size) if size and size.isdigit() else None,
        cluster_status=vals.get("wsrep_cluster_status", ""),
        local_state=vals.get("wsrep_local_state_comment", ""),
        ready=vals.get("wsrep_ready", "").upper() == "ON",
        connected=vals.get("wsrep_connected", "").upper() == "ON",
        incoming_addresses=addrs,
        raw=vals,
    )


@dataclass(frozen=True)
class RabbitStatus:
    cluster_name: str
    disk_nodes: tuple[str, ...]
    running_nodes: tuple[str, ...]
    partitions: dict[str, list[str]]
    alarms: tuple[str, ...]

    def running(self, host: str) -> bool:
        return any(n.split("@", 1)[-1] == host for n in self.running_nodes)


def parse_rabbitmq_cluster_status(text: str) -> RabbitStatus:
    """``rabbitmqctl cluster_status --formatter json`` (RabbitMQ 3.8+: a JSON object with
    ``disk_nodes``, ``running_nodes``, ``partitions``, ``alarms``, ...)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in rabbitmqctl output")
    d = json.loads(text[start:])
    parts = d.get("partitions") or {}
    if isinstance(parts, list):  # older CLIs: [[node, [nodes...]], ...]
        parts = {p[0]: list(p[1]) for p in parts if isinstance(p, list) and len(p) == 2}
    alarms = []
    for a in d.get("alarms") or []:
        alarms.append(f"{a.get('type', 'alarm')}@{a.get('node', '?')}" if isinstance(a, dict) else str(a))
    return RabbitStatus(
        cluster_name=str(d.get("cluster_name") or ""),
        disk_nodes=tuple(d.get("disk_nodes") or ()),
        running_nodes=tuple(d.get("running_nodes") or ()),
        partitions={str(k): list(v) for k, v in parts.items()},
        alarms=tuple(alarms),
    )


def _parse_time(v: Any) -> float | None:
    if isinstance(v, int | float):
        return float(v)
    if not isinstance(v, str) or not v:
        return None
    s = v.strip().replace("Z", "+00:00").replace(" ", "T", 1)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:  # Nova's updated_at is naive UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_os_services(text: str, now: float) -> dict[str, float | None]:
    """Heartbeat age (s) per host from a Nova-like ``{"services": [{"host", "updated_at", ...}]}``.
    An ``age_s`` field, if the API gives one, is used as is."""
    d = json.loads(text)
    services = d.get("services", d) if isinstance(d, dict) else d
    out: dict[str, float | None] = {}
    for s in services or []:
        host = s.get("host") or s.get("node")
        if not host:
            continue
        if isinstance(s.get("age_s"), int | float):
            age: float | None = float(s["age_s"])
        else:
            t = _parse_time(s.get("updated_at") or s.get("heartbeat_at"))
            age = None if t is None else max(0.0, now - t)
        prev = out.get(host)
        out[host] = age if prev is None or (age is not None and age < prev) else prev
    return out


def parse_healthcheck(status: int, body: str) -> tuple[str, dict[str, str]]:
    """("ok" | "degraded" | "down", component -> "ok" / "down").

    The lab API answers ``{"node", "status": "ok"|"degraded"|"down", "db": {"ok": bool, ...},
    "mq": {"ok": bool, ...}, "worker": ...}``; its ``status`` wins when present. Otherwise 200 with
    every named component ok is "ok"."""
    comps: dict[str, str] = {}
    try:
        d = json.loads(body) if body.strip().startswith("{") else {}
    except ValueError:
        d = {}
    if not isinstance(d, dict):
        d = {}
    for k, v in d.items():
        if isinstance(v, bool):
            comps[k] = "ok" if v else "down"
        elif isinstance(v, dict) and isinstance(v.get("ok"), bool):
            comps[k] = "ok" if v["ok"] else "down"
    declared = d.get("status")
    if declared in ("ok", "degraded", "down"):
        return declared, comps
    if status == 200 and all(v == "ok" for v in comps.values()):
        return "ok", comps
    return ("degraded" if comps and any(v == "ok" for v in comps.values()) else "down"), comps


# ---- samples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSample:
    """One reading of one source. ``ok`` False means the probe itself failed (``error`` says why)."""

    source: str
    at: float
    ok: bool = True
    error: str | None = None

    def states(self) -> dict[str, tuple[str | None, str]]:
        """Discrete states for change detection: key -> (node, state)."""
        return {f"{self.source}:probe": (None, "ok" if self.ok else "unreachable")}


@dataclass(frozen=True)
class LibvirtSample(ProbeSample):
    nodes: dict[str, str] = field(default_factory=dict)  # node -> DomainState value

    def states(self) -> dict[str, tuple[str | None, str]]:
        out = super().states()
        out.update({f"libvirt:{n}": (n, s) for n, s in self.nodes.items()})
        return out


@dataclass(frozen=True)
class HAProxySample(ProbeSample):
    haproxy_node: str = ""
    servers: tuple[HAProxyServer, ...] = ()

    def states(self) -> dict[str, tuple[str | None, str]]:
        out = {f"haproxy:{self.haproxy_node}:probe": (None, "ok" if self.ok else "unreachable")}
        for s in self.servers:
            if s.is_server:
                out[f"haproxy:{self.haproxy_node}:{s.proxy}/{s.server}"] = (s.server, s.state)
        return out


@dataclass(frozen=True)
class HealthSample(ProbeSample):
    nodes: dict[str, str] = field(default_factory=dict)  # node -> ok / degraded / down
    details: dict[str, str] = field(default_factory=dict)  # node -> "db unreachable", ...

    def states(self) -> dict[str, tuple[str | None, str]]:
        return {f"health:{n}": (n, s) for n, s in self.nodes.items()}


@dataclass(frozen=True)
class HeartbeatSample(ProbeSample):
    ages: dict[str, float | None] = field(default_factory=dict)  # node -> seconds (None: never)
    stale_after_s: float = HEARTBEAT_STALE_S

    def states(self) -> dict[str, tuple[str | None, str]]:
        out = super().states()
        for n, age in self.ages.items():
            out[f"heartbeat:{n}"] = (n, "fresh" if age is not None and age <= self.stale_after_s else "stale")
        return out


@dataclass(frozen=True)
class GaleraSample(ProbeSample):
    nodes: dict[str, GaleraStatus | None] = field(default_factory=dict)  # None: unreachable

    @property
    def cluster_size(self) -> int | None:
        sizes = [g.cluster_size for g in self.nodes.values() if g and g.cluster_status == "Primary"
                 and g.cluster_size is not None]
        return max(sizes) if sizes else None

    def states(self) -> dict[str, tuple[str | None, str]]:
        out: dict[str, tuple[str | None, str]] = {
            f"galera:{n}": (n, g.state if g else "unreachable") for n, g in self.nodes.items()}
        size = self.cluster_size
        out["galera:size"] = (None, str(size) if size is not None else "0")
        return out


@dataclass(frozen=True)
class RabbitSample(ProbeSample):
    status: RabbitStatus | None = None
    members: dict[str, str] = field(default_factory=dict)  # node -> running / stopped

    def states(self) -> dict[str, tuple[str | None, str]]:
        out = super().states()
        out.update({f"rabbitmq:{n}": (n, s) for n, s in self.members.items()})
        if self.status is not None:
            out["rabbitmq:partitions"] = (None, "partitioned" if any(self.status.partitions.values())
                                          else "none")
        return out


# ---- change detection ---------------------------------------------------------------------------


def _message(key: str, node: str | None, old: str | None, new: str) -> str:
    source = key.split(":", 1)[0]
    if key.endswith(":probe"):
        what = {"haproxy": "HAProxy stats", "libvirt": "libvirt", "heartbeat": "heartbeat listing",
                "rabbitmq": "RabbitMQ status", "galera": "Galera status"}.get(source, source)
        return f"{what} {'unreachable' if new == 'unreachable' else 'reachable again'}"
    if source == "haproxy":
        where = key.split(":")[1]
        return f"HAProxy marked {node} {new}" + (f" (on {where})" if where else "")
    if source == "libvirt":
        return f"{node} is {new}"
    if source == "health":
        return f"{node} health {new}"
    if source == "heartbeat":
        return f"heartbeat from {node} {new}"
    if source == "galera":
        if key == "galera:size":
            return f"Galera cluster size {old} → {new}"
        return f"Galera {node} {new}"
    if source == "rabbitmq":
        if key == "rabbitmq:partitions":
            return f"RabbitMQ partitions: {new}"
        return f"RabbitMQ {node} {new}"
    return f"{key} {old} → {new}"


class ChangeDetector:
    """Remembers each key's last state; returns events for changes (none for the first reading)."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def feed(self, sample: ProbeSample) -> list[Event]:
        events = []
        with self._lock:
            for key, (node, new) in sample.states().items():
                old = self._last.get(key)
                self._last[key] = new
                if old is None or old == new:
                    continue
                events.append(Event(
                    at=sample.at, kind="probe", message=_message(key, node, old, new), node=node,
                    source=sample.source,
                    data={"key": key, "old": old, "new": new, "direction": direction(old, new)},
                ))
        return events

    def current(self) -> dict[str, str]:
        with self._lock:
            return dict(self._last)


# ---- fetching -----------------------------------------------------------------------------------


def http_get(host: str, port: int, path: str, timeout: float, auth: tuple[str, str] | None = None
             ) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Accept": "application/json", "Connection": "close"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


class Probe:
    """A source: ``sample()`` returns one ProbeSample; ``interval_s`` is how often to call it."""

    source = "probe"
    interval_s = 0.5

    def sample(self) -> ProbeSample:  # pragma: no cover - interface
        raise NotImplementedError


class LibvirtProbe(Probe):
    source = "libvirt"

    def __init__(self, virt: Any):
        self.virt = virt

    def sample(self) -> ProbeSample:
        at = time.time()
        try:
            states = self.virt.states()
        except HalabError as exc:
            return LibvirtSample("libvirt", at, False, str(exc))
        return LibvirtSample("libvirt", at, nodes={n: str(getattr(s, "value", s)) for n, s in states.items()})


class HAProxyProbe(Probe):
    source = "haproxy"
    # Detection times are read off this source: 4 Hz keeps the sampling error of "marked DOWN" at
    # 0.25 s; one stats CSV costs HAProxy a few ms.
    interval_s = 0.25

    def __init__(self, haproxy_node: str, host: str, auth: tuple[str, str], port: int = STATS_PORT,
                 timeout: float = 0.4, fetch: Callable[..., tuple[int, dict[str, str], str]] = http_get):
        self.haproxy_node, self.host, self.auth, self.port = haproxy_node, host, auth, port
        self.timeout = timeout
        self.fetch = fetch

    def sample(self) -> ProbeSample:
        at = time.time()
        try:
            status, _h, body = self.fetch(self.host, self.port, "/stats;csv", self.timeout, self.auth)
            if status != 200:
                raise ValueError(f"HTTP {status}" + (" (wrong stats password?)" if status == 401 else ""))
            servers = tuple(parse_haproxy_csv(body))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # Known only when the attempt gave up: stamped then, not when it began (a sample begun
            # just before a kill and timed out after it would date the detection before the fault).
            return HAProxySample("haproxy", time.time(), False, f"{self.host}:{self.port}: {exc}",
                                 haproxy_node=self.haproxy_node)
        return HAProxySample("haproxy", at, haproxy_node=self.haproxy_node, servers=servers)


class HealthProbe(Probe):
    source = "health"

    def __init__(self, nodes: dict[str, str], port: int = API_PORT, timeout: float = 0.4,
                 fetch: Callable[..., tuple[int, dict[str, str], str]] = http_get):
        self.nodes, self.port, self.timeout, self.fetch = nodes, port, timeout, fetch
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="halab-health")

    def _one(self, ip: str) -> tuple[str, str]:
        try:
            status, _h, body = self.fetch(ip, self.port, "/healthcheck", self.timeout)
        except (OSError, http.client.HTTPException) as exc:
            return "down", f"no answer: {exc}"
        state, comps = parse_healthcheck(status, body)
        bad = [f"{k} {v}" for k, v in comps.items() if v != "ok"]
        return state, ", ".join(bad) or ("" if status == 200 else f"HTTP {status}")

    def sample(self) -> ProbeSample:
        at = time.time()
        results = dict(zip(self.nodes, self._pool.map(self._one, self.nodes.values()), strict=True))
        if any(r[1].startswith("no answer") for r in results.values()):
            at = time.time()  # a silence is known when the wait ends (see HAProxyProbe.sample)
        return HealthSample("health", at, nodes={n: r[0] for n, r in results.items()},
                            details={n: r[1] for n, r in results.items()})


class HeartbeatProbe(Probe):
    source = "heartbeat"

    def __init__(self, host: str, nodes: list[str], port: int = FRONTEND_PORT, timeout: float = 0.4,
                 fetch: Callable[..., tuple[int, dict[str, str], str]] = http_get):
        self.host, self.nodes, self.port, self.timeout, self.fetch = host, nodes, port, timeout, fetch

    def sample(self) -> ProbeSample:
        at = time.time()
        try:
            status, _h, body = self.fetch(self.host, self.port, "/v2/os-services", self.timeout)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            ages = parse_os_services(body, at)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return HeartbeatSample("heartbeat", at, False, str(exc))
        return HeartbeatSample("heartbeat", at, ages={n: ages.get(n) for n in self.nodes})


class GaleraProbe(Probe):
    source = "galera"

    def __init__(self, nodes: list[str], ssh: SshRunner):
        self.nodes, self.ssh = nodes, ssh

    def sample(self) -> ProbeSample:
        at = time.time()
        out: dict[str, GaleraStatus | None] = {}
        for n in self.nodes:
            try:
                rc, text, _err = self.ssh(n, GALERA_QUERY)
                out[n] = parse_wsrep_status(text) if rc == 0 else None
            except (HalabError, ValueError):
                out[n] = None
        return GaleraSample("galera", at, nodes=out)


def amqp_answers(host: str, port: int = AMQP_PORT, timeout: float = 0.4) -> bool:
    """True when the broker answers the AMQP 0-9-1 protocol header with a method frame
    (Connection.Start): its listener and the rabbit application are up, not just the port."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(AMQP_HEADER)
            head = sock.recv(7)
    except OSError:
        return False
    return len(head) == 7 and head[0] == 1  # frame type 1: method


class AmqpProbe(Probe):
    """A single broker's liveness, as a client sees it; cheap for the broker (no Erlang VM)."""

    source = "rabbitmq"

    def __init__(self, nodes: dict[str, str], check: Callable[[str], bool] = amqp_answers):
        self.nodes, self.check = nodes, check  # node -> IP

    def sample(self) -> ProbeSample:
        at = time.time()
        members = {n: "running" if self.check(ip) else "stopped" for n, ip in self.nodes.items()}
        return RabbitSample("rabbitmq", at, members=members)


class RabbitProbe(Probe):
    source = "rabbitmq"
    interval_s = 30.0

    def __init__(self, nodes: list[str], ssh: SshRunner, hostnames: dict[str, str] | None = None):
        self.nodes, self.ssh = nodes, ssh
        self.hostnames = hostnames or {n: n for n in nodes}  # node -> host part of rabbit@host
        self._last = 0

    def sample(self) -> ProbeSample:
        at = time.time()
        errors = []
        # The first node that answers speaks for the cluster; start with the one that answered last,
        # so a powered-off mq-1 does not cost an SSH connect timeout on every sample.
        order = self.nodes[self._last:] + self.nodes[:self._last]
        for n in order:
            try:
                rc, text, err = self.ssh(n, RABBIT_QUERY)
                if rc != 0:
                    errors.append(f"{n}: rc {rc} {err.strip()[:200]}")
                    continue
                st = parse_rabbitmq_cluster_status(text)
            except (HalabError, ValueError) as exc:
                errors.append(f"{n}: {exc}")
                continue
            members = {m: "running" if st.running(self.hostnames[m]) else "stopped" for m in self.nodes}
            self._last = self.nodes.index(n)
            return RabbitSample("rabbitmq", at, status=st, members=members)
        return RabbitSample("rabbitmq", at, False, "; ".join(errors) or "no mq node")


# ---- the set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeReading:
    """The latest per-node view, as LabSession reads it."""

    health: str | None = None  # ok / degraded / down
    backend: str | None = None  # HAProxy: UP / DOWN / MAINT ...
    detail: str | None = None


class ProbeSet:
    """Runs probes on their own threads, feeding a timeline with state-change events."""

    def __init__(self, probes: list[Probe], timeline: Timeline | None = None,
                 on_sample: Callable[[ProbeSample], None] | None = None):
        self.probes = probes
        self.timeline = timeline
        self.on_sample = on_sample
        self.detector = ChangeDetector()
        self._latest: dict[str, ProbeSample] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def for_lab(cls, cfg: LabConfig, virt: Any, *, stats_auth: tuple[str, str], ssh: SshRunner | None,
                timeline: Timeline | None = None, rabbit_hostnames: dict[str, str] | None = None
                ) -> ProbeSet:
        nodes = cfg.nodes()
        api = {n.name: n.ip for n in nodes if n.role == "api"}
        t = cfg.probe_timeout_s
        probes: list[Probe] = [LibvirtProbe(virt)]
        probes += [HAProxyProbe(n.name, n.ip, stats_auth, timeout=t) for n in nodes if n.role == "haproxy"]
        probes += [HealthProbe(api, timeout=t), HeartbeatProbe(cfg.vip, list(api), timeout=t)]
        if ssh is not None:
            if cfg.roles["db"].count > 1:  # a single MariaDB has no wsrep status
                probes.append(GaleraProbe([n.name for n in nodes if n.role == "db"], ssh))
            if cfg.roles["mq"].count > 1:
                probes.append(RabbitProbe([n.name for n in nodes if n.role == "mq"], ssh, rabbit_hostnames))
        if cfg.roles["mq"].count == 1:
            probes.append(AmqpProbe({n.name: n.ip for n in nodes if n.role == "mq"}))
        return cls(probes, timeline)

    def sample_once(self, probe: Probe) -> ProbeSample:
        s = probe.sample()
        events = self.detector.feed(s)
        key = f"{s.source}:{getattr(s, 'haproxy_node', '')}"
        with self._lock:
            self._latest[key] = s
        if self.timeline is not None:
            for ev in events:
                self.timeline.add_event(ev)
        if self.on_sample is not None:
            self.on_sample(s)
        return s

    def _loop(self, probe: Probe) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once(probe)
            except Exception as exc:  # a probe bug must not kill the others; it is reported instead
                if self.timeline is not None:
                    self.timeline.event("note", f"{probe.source} probe failed: {exc!r}", source=probe.source)
            next_t += probe.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for p in self.probes:
            t = threading.Thread(target=self._loop, args=(p,), name=f"halab-probe-{p.source}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._threads = []

    def latest_samples(self) -> dict[str, ProbeSample]:
        with self._lock:
            return dict(self._latest)

    def backends_not_up(self) -> list[str]:
        """Why HAProxy is not routing to every backend right now: servers not UP, balancers whose
        stats do not answer or have not been read yet. Empty when every balancer sees all UP."""
        balancers = [p.haproxy_node for p in self.probes if isinstance(p, HAProxyProbe)]
        current = self.detector.current()
        out = []
        for b in balancers:
            probe_state = current.get(f"haproxy:{b}:probe")
            if probe_state != "ok":
                out.append(f"{b} stats {'not read yet' if probe_state is None else probe_state}")
                continue
            prefix = f"haproxy:{b}:"
            out += [f"{key[len(prefix):]} {state} on {b}" for key, state in sorted(current.items())
                    if key.startswith(prefix) and "/" in key and state not in ("UP", "no check")]
        return out

    def latest(self) -> dict[str, NodeReading]:
        """Per node: health (API /healthcheck or cluster state), HAProxy backend state, detail."""
        samples = self.latest_samples()
        health: dict[str, str] = {}
        backend: dict[str, str] = {}
        detail: dict[str, str] = {}
        for s in samples.values():
            if isinstance(s, HealthSample):
                health.update(s.nodes)
                detail.update({n: d for n, d in s.details.items() if d})
            elif isinstance(s, HAProxySample) and s.ok:
                for srv in s.servers:
                    if srv.is_server and (srv.state != "UP" or srv.server not in backend):
                        backend[srv.server] = srv.state
            elif isinstance(s, GaleraSample):
                for n, g in s.nodes.items():
                    health[n] = "ok" if g and g.state == "synced" else "down"
                    detail[n] = g.local_state if g else "unreachable"
            elif isinstance(s, RabbitSample) and s.ok:
                for n, st in s.members.items():
                    health[n] = "ok" if st == "running" else "down"
        names = set(health) | set(backend) | set(detail)
        return {n: NodeReading(health.get(n), backend.get(n), detail.get(n)) for n in names}

