"""Per-node NoCloud seeds (user-data, meta-data, network-config) from the templates in ``cloud-init/``.

``cloud-init/common/user-data.yaml`` and ``cloud-init/<role>/role.yaml`` list the files each node
gets: a ``source`` template (``{{name}}`` placeholders, unknown names are an error; ``verbatim: true``
copies as is) or a ``generated`` file made here (haproxy.cfg, api.json, ...), optionally only for some
``profiles``. Every role ships ``/usr/local/lib/halab/setup.sh``, which cloud-init's runcmd runs once
per instance: it enables and starts only that role's services, in order, then writes the marker
``/var/lib/halab/ready`` (or ``/var/lib/halab/failed`` naming the step that failed).

How halab knows a node finished: over SSH, ``cloud-init status --wait`` returns (0 done, non-zero
on error) and ``/var/lib/halab/ready`` exists with the node's current instance-id (see
``READY_CHECK_COMMAND`` and ``parse_ready``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from halab.errors import HalabError
from halab.lab.config import LabConfig, Node
from halab.lab.haproxy_config import render_haproxy_cfg
from halab.lab.secrets import LabKeys, LabSecrets
from halab.paths import project_root
from halab.ports import AMQP_PORT, API_PORT, GALERA_CHECK_PORT, GALERA_PORT

READY_MARKER = "/var/lib/halab/ready"
FAILED_MARKER = "/var/lib/halab/failed"
# Exit 0 and print the marker when the node finished; exit 1 with the failure record otherwise.
READY_CHECK_COMMAND = (
    f"cloud-init status --wait >/dev/null 2>&1; "
    f"if [ -f {READY_MARKER} ]; then cat {READY_MARKER}; exit 0; fi; "
    f"cat {FAILED_MARKER} 2>/dev/null; exit 1"
)
MQ_QUEUE = "halab.servers"
GALERA_FORCE_AFTER_S = 60
GALERA_GIVE_UP_S = 900

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class CloudInitError(HalabError):
    """A template in cloud-init/ is broken (a halab bug, or a local edit gone wrong)."""


@dataclass(frozen=True, repr=False)
class NodeSeed:
    """The three NoCloud files for one node. user_data holds secrets: repr is redacted."""

    node: str
    instance_id: str
    user_data: str
    meta_data: str
    network_config: str

    def __repr__(self) -> str:
        return f"NodeSeed(node={self.node!r}, instance_id={self.instance_id!r}, <contents redacted>)"

    __str__ = __repr__

    def files(self) -> dict[str, str]:
        """File name on the ``cidata`` volume -> content."""
        return {"user-data": self.user_data, "meta-data": self.meta_data,
                "network-config": self.network_config}


@dataclass(frozen=True)
class ReadyInfo:
    instance_id: str
    node: str
    role: str
    finished: str
    uptime_s: float | None


def parse_ready(text: str) -> ReadyInfo:
    """Parse the content of READY_MARKER (key=value lines)."""
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        uptime = float(kv.get("uptime", ""))
    except ValueError:
        uptime = None
    return ReadyInfo(kv.get("instance-id", ""), kv.get("node", ""), kv.get("role", ""),
                     kv.get("finished", ""), uptime)


def templates_dir() -> Path:
    return project_root() / "cloud-init"


def render_template(text: str, variables: dict[str, str], where: str = "template") -> str:
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in variables:
            missing.append(key)
            return m.group(0)
        return str(variables[key])

    out = _PLACEHOLDER.sub(sub, text)
    if missing:
        raise CloudInitError(f"{where}: unknown placeholder(s) {', '.join(sorted(set(missing)))}")
    return out


@cache
def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _manifest(rel: str) -> dict[str, Any]:
    path = templates_dir() / rel
    try:
        data = yaml.safe_load(_read_text(str(path)))
    except (OSError, yaml.YAMLError) as exc:
        raise CloudInitError(f"{path}: cannot read role template: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise CloudInitError(f"{path}: expected a mapping with a 'files' list")
    return data


def role_services(cfg: LabConfig, role: str) -> list[str]:
    """The systemd units a node of this role runs (enabled by its setup script)."""
    services = _manifest(f"{role}/role.yaml").get("services", {})
    return list(services.get(cfg.profile, services.get("default", [])))


def vrrp_router_id(cfg: LabConfig) -> int:
    return int(hashlib.sha256(f"vrrp/{cfg.name}".encode()).hexdigest(), 16) % 254 + 1


# Role setup timeouts (cloud-init/*/setup.sh) are written in KVM seconds; a TCG guest emulates
# every instruction, 10-20x slower, and on a busy host slower still: its limits are this many times.
TIMEOUT_SCALE = {"kvm": 1, "tcg": 15}


def timeout_scale(cfg: LabConfig) -> int:
    """The factor for this lab's accelerator: lab.yaml's choice, else the host's cached KVM verdict
    (`up` resolves it before rendering seeds), else TCG's (the safe side)."""
    accel = cfg.accel if cfg.accel in TIMEOUT_SCALE else None
    if accel is None:
        from halab.lab.accel import cached_verdict

        verdict = cached_verdict()
        accel = verdict.accel if verdict is not None else "tcg"
    return TIMEOUT_SCALE.get(accel, TIMEOUT_SCALE["tcg"])


