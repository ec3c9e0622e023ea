"""`status`'s role health: one reading of every role probe on the running lab, as plain data."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from halab.lab.config import LabConfig
from halab.lab.secrets import load_or_create_secrets
from halab.lab.services import read_quorum_queues, read_services, summary_line
from halab.lab.ssh import SSHUnavailable
from halab.live.engine import LabEngine, LabShell
from halab.observe.probes import (
    GaleraSample,
    HAProxySample,
    HealthSample,
    HeartbeatSample,
    LibvirtProbe,
    ProbeSet,
    RabbitSample,
)


def _quorum_queues(cfg: LabConfig, vhost: str, nodes: list[str]) -> dict[str, object]:
    shell = LabShell(cfg)  # its own connections: NodeSSH is not shared between threads
    try:
        return read_quorum_queues(cfg, shell.run, vhost, nodes)
    finally:
        shell.close()


def role_health(engine: LabEngine) -> dict[str, Any]:
    """One reading of every role probe, as plain data for `status`: HAProxy backend states per
    balancer, Galera size and node states, RabbitMQ members and partitions, API health and
    heartbeat age per API node, and (several balancers) which one holds the VIP."""
    cfg = engine.cfg
    secrets = load_or_create_secrets(cfg)
    run = engine.faults_ssh()
    probes = ProbeSet.for_lab(cfg, engine.virt, ssh=run,
                              stats_auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password))
    out: dict[str, Any] = {"haproxy": {}, "api": {}, "heartbeat_age_s": {}}
    running = [n for n, st in engine.virt.states().items() if str(st) == "running"]
    quorum = None
    if sum(1 for n in cfg.nodes() if n.role == "mq") > 1:
        # A cluster: where the queue's replicas are. One rabbitmqctl (an Erlang VM: 15-55 s on a
        # TCG vCPU) while the other readings are taken, not after them.
        mq_nodes = [n.name for n in cfg.nodes() if n.role == "mq" and n.name in running]
        quorum = ThreadPoolExecutor(max_workers=1).submit(_quorum_queues, cfg, secrets.mq_vhost, mq_nodes)
    for probe in probes.probes:
        if isinstance(probe, LibvirtProbe):
            continue
        s = probe.sample()
        if isinstance(s, HAProxySample):
            out["haproxy"][s.haproxy_node] = ({f"{v.proxy}/{v.server}": v.state for v in s.servers
                                               if v.is_server} if s.ok else {"error": s.error})
        elif isinstance(s, GaleraSample):
            out["galera"] = {"size": s.cluster_size,
                             "nodes": {n: g.state if g else "unreachable" for n, g in s.nodes.items()}}
        elif isinstance(s, RabbitSample):
            out["rabbitmq"] = {"members": dict(s.members),
                               "partitions": (dict(s.status.partitions) if s.status is not None else None)}
            if not s.ok:
                out["rabbitmq"]["error"] = s.error
        elif isinstance(s, HealthSample):
            out["api"] = {n: (f"{st} ({s.details[n]})" if s.details.get(n) else st)
                          for n, st in s.nodes.items()}
        elif isinstance(s, HeartbeatSample):
            out["heartbeat_age_s"] = {n: (round(a, 1) if a is not None else None) for n, a in s.ages.items()}
    balancers = [n.name for n in cfg.nodes() if n.role == "haproxy"]
    if len(balancers) > 1:
        holders = []
        for name in balancers:
            try:
                rc, text, _err = run(name, "ip -o -4 addr show")
            except SSHUnavailable:  # unreachable: it does not hold the VIP as far as anyone can tell
                continue  # (a wrong host key is not swallowed: HostKeyMismatch propagates)
            if rc == 0 and f" {cfg.vip}/" in text:
                holders.append(name)
        out["vip_holders"] = holders
    services = read_services(cfg, run, nodes=running)
    out["services"] = {n: ns.to_dict() for n, ns in services.items()}
    out["services_summary"] = summary_line(services)
    if quorum is not None:
        out["quorum_queues"] = quorum.result()
    return out
