"""Virt and fault logic against libvirt's test:///default driver (state lives per connection, so
each test keeps one connection)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest

from halab.chaos.faults import Faults, FaultStore, run_host
from halab.errors import HalabError, UsageError
from halab.lab.config import parse_config
from halab.lab.virt import DomainState, LabVirt, ownership_xml, read_ownership

CFG = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)


def domain_xml(name: str, meta: str | None, mac: str = "52:54:00:aa:bb:01") -> str:
    md = f"<metadata>{meta}</metadata>" if meta else ""
    return f"""<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os>{md}
<devices><interface type='network'><mac address='{mac}'/><source network='default'/>
<model type='virtio'/></interface></devices></domain>"""


def _undefine(c, name: str) -> None:
    try:
        d = c.lookupByName(name)
    except libvirt.libvirtError:
        return
    if d.isActive():
        d.destroy()
    d.undefine()


NAMES = [*(CFG.domain_name(n) for n in CFG.nodes()[:3]), "lab1-api-3", "lab1-api-4"]


@pytest.fixture
def conn():
    # test:///default shares its state while any connection in the process is open (other test
    # modules may hold one), so clean up before and after.
    c = libvirt.open("test:///default")
    for name in NAMES:
        _undefine(c, name)
    for node in CFG.nodes()[:3]:  # haproxy-1, api-1, api-2
        d = c.defineXML(domain_xml(CFG.domain_name(node), ownership_xml(CFG.name, node.name, node.role),
                                   node.mac))
        d.create()
    # api-3 exists by name but without a tag; api-4 carries another lab's tag.
    c.defineXML(domain_xml("lab1-api-3", None)).create()
    c.defineXML(domain_xml("lab1-api-4", ownership_xml("other", "api-4", "api"))).create()
    yield c
    for name in NAMES:
        _undefine(c, name)
    c.close()


@pytest.fixture
def faults(conn, tmp_path):
    events = []
    tc_calls = []

    def fake_tc(argv):
        tc_calls.append(list(argv))
        return 0, "", ""

    f = Faults(CFG, LabVirt(CFG, conn), host_run=fake_tc, state_dir=tmp_path, on_event=events.append)
    f.events = events
    f.tc_calls = tc_calls
    return f


def test_ownership_xml_round_trips(conn):
    dom = conn.lookupByName("lab1-api-1")
    assert read_ownership(dom).node == "api-1"
    assert read_ownership(conn.lookupByName("lab1-api-3")) is None
    assert 'xmlns:halab="https://halab.dev/xmlns/lab/1"' in ownership_xml("a", "b", "c")


def test_lists_only_tagged_domains(conn):
    v = LabVirt(CFG, conn)
    assert sorted(v.domains()) == ["api-1", "api-2", "haproxy-1"]
    states = v.states()
    assert states["api-1"] == DomainState.RUNNING
    assert states["api-3"] == DomainState.MISSING  # exists by name only
    assert states["db-1"] == DomainState.MISSING
    assert str(DomainState.SHUT_OFF) == "shut off"


@pytest.mark.parametrize(("node", "needle"), [
    ("api-9", "no node 'api-9'"),
    ("api-3", "carries no halab ownership tag"),
    ("api-4", "belongs to lab 'other'"),
    ("db-1", "has no domain"),
])
def test_domain_refuses_clearly(conn, node, needle):
    with pytest.raises(UsageError, match=needle):
        LabVirt(CFG, conn).domain(node)


def test_faults_refuse_foreign_domains(faults, conn):
    for action in ("kill", "pause", "reboot", "netcut", "netem"):
        with pytest.raises(UsageError):
            faults.apply(action, "api-4", **({"delay_ms": 10} if action == "netem" else {}))
    assert conn.lookupByName("lab1-api-4").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert faults.active() == []


def test_kill_revive_pause_resume_reboot(faults):
    v = faults.virt
    faults.kill("api-2")
    assert v.state("api-2") == DomainState.SHUT_OFF
    assert [f.kind for f in faults.active()] == ["kill"]
    with pytest.raises(UsageError, match="already shut off"):
        faults.kill("api-2")
    faults.revive("api-2")
    assert v.state("api-2") == DomainState.RUNNING
    assert faults.active() == []
    with pytest.raises(UsageError, match="already running"):
        faults.revive("api-2")

    faults.pause("api-1")
    assert v.state("api-1") == DomainState.PAUSED
    faults.resume("api-1")
    assert v.state("api-1") == DomainState.RUNNING
    faults.reboot("api-1")
    assert v.state("api-1") == DomainState.RUNNING
    assert [e.action for e in faults.events] == ["kill", "revive", "pause", "resume", "reboot"]
    assert faults.events[0].at <= faults.events[1].at


def test_restore_from_a_new_process(faults, conn, tmp_path):
    faults.kill("api-1")
    faults.pause("api-2")
    faults.netem("haproxy-1", delay_ms=200, loss_pct=5)
    assert {f.kind for f in faults.active()} == {"kill", "pause", "netem"}
    # A second Faults object over the same state dir: what `./lab.py restore` in a new process sees.
    tc_calls = []
    later = Faults(CFG, LabVirt(CFG, conn), state_dir=tmp_path,
                   host_run=lambda argv: tc_calls.append(list(argv)) or (0, "", ""))
    done, problems = later.restore()
    assert problems == []
    assert [e.action for e in done] == ["revive", "resume", "netem-clear"]
    assert later.active() == []
    v = LabVirt(CFG, conn)
    assert v.state("api-1") == v.state("api-2") == DomainState.RUNNING
    assert tc_calls == [["tc", "qdisc", "del", "dev", "testnet0", "root"]]


def test_netem_command(faults):
    faults.netem("api-1", delay_ms=100, jitter_ms=10, loss_pct=2.5)
    assert faults.tc_calls[-1] == ["tc", "qdisc", "replace", "dev", "testnet0", "root", "netem",
                                   "delay", "100ms", "10ms", "loss", "2.5%"]
    with pytest.raises(UsageError):
        faults.netem("api-1")


class _LinkRecorder:
    """test:///default does not implement virDomainUpdateDeviceFlags: stand in for it."""

    def __init__(self, dom):
        self._dom = dom
        self.updates = []

    def __getattr__(self, name):
        return getattr(self._dom, name)

    def updateDeviceFlags(self, xml, flags):
        self.updates.append((xml, flags))