MQ_DISCOVERY_INTERVAL_S = 2
MQ_DISCOVERY_MAX_S = 480


def mq_cluster_formation(cfg: LabConfig, node: Node, mq_nodes: list[Node]) -> str:
    """rabbitmq.conf lines that cluster a blank node at its first boot, inside the server itself:
    the first mq node lists only itself (so it starts a cluster at once), every other one lists the
    first and retries until the first node's database answers. That replaces `rabbitmqctl stop_app`,
    `reset`, `join_cluster` and `start_app` (an Erlang VM each: 10-55 s of a TCG vCPU apiece) on
    every joining node. Peer discovery runs only on a blank node; setup.sh still joins by hand if
    it gave up (the node then starts standalone, as RabbitMQ documents)."""
    if len(mq_nodes) < 2:
        return "# One broker: no cluster to form."
    # The first node's boot on the lab's accelerator, but under the unit's start timeout (Debian's
    # rabbitmq-server.service: TimeoutStartSec=10min; the server waits in discovery while starting).
    seconds = min(60 * timeout_scale(cfg), MQ_DISCOVERY_MAX_S)
    lines = ["# Cluster formation at first boot (classic config peer discovery), written by halab.",
             "cluster_formation.peer_discovery_backend = classic_config",
             f"cluster_formation.classic_config.nodes.1 = rabbit@{mq_nodes[0].name}",
             f"cluster_formation.discovery_retry_limit = {max(1, seconds // MQ_DISCOVERY_INTERVAL_S)}",
             f"cluster_formation.discovery_retry_interval = {MQ_DISCOVERY_INTERVAL_S * 1000}"]
    return "\n".join(lines)


def node_variables(cfg: LabConfig, node: Node, secrets: LabSecrets) -> dict[str, str]:
    nodes = cfg.nodes()
    by_role = {r: [n for n in nodes if n.role == r] for r in ("haproxy", "api", "db", "mq")}
    db_ips = [n.ip for n in by_role["db"]]
    hosts_lines = "\n".join(f"{n.ip} {n.name} {cfg.domain_name(n)}" for n in nodes)
    peers = [n.ip for n in by_role["haproxy"] if n.name != node.name]
    return {
        "lab": cfg.name,
        "profile": cfg.profile,
        "timeout_scale": str(timeout_scale(cfg)),
        "node_name": node.name,
        "node_ip": node.ip,
        "role": node.role,
        "prefix": str(cfg.ip_network.prefixlen),
        "gateway": cfg.gateway,
        "vip": cfg.vip,
        "hosts_lines": hosts_lines,
        "api_port": str(API_PORT),
        "galera_check_port": str(GALERA_CHECK_PORT),
        "first_db": by_role["db"][0].name,
        "first_mq": by_role["mq"][0].name,
        "mq_cluster_formation": mq_cluster_formation(cfg, node, by_role["mq"]),
        "db_ips_csv": ",".join(db_ips),
        "db_peer_ips": " ".join(n.ip for n in by_role["db"] if n.name != node.name),
        "galera_cluster_name": f"halab-{cfg.name}",
        "galera_force_after": str(GALERA_FORCE_AFTER_S),
        "galera_give_up": str(GALERA_GIVE_UP_S),
        "vrrp_router_id": str(vrrp_router_id(cfg)),
        # haproxy-1 is preferred; priorities stay distinct so exactly one node wins an election.
        "vrrp_priority": str(max(1, 150 - 10 * (node.index - 1))),
        "vrrp_peers": "\n".join(f"        {ip}" for ip in peers),
        "db_name": secrets.db_name,
        "db_app_user": secrets.db_app_user,
        "db_check_user": secrets.db_check_user,
        "mq_user": secrets.mq_user,
        "mq_vhost": secrets.mq_vhost,
        "db_root_password": secrets.db_root_password,
        "db_app_password": secrets.db_app_password,
        "db_check_password": secrets.db_check_password,
        "galera_sst_password": secrets.galera_sst_password,
        "keepalived_auth_pass": secrets.keepalived_auth_pass,
    }


