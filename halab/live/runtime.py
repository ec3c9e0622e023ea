"""The live lab's moving parts wired together once: libvirt, faults, SSH, probes, traffic, timeline.

The CLI (`measure`, `watch`, fault commands) and scenarios use this, so every entry point builds the
same thing with the same credentials and strict host-key checking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from halab.chaos.boot_priority import BootPriority, settled_text
from halab.chaos.faults import Faults
from halab.chaos.measure import LabHandles
from halab.lab.config import LabConfig
from halab.lab.lifecycle import LabNotUp, lab_exists, lab_ssh
from halab.lab.secrets import load_or_create_secrets
from halab.lab.services import read_quorum_queues, read_services, summary_line
from halab.lab.ssh import NodeSSH, SSHUnavailable
from halab.lab.virt import LabVirt
from halab.observe.timeline import Timeline


def ssh_runner(cfg: LabConfig, ssh: NodeSSH) -> Callable[[str, str], tuple[int, str, str]]:
    """(node, command) -> (rc, stdout, stderr) over the lab's strict-host-key SSH."""

    def run(node: str, command: str) -> tuple[int, str, str]:
        res = ssh.run(cfg.node(node).ip, command)
        return res.rc, res.stdout, res.stderr

    return run


@dataclass
class LiveLab:
    cfg: LabConfig
    virt: LabVirt
    ssh: NodeSSH
    faults: Faults
    timeline: Timeline
    traffic: object | None = None
    probes: object | None = None
    _ticker: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def handles(self) -> LabHandles:
        return LabHandles(self.cfg, self.timeline, self.faults, self.traffic, self.probes)

    def start_observing(self, traffic: bool = True) -> None:
        """Probes and (optionally) the traffic generator feeding the timeline; a ticker closes
        each second's traffic bucket."""
        from halab.observe.probes import ProbeSet
        from halab.observe.traffic import TrafficGenerator

        secrets = load_or_create_secrets(self.cfg)
        self.probes = ProbeSet.for_lab(
            self.cfg, self.virt, stats_auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password),
            ssh=ssh_runner(self.cfg, self.ssh), timeline=self.timeline)
        self.probes.start()
        if traffic:
            self.traffic = TrafficGenerator.for_lab(self.cfg, self.timeline.add_request)
        self.faults.boot_priority = self._boot_priority()
        self._ticker = threading.Thread(target=self._tick, name="timeline-ticker", daemon=True)
        self._ticker.start()

    def _boot_priority(self) -> BootPriority:
        def settled(node: str, timed_out: bool) -> None:
            self.timeline.event("note", settled_text(node, timed_out), node=node, source="boot")

        bp = BootPriority(self.cfg, self.virt, on_settled=settled)
        bp.start()
        return bp

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            self.timeline.tick()

    def close(self) -> None:
        self._stop.set()
        if self.faults.boot_priority is not None:
            self.faults.boot_priority.stop()
            self.faults.boot_priority = None
        for part in (self.traffic, self.probes):
            if part is not None and getattr(part, "running", True):
                part.stop()
        self.timeline.tick()
        self.ssh.close()
        self.virt.close()

    def __enter__(self) -> LiveLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_live_lab(cfg: LabConfig, on_event: Callable | None = None) -> LiveLab:
    if not lab_exists(cfg):
        raise LabNotUp(f"lab {cfg.name!r} is not up; run ./lab.py up")
    ssh = lab_ssh(cfg)
    virt = LabVirt(cfg)
    timeline = Timeline(keep_requests=True)
    faults = Faults(cfg, virt, ssh=ssh_runner(cfg, ssh), on_event=on_event or timeline.on_fault)
    return LiveLab(cfg, virt, ssh, faults, timeline)


def _quorum_queues(cfg: LabConfig, vhost: str, nodes: list[str]) -> dict[str, object]:
    ssh = lab_ssh(cfg)  # its own connections: NodeSSH is not shared between threads
    try:
        return read_quorum_queues(cfg, ssh_runner(cfg, ssh), vhost, nodes)
    finally:
        ssh.close()


def role_health(live: LiveLab) -> dict[str, Any]:
    """One reading of every role probe, as plain data for `status`: HAProxy backend states per
    balancer, Galera size and node states, RabbitMQ members and partitions, API health and
    heartbeat age per API node, and (several balancers) which one holds the VIP."""
    from halab.observe.probes import (
        GaleraSample,
        HAProxySample,
        HealthSample,
        HeartbeatSample,
        LibvirtProbe,
        ProbeSet,
        RabbitSample,
    )

    cfg = live.cfg
    secrets = load_or_create_secrets(cfg)
    run = ssh_runner(cfg, live.ssh)
    probes = ProbeSet.for_lab(cfg, live.virt, ssh=run,
                              stats_auth=(secrets.haproxy_stats_user, secrets.haproxy_stats_password))
    out: dict[str, Any] = {"haproxy": {}, "api": {}, "heartbeat_age_s": {}}
    running = [n for n, st in live.virt.states().items() if str(st) == "running"]
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