def test_netcut_sends_link_down_live(faults, conn):
    with pytest.raises(libvirt.libvirtError):  # documents the driver gap this test works around
        conn.lookupByName("lab1-api-1").updateDeviceFlags("<interface/>", libvirt.VIR_DOMAIN_AFFECT_LIVE)
    recorder = _LinkRecorder(faults.virt.domain("api-1"))
    faults.virt.domain = lambda node: recorder
    faults.netcut("api-1")
    xml, flags = recorder.updates[-1]
    el = ET.fromstring(xml)
    assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert el.find("link").get("state") == "down"
    assert el.find("mac").get("address") == CFG.node("api-1").mac
    assert [f.kind for f in faults.active()] == ["netcut"]
    faults.netrestore("api-1")
    assert ET.fromstring(recorder.updates[-1][0]).find("link").get("state") == "up"
    assert faults.active() == []


def test_netcut_error_is_reported(faults):
    with pytest.raises(HalabError, match="libvirt refused"):
        faults.netcut("api-1")
    assert faults.active() == []


def test_services_over_ssh(faults):
    calls = []
    faults.ssh = lambda node, cmd: calls.append((node, cmd)) or (0, "", "")
    faults.stop_service("api-1")
    faults.stop_service("haproxy-1", "haproxy")
    assert calls == [("api-1", "systemctl stop halab-api"), ("haproxy-1", "systemctl stop haproxy")]
    assert len(faults.active()) == 2
    _done, problems = faults.restore()
    assert problems == []
    assert calls[-2:] == [("api-1", "systemctl start halab-api"), ("haproxy-1", "systemctl start haproxy")]
    with pytest.raises(UsageError):
        faults.stop_service("api-1", "x; rm -rf /")
    faults.ssh = lambda node, cmd: (5, "", "Unit halab-api.service not loaded.")
    with pytest.raises(HalabError, match="not loaded"):
        faults.stop_service("api-1")


def test_store_survives_concurrent_writers(tmp_path):
    from halab.chaos.faults import ActiveFault
    a, b = FaultStore(tmp_path / "faults.json"), FaultStore(tmp_path / "faults.json")
    a.add(ActiveFault("kill", "api-1", 1.0))
    b.add(ActiveFault("pause", "api-2", 2.0))
    assert {f.node for f in a.load()} == {"api-1", "api-2"}
    assert oct((tmp_path / "faults.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("tc") is None, reason="needs ip and tc")
def test_real_tc_netem_in_a_namespace(faults):
    """The exact tc commands, run for real on a veth inside a throwaway netns."""
    ns = f"halabt{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "testnet0", "type", "veth", "peer", "name", "tp0"],
                       check=True)
        faults.host_run = lambda argv: run_host(["ip", "netns", "exec", ns, *argv])
        try:
            faults.netem("api-1", delay_ms=150, loss_pct=3)
        except HalabError as exc:
            if "lacks the netem qdisc" in str(exc):
                pytest.skip(str(exc))
            raise
        show = run_host(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "testnet0"])[1]
        assert "netem" in show and "delay 150ms" in show and "loss 3%" in show
        faults.netem_clear("api-1")
        show = run_host(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "testnet0"])[1]
        assert "netem" not in show
        faults.netem_clear("api-1")  # clearing twice is not an error
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