def api_config(cfg: LabConfig, node: Node, secrets: LabSecrets) -> dict[str, Any]:
    """/etc/halab/api.json: in ``ha`` the API reaches Galera through HAProxy on the VIP."""
    nodes = cfg.nodes()
    db_host = cfg.vip if cfg.profile == "ha" else next(n.ip for n in nodes if n.role == "db")
    return {
        "node": node.name,
        "listen": "0.0.0.0",
        "port": API_PORT,
        "db": {"host": db_host, "port": GALERA_PORT, "user": secrets.db_app_user,
               "password": secrets.db_app_password, "database": secrets.db_name},
        "mq": {"hosts": [n.ip for n in nodes if n.role == "mq"], "port": AMQP_PORT, "user": secrets.mq_user,
               "password": secrets.mq_password, "vhost": secrets.mq_vhost, "queue": MQ_QUEUE},
        "heartbeat_interval_s": 1.0,
        "service_down_after_s": 5.0,
    }


def rabbit_password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbitmq_definitions(secrets: LabSecrets) -> str:
    """Users, vhost and permissions imported by RabbitMQ itself at boot (``load_definitions``).

    Each ``rabbitmqctl`` call boots an Erlang VM, seconds of CPU on a TCG guest; five of them made
    mq-1 the last node ready by ~90 s. With definitions configured RabbitMQ also skips creating
    ``guest``. The salt is derived from the lab's secrets so re-rendering gives the same seed (a
    changed seed would make Terraform replace the node).
    """
    salt = hashlib.sha256(b"halab-rabbitmq-salt:" + secrets.erlang_cookie.encode()).digest()[:4]
    user = secrets.mq_user
    return json.dumps({
        "users": [{"name": user, "password_hash": rabbit_password_hash(secrets.mq_password, salt),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": secrets.mq_vhost}],
        "permissions": [{"user": user, "vhost": secrets.mq_vhost,
                         "configure": ".*", "write": ".*", "read": ".*"}],
    }, indent=2) + "\n"


def _generated(name: str, cfg: LabConfig, node: Node, secrets: LabSecrets) -> str:
    if name == "haproxy.cfg":
        return render_haproxy_cfg(cfg, secrets)
    if name == "api.json":
        return json.dumps(api_config(cfg, node, secrets), indent=2) + "\n"
    if name == "clustercheck.json":
        return json.dumps({"user": secrets.db_check_user, "password": secrets.db_check_password,
                           "socket": "/run/mysqld/mysqld.sock", "port": GALERA_CHECK_PORT}, indent=2) + "\n"
    if name == "erlang.cookie":
        return secrets.erlang_cookie
    if name == "mq-password":
        return secrets.mq_password
    if name == "rabbitmq-definitions.json":
        return rabbitmq_definitions(secrets)
    raise CloudInitError(f"unknown generated file {name!r} in a role template")


def _write_files(cfg: LabConfig, node: Node, secrets: LabSecrets, variables: dict[str, str]) -> list[dict]:
    out: list[dict[str, Any]] = []
    for rel in ("common/user-data.yaml", f"{node.role}/role.yaml"):
        for entry in _manifest(rel)["files"]:
            profiles = entry.get("profiles")
            if profiles and cfg.profile not in profiles:
                continue
            path = entry["path"]
            if "generated" in entry:
                content = _generated(entry["generated"], cfg, node, secrets)
            else:
                src = templates_dir() / entry["source"]
                try:
                    text = _read_text(str(src))
                except OSError as exc:
                    raise CloudInitError(f"{rel}: {path}: cannot read {src}: {exc}") from None
                content = text if entry.get("verbatim") else render_template(text, variables, str(src))
            out.append({"path": path, "content": content, "owner": str(entry.get("owner", "root:root")),
                        "permissions": str(entry.get("permissions", "0644"))})
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Multi-line strings as literal blocks: readable seeds, byte-exact file contents.
    if "\n" in data and not any(ch in data for ch in "\r\t") and not data.endswith((" ", "\n\n")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def render_network_config(cfg: LabConfig, node: Node) -> str:
    data = {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": node.mac},
                "set-name": "eth0",
                "addresses": [f"{node.ip}/{cfg.ip_network.prefixlen}"],
                "routes": [{"to": "0.0.0.0/0", "via": cfg.gateway}],
                "nameservers": {"addresses": [cfg.gateway]},
            }
        },
    }
    if cfg.hosts:  # the VXLAN tunnel between the hosts takes 50 bytes of a 1500-byte underlay frame
        data["ethernets"]["eth0"]["mtu"] = TUNNEL_MTU
    return _dump(data)


TUNNEL_MTU = 1450


def render_user_data(cfg: LabConfig, node: Node, secrets: LabSecrets, keys: LabKeys) -> str:
    variables = node_variables(cfg, node, secrets)
    host_key = keys.host_keys.get(node.name)
    if host_key is None:
        raise CloudInitError(f"no SSH host key for node {node.name!r}: run load_or_create_keys(cfg) first")
    data: dict[str, Any] = {
        "hostname": node.name,
        "preserve_hostname": False,
        "manage_etc_hosts": False,
        # No default user (the list replaces the image's [default]): root only, by the lab's key
        # (minbase has no sudo). root exists, so cloud-init only applies settings to it.
        "users": [{"name": "root", "lock_passwd": False}],
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_authorized_keys": [keys.client.public_openssh],
        "ssh_deletekeys": True,
        # cloud-init 22.4 (Debian 12) rejects [] here; with ssh_keys given it generates nothing anyway.
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {
            "ed25519_private": host_key.private_openssh,
            "ed25519_public": host_key.public_openssh,
        },
        "growpart": {"mode": "off"},  # the root filesystem has no partition table
        "write_files": _write_files(cfg, node, secrets, variables),
        **({"bootcmd": [[EARLY_HOOK]]} if _has_early_hook(node.role) else {}),
        "runcmd": [["/usr/local/lib/halab/setup.sh"]],
        "final_message": f"halab {cfg.name}/{node.name}: cloud-init finished after $UPTIME s",
    }
    return "#cloud-config\n" + _dump(data)


EARLY_HOOK = "/usr/local/lib/halab/early.sh"


def _has_early_hook(role: str) -> bool:
    """A role whose template installs EARLY_HOOK: cloud-init's bootcmd runs it on every boot right
    after write_files (it must be idempotent and quick)."""
    return any(f.get("path") == EARLY_HOOK for f in _manifest(f"{role}/role.yaml")["files"])


def _instance_id(cfg: LabConfig, node: Node, user_data: str, network_config: str) -> str:
    digest = hashlib.sha256((user_data + "\0" + network_config).encode()).hexdigest()[:12]
    return f"{cfg.name}-{node.name}-{digest}"


def render_node(cfg: LabConfig, node: Node | str, secrets: LabSecrets, keys: LabKeys) -> NodeSeed:
    """The NoCloud seed for one node. Deterministic for the same inputs; the instance-id changes
    whenever user-data or network-config does, so cloud-init re-applies a changed config."""
    n = cfg.node(node) if isinstance(node, str) else node
    user_data = render_user_data(cfg, n, secrets, keys)
    network_config = render_network_config(cfg, n)
    iid = _instance_id(cfg, n, user_data, network_config)
    meta_data = _dump({"instance-id": iid, "local-hostname": n.name})
    return NodeSeed(node=n.name, instance_id=iid, user_data=user_data, meta_data=meta_data,
                    network_config=network_config)


def render_all(cfg: LabConfig, secrets: LabSecrets, keys: LabKeys) -> dict[str, NodeSeed]:
    return {n.name: render_node(cfg, n, secrets, keys) for n in cfg.nodes()}
