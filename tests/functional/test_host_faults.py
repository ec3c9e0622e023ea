"""Host faults of a lab over several hosts, against libvirt's test:///default driver: host-kill
power-cuts every node of one host at once and host-revive starts them; host-cut takes that host's
tunnel down (the command is recorded, not run: no ssh leaves this machine in the default tier);
a lab on one host refuses both."""

from __future__ import annotations

import libvirt
import pytest

from halab.chaos.faults import Faults
from halab.errors import UsageError
from halab.lab import hostshell
from halab.lab.config import parse_config
from halab.lab.virt import DomainState, LabVirt, ownership_xml

CFG = parse_config("name: hf\nhosts:\n  rack1: {uri: 'test:///default', underlay: 10.99.0.1}\n"
                   "  rack2: {uri: 'qemu+ssh://root@rack2/system', underlay: 10.99.0.2}\n",
                   "lab.yaml", host_mem_mib=1 << 20)
NODES = CFG.nodes()[:4]  # haproxy-1 (rack1), api-1 (rack1), api-2 (rack2), api-3 (rack1)


def domain_xml(name: str, meta: str, mac: str) -> str:
    return f"""<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><metadata>{meta}</metadata>
<devices><interface type='network'><mac address='{mac}'/><source network='default'/>
<model type='virtio'/></interface></devices></domain>"""


@pytest.fixture
def faults(tmp_path):
    c = libvirt.open("test:///default")

    def clean() -> None:
        for n in NODES:
            try:
                d = c.lookupByName(CFG.domain_name(n))
            except libvirt.libvirtError:
                continue
            if d.isActive():
                d.destroy()
            d.undefine()

    clean()
    for n in NODES:
        c.defineXML(domain_xml(CFG.domain_name(n), ownership_xml(CFG.name, n.name, n.role), n.mac)).create()
    events = []
    f = Faults(CFG, LabVirt(CFG, c), state_dir=tmp_path, on_event=events.append)
    f.events = events
    yield f
    clean()
    c.close()


def test_host_kill_cuts_every_node_of_that_host_and_host_revive_starts_them(faults):
    assert [n.host for n in NODES] == ["rack1", "rack1", "rack2", "rack1"]
    ev = faults.apply("host-kill", "rack2")
    states = faults.virt.states()
    assert states["api-2"] == DomainState.SHUT_OFF
    assert states["api-1"] == states["haproxy-1"] == DomainState.RUNNING
    assert "api-2" in ev.message
    assert [(f.kind, f.node) for f in faults.active()] == [("host-kill", "rack2")]
    with pytest.raises(UsageError, match="already shut off"):
        faults.apply("host-kill", "rack2")
    done, problems = faults.restore()  # the registry's undo: host-revive
    assert not problems and [e.action for e in done] == ["host-revive"]
    assert faults.virt.states()["api-2"] == DomainState.RUNNING
    assert faults.active() == []


def test_host_cut_takes_the_hosts_tunnel_down_and_restore_brings_it_back(faults, monkeypatch):
    ran = []

    def record(host, argv, check=True, timeout_s=30.0):
        ran.append((host.name, hostshell.argv_for(host, argv)))
        fdb = argv[:3] == ["bridge", "fdb", "show"]
        out = f"x dst {CFG.host('rack1').underlay} self permanent\n" if fdb else ""
        return hostshell.Result(0, out, "")

    monkeypatch.setattr(hostshell, "run", record)
    faults.apply("host-cut", "rack2")
    assert ran == [("rack2", ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "22", "--",
                              "root@rack2", f"ip link set dev {CFG.tunnel_name} down"])]
    assert [(f.kind, f.node) for f in faults.active()] == [("host-cut", "rack2")]
    ran.clear()
    faults.undo("host-cut", "rack2")
    commands = [argv[-1] for _h, argv in ran]
    assert f"ip link set dev {CFG.tunnel_name} up" in commands
    assert all(h == "rack2" for h, _ in ran) and faults.active() == []


def test_unknown_host_and_a_lab_on_one_host_are_refused(faults, tmp_path):
    with pytest.raises(UsageError, match="no host 'rack9'"):
        faults.apply("host-kill", "rack9")
    one = parse_config("name: hf\n", "lab.yaml", host_mem_mib=1 << 20)
    f = Faults(one, LabVirt(one, faults.virt.conn), state_dir=tmp_path / "one")
    with pytest.raises(UsageError, match="runs on one host"):
        f.apply("host-cut", "rack2")


def test_the_measurement_of_a_host_fault_fits_the_lab():
    """`measure --fault host-cut --node rack2` is a scenario: it must pass the lab check (the first
    real run stopped there: its undo step named the host as a node)."""
    from halab.chaos.experiments import MeasurePlan, measurement_scenario

    sc = measurement_scenario("host-cut", "rack2", MeasurePlan(), 8.0, 30.0, {})
    sc.check_lab(CFG)  # no UsageError
    fault = next(s for s in sc.steps if s.action == "fault")
    assert fault.args["host"] == "rack2" and "node" not in fault.args
