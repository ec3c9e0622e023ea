"""A booting node's CPU share: lowered live, given back when its service answers or too late.

libvirt's test driver has no ``cpu_shares`` (its scheduler is "fair"/"weight"), so the share
bookkeeping is checked against a domain that records the live scheduler parameters; the test
driver itself is used for the "not available here" path."""

from __future__ import annotations

import libvirt
import pytest

from halab.chaos.boot_priority import GIVE_UP_S, RAMP_STEP_S, SERVICE_PORT, SHARE_DIVISOR, BootPriority
from halab.chaos.faults import Faults
from halab.errors import UsageError
from halab.lab.config import parse_config
from halab.lab.virt import LabVirt

CFG = parse_config("name: lab1\n", "lab.yaml", host_mem_mib=1 << 20)


class SharesDomain:
    """The two libvirt calls BootPriority makes, with cgroup v1's default share."""

    def __init__(self, shares: int = 1024, refuse: bool = False):
        self.shares = shares
        self.refuse = refuse
        self.calls: list[tuple[dict, int]] = []

    def schedulerParametersFlags(self, flags: int) -> dict:
        assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
        if self.refuse:
            raise libvirt.libvirtError("cgroup CPU controller is not mounted")
        return {"cpu_shares": self.shares, "vcpu_period": 100000}

    def setSchedulerParametersFlags(self, params: dict, flags: int) -> None:
        self.calls.append((params, flags))
        self.shares = params["cpu_shares"]


class Virt:
    def __init__(self, **doms: SharesDomain):
        self.doms = doms

    def domain(self, node: str) -> SharesDomain:
        if node not in self.doms:
            raise UsageError(f"{node} has no domain")
        return self.doms[node]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lowered_until_the_service_answers():
    dom = SharesDomain(1024)
    answering: set[tuple[str, int]] = set()
    settled: list[tuple[str, bool]] = []
    bp = BootPriority(CFG, Virt(**{"api-2": dom}), answers=lambda ip, port: (ip, port) in answering,
                      on_settled=lambda n, late: settled.append((n, late)))
    note = bp.lower("api-2")
    assert "1/64" in note
    assert dom.shares == 1024 // SHARE_DIVISOR == 16
    assert dom.calls[-1][1] == libvirt.VIR_DOMAIN_AFFECT_LIVE  # never the persistent definition
    assert bp.lowered() == ["api-2"]

    assert bp.settle() == []  # not answering yet
    assert dom.shares == 16
    answering.add((CFG.node("api-2").ip, SERVICE_PORT["api"]))
    assert bp.settle() == ["api-2"]
    assert dom.shares == 1024
    assert settled == [("api-2", False)]
    assert bp.lowered() == []


def test_lowering_twice_keeps_the_first_normal_share():
    dom = SharesDomain(1024)
    bp = BootPriority(CFG, Virt(**{"db-1": dom}), answers=lambda ip, port: False)
    bp.lower("db-1")
    bp.lower("db-1")  # e.g. reset again while still booting
    assert dom.shares == 16
    bp.release_all()
    assert dom.shares == 1024


def test_gives_up_after_a_long_boot():
    dom = SharesDomain(100)  # cgroup v2 weight: 100 // 64 = 1, floored at 2
    clock = Clock()
    settled = []
    bp = BootPriority(CFG, Virt(**{"mq-1": dom}), answers=lambda ip, port: False, clock=clock,
                      on_settled=lambda n, late: settled.append((n, late)))
    bp.lower("mq-1")
    assert dom.shares == 2
    clock.t += GIVE_UP_S - 1
    assert bp.settle() == []
    clock.t += 2
    assert bp.settle() == ["mq-1"]
    assert dom.shares == 100
    assert settled == [("mq-1", True)]


def test_forget_after_a_kill_and_stop_releases_the_rest():
    a, b = SharesDomain(), SharesDomain()
    bp = BootPriority(CFG, Virt(**{"api-1": a, "api-2": b}), answers=lambda ip, port: False)
    bp.lower("api-1")
    bp.lower("api-2")
    bp.forget("api-1")  # its QEMU is gone: the low share went with it
    calls_before = len(a.calls)
    bp.start(interval_s=0.01)
    bp.stop()
    assert len(a.calls) == calls_before
    assert b.shares == 1024
    assert bp.lowered() == []


def test_without_a_cpu_controller_nothing_changes():
    dom = SharesDomain(refuse=True)
    bp = BootPriority(CFG, Virt(**{"api-2": dom}))
    assert bp.lower("api-2") == ""
    assert "cgroup CPU controller is not mounted" in (bp.unavailable or "")
    assert bp.lowered() == [] and dom.calls == []


def test_every_role_has_a_service_port():
    assert {n.role for n in CFG.nodes()} <= set(SERVICE_PORT)


@pytest.fixture
def test_driver_faults(tmp_path):
    conn = libvirt.open("test:///default")
    from halab.lab.virt import ownership_xml
    from tests.functional.test_virt_faults import NAMES, _undefine, domain_xml

    for name in NAMES:
        _undefine(conn, name)
    node = CFG.node("api-2")
    conn.defineXML(domain_xml(CFG.domain_name(node), ownership_xml(CFG.name, node.name, node.role),
                              node.mac)).create()
    events = []
    f = Faults(CFG, LabVirt(CFG, conn), state_dir=tmp_path, on_event=events.append)
    f.events = events
    yield f
    for name in NAMES:
        _undefine(conn, name)
    conn.close()


def test_revive_and_reboot_ask_for_the_low_share(test_driver_faults):
    f = test_driver_faults
    bp = BootPriority(CFG, f.virt, answers=lambda ip, port: False)
    f.boot_priority = bp
    f.kill("api-2")
    f.revive("api-2")
    f.reboot("api-2")
    # The test driver has no cpu_shares: revive and reboot still work, and say nothing about shares.
    assert [e.detail for e in f.events[1:]] == ["cold boot", "hard reset"]
    assert bp.unavailable and "no CPU shares through libvirt here" in bp.unavailable
    assert bp.lowered() == []


def test_a_silent_node_gets_more_share_until_it_boots():
    """On a host whose other nodes keep both cores busy, 1/64 never ends a boot: the share doubles
    every RAMP_STEP_S while the node stays silent, and is full after GIVE_UP_S at the latest."""
    dom = SharesDomain(1024)
    clock = Clock()
    bp = BootPriority(CFG, Virt(**{"mq-1": dom}), answers=lambda ip, port: False, clock=clock)
    bp.lower("mq-1")
    seen = [dom.shares]
    start = clock.t
    while clock.t - start < GIVE_UP_S - 1:
        clock.t += RAMP_STEP_S / 3
        bp.settle()
        seen.append(dom.shares)
    assert sorted(set(seen)) == [16, 32, 64, 128, 256, 512, 1024]
    assert seen == sorted(seen)  # never back down while silent
    assert GIVE_UP_S <= 180
