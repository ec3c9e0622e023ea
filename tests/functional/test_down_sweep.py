"""`down`'s sweep against libvirt's test:///default: everything the lab owns goes (domains by
ownership tag, with managed-save images; network; pool and its volumes), nothing that is not the
lab's is touched, and the result is 0 objects of the lab."""

from __future__ import annotations

import libvirt
import pytest

from halab.lab.config import parse_config
from halab.lab.virt import ownership_xml, sweep_lab

CFG = parse_config("name: swp\n", "lab.yaml", host_mem_mib=1 << 20)


def _dom_xml(name: str, meta: str | None) -> str:
    md = f"<metadata>{meta}</metadata>" if meta else ""
    return (f"<domain type='test'><name>{name}</name><memory>65536</memory><vcpu>1</vcpu>"
            f"<os><type arch='x86_64'>hvm</type></os>{md}</domain>")


def _lab_objects(c: libvirt.virConnect) -> list[str]:
    out = [f"domain {d.name()}" for d in c.listAllDomains(0) if d.name().startswith("swp-")]
    out += [f"network {n.name()}" for n in c.listAllNetworks(0) if n.name().startswith("swp-")]
    out += [f"pool {p.name()}" for p in c.listAllStoragePools(0) if p.name().startswith("swp-")]
    return out


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield c
    for d in c.listAllDomains(0):
        if d.name().startswith("swp-"):
            if d.isActive():
                d.destroy()
            d.undefine()
    c.close()


def test_sweep_leaves_nothing_of_the_lab_and_spares_a_foreign_domain(conn) -> None:
    nodes = CFG.nodes()
    # What a SIGKILL during `terraform apply` leaves: domains Terraform never saved, one running,
    # one shut off; a volume per node; the network and the pool.
    for n in nodes[:2]:
        conn.defineXML(_dom_xml(CFG.domain_name(n), ownership_xml(CFG.name, n.name, n.role)))
    conn.lookupByName(CFG.domain_name(nodes[0])).create()
    conn.defineXML(_dom_xml(CFG.domain_name(nodes[2]), None)).create()  # same name, not the lab's
    conn.networkCreateXML(f"<network><name>{CFG.network_name}</name><bridge name='swpbr0'/></network>")
    pool = conn.storagePoolCreateXML("<pool type='dir'><name>swp-pool</name>"
                                     "<target><path>/swp-pool</path></target></pool>", 0)
    for name in ("swp-base.qcow2", "swp-api-1.qcow2", "swp-api-1.log"):
        pool.createXML(f"<volume><name>{name}</name><capacity>1024</capacity></volume>", 0)

    sweep = sweep_lab(CFG, "/swp-pool", conn)

    assert sweep.left == []
    assert f"domain {CFG.domain_name(nodes[0])}" in sweep.removed
    assert f"network {CFG.network_name}" in sweep.removed and "storage pool swp-pool" in sweep.removed
    assert "volume swp-api-1.log" in sweep.removed
    assert sweep.foreign == [f"domain {CFG.domain_name(nodes[2])}"]
    assert _lab_objects(conn) == [f"domain {CFG.domain_name(nodes[2])}"]  # only the foreign one
    assert sweep_lab(CFG, "/swp-pool", conn).removed == []  # idempotent


def test_down_without_state_sweeps_leftovers(conn, tmp_path, monkeypatch) -> None:
    """A kill before Terraform wrote any state: `down` still finds the lab's domain by its tag."""
    from halab.lab import lifecycle

    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    n = CFG.nodes()[1]
    conn.defineXML(_dom_xml(CFG.domain_name(n), ownership_xml(CFG.name, n.name, n.role))).create()
    cfg = parse_config("name: swp\nlibvirt_uri: test:///default\n", "lab.yaml", host_mem_mib=1 << 20)
    (tmp_path / "state" / "swp" / "checkpoints" / "ready").mkdir(parents=True)
    lines: list[str] = []
    lifecycle.down(cfg, progress=lambda p: lines.append(p.message))
    assert not (tmp_path / "state" / "swp").exists()  # checkpoints went with it
    assert _lab_objects(conn) == []
    assert any("removed what Terraform did not know" in ln for ln in lines)


