"""A lab without VMs: libvirt's ``test:///default`` driver, domains carrying the lab's ownership
tag, and recorded traffic, events and a failover result: ``./lab.py tui --demo`` (to try the
interface, or rehearse a workshop, with no lab at all); the TUI tests and benchmark use it too.
Everything here is what the demo itself needs; doubles only tests need live in tests/support."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import libvirt

from halab.chaos.faults import Faults
from halab.lab.config import LabConfig, parse_config
from halab.lab.virt import LabVirt, ownership_xml
from halab.live.engine import LabEngine
from halab.live.session import FailoverView, LabSession, synthetic_points
from halab.observe.timeline import Timeline

T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC: recorded samples start here


def demo_config(profile: str = "default", name: str = "demo") -> LabConfig:
    text = f"name: {name}\nprofile: {profile}\nlibvirt_uri: 'test:///default'\n"
    return parse_config(text, "<demo>", host_mem_mib=1 << 20)


def define_domains(conn: libvirt.virConnect, cfg: LabConfig, running: bool = True) -> None:
    """One test-driver domain per node, tagged as this lab's (as `up` would leave them)."""
    for n in cfg.nodes():
        xml = f"""<domain type='test'>
  <name>{cfg.domain_name(n)}</name>
  <memory unit='MiB'>{n.memory_mib}</memory>
  <vcpu>{n.vcpus}</vcpu>
  <os><type>hvm</type></os>
  <metadata>{ownership_xml(cfg.name, n.name, n.role)}</metadata>
  <devices>
    <interface type='network'>
      <mac address='{n.mac}'/>
      <source network='default'/>
      <target dev='vnet{len(n.name)}{n.index}'/>
    </interface>
  </devices>
</domain>"""
        try:  # the test driver's state is shared while any connection is open: start afresh
            old = conn.lookupByName(cfg.domain_name(n))
        except libvirt.libvirtError:
            old = None
        if old is not None:
            if old.isActive():
                old.destroy()
            old.undefine()
        dom = conn.defineXML(xml)
        if running:
            dom.create()


class FakeTraffic:
    """The demo's traffic generator: there is no VIP to send to, so it remembers start/stop/rate
    and sends nothing (the recorded history is what the graphs show)."""

    def __init__(self, rate: float = 50.0):
        self.rate = rate
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def set_rate(self, rate: float) -> None:
        self.rate = rate


class Runners(Protocol):
    """Where the demo's host (tc) and guest (SSH) commands go."""

    def host_run(self, argv: Sequence[str]) -> tuple[int, str, str]: ...

    def ssh_run(self, node: str, command: str) -> tuple[int, str, str]: ...


class QuietRunners:
    """The demo lab has no hosts' qdiscs or guests to change: every command succeeds, doing nothing.
    (tests/support/recorder.py has runners that also remember what they were asked.)"""

    def host_run(self, argv: Sequence[str]) -> tuple[int, str, str]:
        return 0, "", ""

    def ssh_run(self, node: str, command: str) -> tuple[int, str, str]:
        return 0, "", ""


def record_history(session: LabSession, start: float = T0, seconds: int = 75) -> None:
    """A recorded minute and a bit: steady traffic, `kill api-2` at +40 s, HAProxy noticing,
    api-2 revived and back, and the measured failover."""
    api = [n.name for n in session.cfg.nodes() if n.role == "api"]
    for n in session.cfg.nodes():
        session.record_probe(n.name, health="ok", backend="UP" if n.role == "api" else "—")
    kill_at = start + 40.25
    points = synthetic_points(start, seconds, rate=50.0, errors_at=(), nodes=api)
    for p in points:
        if kill_at <= p.t < kill_at + 32 and "api-2" in api:
            others = [a for a in api if a != "api-2"]
            p = type(p)(**{**p.__dict__, "share": {a: (1 / len(others) if a != "api-2" else 0.0)
                                                   for a in api}})
        session.record_sample(p)
    session.record_event("traffic started at 50 ops/s", kind="fault", t=start + 0.5)
    if "api-2" in api:
        session.record_event("kill api-2 (power cut (libvirt destroy))", kind="fault", node="api-2",
                             t=kill_at)
        session.record_event("HAProxy marked api-2 DOWN", kind="probe", node="api-2", t=kill_at + 1.4)
        session.record_event("0 failed requests", kind="info", t=kill_at + 2.0)
        session.record_event("revive api-2 (started)", kind="fault", node="api-2", t=kill_at + 20.0)
        session.record_event("HAProxy marked api-2 UP", kind="probe", node="api-2", t=kill_at + 31.9)
        session.record_failover(FailoverView(
            fault="kill", node="api-2", started=kill_at, detection_s=1.4,
            expected_detection_s=session.expected_detection_s(), failed_reads=0, failed_writes=0,
            failed_pages=0, error_window_s=0.0, max_latency_ms=212.0, recovery_s=11.9, complete=True))


def demo_session(
    profile: str = "default",
    *,
    clock: Callable[[], float] | None = None,
    state_dir: Path | None = None,
    history: bool = True,
    conn: libvirt.virConnect | None = None,
    recorder: Runners | None = None,
    keep_requests: bool = False,
    **session_kw: Any,
) -> LabSession:
    """A LabSession over a fresh ``test:///default`` lab (each connection has its own state)."""
    cfg = demo_config(profile)
    conn = conn or libvirt.open("test:///default")
    define_domains(conn, cfg)
    clock = clock or (lambda: T0 + 75.0)
    rec = recorder or QuietRunners()
    state = state_dir or Path(tempfile.mkdtemp(prefix="halab-demo-"))
    virt = LabVirt(cfg, conn)
    timeline = Timeline(keep_requests=keep_requests, clock=clock)  # True: scenarios can run
    faults = Faults(cfg, virt, ssh=rec.ssh_run, host_run=rec.host_run, state_dir=state, clock=clock)
    engine = LabEngine(cfg, virt=virt, faults=faults, timeline=timeline,
                       traffic=session_kw.pop("traffic", FakeTraffic()), clock=clock, **session_kw)
    session = LabSession(engine)
    if history:
        record_history(session)
    return session