def test_down_with_an_empty_terraform_state_sweeps_and_says_so(conn, tmp_path, monkeypatch) -> None:
    """A kill while Terraform wrote its state (seen in the crash test): `down` says it sweeps, not
    that it rebuilds the state (that is `up`'s repair), and leaves nothing."""
    from halab.lab import lifecycle

    monkeypatch.setenv("HALAB_STATE", str(tmp_path / "state"))
    n = CFG.nodes()[1]
    conn.defineXML(_dom_xml(CFG.domain_name(n), ownership_xml(CFG.name, n.name, n.role))).create()
    cfg = parse_config("name: swp\nlibvirt_uri: test:///default\n", "lab.yaml", host_mem_mib=1 << 20)
    tfdir = tmp_path / "state" / "swp" / "terraform"
    tfdir.mkdir(parents=True)
    (tfdir / "main.tf").write_text("")
    (tfdir / "terraform.tfstate").write_text("")
    lines: list[str] = []
    lifecycle.down(cfg, progress=lambda p: lines.append(p.message))
    said = "\n".join(lines)
    assert "terraform.tfstate was empty" in said and "rebuilding" not in said, said
    assert "removing the lab's objects from libvirt directly" in said, said
    assert "removed what Terraform did not know" in said, said
    assert _lab_objects(conn) == []
    assert not (tmp_path / "state" / "swp").exists()


def test_a_same_named_domain_that_is_not_the_labs_is_refused_never_imported(conn) -> None:
    from halab.lab.virt import ForeignDomain, foreign_domains, refuse_foreign_domains

    nodes = CFG.nodes()
    conn.defineXML(_dom_xml(CFG.domain_name(nodes[0]), None))
    conn.defineXML(_dom_xml(CFG.domain_name(nodes[1]), ownership_xml("other", nodes[1].name, "api")))
    found = foreign_domains(CFG, conn)
    assert len(found) == 2
    assert "carries no halab ownership tag" in found[0] and "belongs to lab 'other'" in found[1]
    for line in found:
        assert "is not lab 'swp'" in line and "halab will not touch it" in line
        assert "rename or remove it" in line and "import" not in line
    with pytest.raises(ForeignDomain):
        refuse_foreign_domains(CFG, conn)


def test_the_wait_for_nodes_starts_a_node_that_is_shut_off(conn) -> None:
    """`up`'s wait notices a node that is shut off, says so, and starts it (at most MAX_RESTARTS times)."""
    from halab.errors import HalabError
    from halab.lab import lifecycle

    cfg = parse_config("name: swp\nlibvirt_uri: test:///default\n", "lab.yaml", host_mem_mib=1 << 20)
    n = cfg.nodes()[0]
    dom = conn.defineXML(_dom_xml(cfg.domain_name(n), ownership_xml(cfg.name, n.name, n.role)))
    lines: list[str] = []
    clock = lifecycle._Clock(lambda p: lines.append(p.message))
    restarts: dict[str, int] = {}
    doing = {n.name: "booting"}
    assert lifecycle._restart_stopped(cfg, clock, [n.name], restarts, doing) is True
    assert dom.isActive() and any("shut off while booting; starting it as heal would" in ln for ln in lines)
    assert lifecycle._restart_stopped(cfg, clock, [n.name], restarts, doing) is False  # running: left alone
    for _ in range(lifecycle.MAX_RESTARTS - 1):
        dom.destroy()
        lifecycle._restart_stopped(cfg, clock, [n.name], restarts, doing)
    dom.destroy()
    with pytest.raises(HalabError, match="again after 3 starts"):
        lifecycle._restart_stopped(cfg, clock, [n.name], restarts, doing)
