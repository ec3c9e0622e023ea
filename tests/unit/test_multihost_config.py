"""lab.yaml `hosts:` and `placement:`: a lab over several hosts, and every mistake as file:line: field."""

from __future__ import annotations

import pytest

from halab.errors import ConfigError
from halab.lab.config import parse_config

BIG_HOST = 1 << 20

TWO_HOSTS = """\
name: mh
hosts:
  rack1: {uri: "qemu:///system", underlay: 10.99.0.1}
  rack2:
    uri: qemu+tcp://10.99.0.2/system
    underlay: 10.99.0.2
    ssh: {target: root@10.99.0.2, port: 2222}
"""


def parse(text: str):
    return parse_config(text, "lab.yaml", host_mem_mib=BIG_HOST)


def errors_of(text: str, host_mem_mib: int = BIG_HOST) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lab.yaml", host_mem_mib=host_mem_mib)
    return info.value.errors


def test_no_hosts_is_a_lab_on_one_host_as_before():
    cfg = parse("name: one\n")
    assert not cfg.multihost and cfg.hosts == () and cfg.placement == ()
    assert all(n.host == "" for n in cfg.nodes())
    assert cfg.host_of("api-1") is None and cfg.uri_of("api-1") == "qemu:///system"
    assert "hosts" not in cfg.to_dict() and "placement" not in cfg.to_dict()
    assert cfg.checkpoint is True


def test_spread_puts_the_first_of_every_role_on_the_first_host():
    cfg = parse(TWO_HOSTS)
    assert cfg.multihost
    assert {n.name: n.host for n in cfg.nodes()} == {
        "haproxy-1": "rack1", "api-1": "rack1", "api-2": "rack2", "api-3": "rack1", "api-4": "rack2",
        "db-1": "rack1", "mq-1": "rack1"}
    assert cfg.libvirt_uri == "qemu:///system"  # the first host's
    assert cfg.primary_host.name == "rack1"
    assert cfg.uri_of("api-2") == "qemu+tcp://10.99.0.2/system"
    assert cfg.checkpoint is False  # checkpoints live on one host
    ssh = cfg.host("rack2").ssh
    assert ssh is not None and str(ssh) == "ssh root@10.99.0.2:2222"
    assert cfg.host("rack1").local and not cfg.host("rack2").local
    assert len(cfg.tunnel_name) <= 15 and cfg.tunnel_name.startswith(cfg.bridge_name)
    assert 1 <= cfg.vni < 1 << 24
    assert cfg.to_dict()["placement"]["api-2"] == "rack2"


def test_ha_profile_spread_keeps_quorum_on_the_first_host():
    cfg = parse(TWO_HOSTS + "profile: ha\n")
    on1 = {n.name for n in cfg.nodes_on("rack1")}
    assert {"db-1", "db-3", "mq-1", "mq-3", "haproxy-1"} <= on1
    assert {n.name for n in cfg.nodes_on("rack2")} == {"haproxy-2", "api-2", "api-4", "db-2", "mq-2"}


def test_explicit_placement_and_the_rest_spread():
    cfg = parse(TWO_HOSTS + "placement:\n  db-1: rack2\n  api-1: rack2\n")
    where = {n.name: n.host for n in cfg.nodes()}
    assert where["db-1"] == "rack2" and where["api-1"] == "rack2"
    assert where["api-2"] == "rack1"  # the unplaced API nodes spread from the first host


def test_qemu_ssh_uri_gives_the_tunnel_its_ssh():
    cfg = parse("hosts:\n  a: {uri: 'qemu:///system', underlay: 192.168.5.1}\n"
                "  b: {uri: 'qemu+ssh://lab@rack2:2200/system?keyfile=/k', underlay: 192.168.5.2}\n")
    ssh = cfg.host("b").ssh
    assert (ssh.user, ssh.host, ssh.port, ssh.keyfile) == ("lab", "rack2", 2200, "/k")
    argv = ssh.argv(["ip", "link", "set", "x; rm -rf /", "up"])
    assert argv[:2] == ["ssh", "-o"] and "lab@rack2" in argv
    assert argv[-1] == "ip link set 'x; rm -rf /' up"  # every word quoted for the remote shell


@pytest.mark.parametrize("text, expected", [
    (TWO_HOSTS + "placement:\n  api-2: rack3\n",
     "lab.yaml:9: placement.api-2: no host 'rack3' (hosts: rack1, rack2); did you mean 'rack2'?"),
    (TWO_HOSTS + "placement:\n  api-9: rack2\n", "lab.yaml:9: placement.api-9: no such node in this lab"),
    (TWO_HOSTS + "placement: everywhere\n", "lab.yaml:8: placement: must be spread or a mapping"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.1}\n",
     "lab.yaml:3: hosts.b.underlay: 10.99.0.1 is already the underlay of host 'a' (line 2)"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu:///system', underlay: 10.99.0.2}\n",
     "lab.yaml:3: hosts.b.uri: 'qemu:///system' is already the uri of the host at line 2"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu:///session', underlay: 10.99.0.2}\n",
     "lab.yaml:3: hosts.b.uri: host 'a' (line 2) is already this machine"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+tcp://b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:3: hosts.b.ssh: missing: qemu+tcp reaches only libvirt there"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+ext:///system?command=/bin/sh', underlay: 10.99.0.2}\n",
     "lab.yaml:3: hosts.b.uri: transport 'ext' is not allowed"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+ssh://r@b/system?command=/bin/sh', underlay: 10.99.0.2}\n",
     "lab.yaml:3: hosts.b.uri: query parameter 'command' names a program to run"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+tcp://b/system', underlay: 10.99.0.2, ssh: {target: '-oProxyCommand=x@b'}}\n",
     "lab.yaml:3: hosts.b.ssh.target: must be user@host with plain names"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.77.0.5}\n"
     "  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:2: hosts.a.underlay: 10.77.0.5 is inside the lab network 10.77.0.0/24"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 127.0.0.1}\n"
     "  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:2: hosts.a.underlay: 127.0.0.1 cannot carry a tunnel"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: nope}\n"
     "  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:2: hosts.a.underlay: must be an IPv4 address (got 'nope')"),
    ("hosts:\n  a: {uri: 'qemu:///system'}\n  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:2: hosts.a.underlay: missing"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n", "lab.yaml:1: hosts: needs 2 to 8 hosts"),
    ("hosts:\n  Rack_1: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu+ssh://r@b/system', underlay: 10.99.0.2}\n",
     "lab.yaml:2: hosts.Rack_1: a host name is lowercase letters"),
    (TWO_HOSTS + "libvirt_uri: qemu:///system\n", "lab.yaml:8: libvirt_uri: give either libvirt_uri"),
    (TWO_HOSTS + "checkpoint: true\n", "lab.yaml:8: checkpoint: a lab spread over hosts: has no checkpoints"),
    ("placement: spread\n", "lab.yaml:1: placement: places nodes on hosts: give hosts: too"),
    ("hosts:\n  a: {uri: 'qemu:///system', underlay: 10.99.0.1}\n"
     "  b: {uri: 'qemu:///system', underlay: 10.99.0.2, ssh: {target: r@b}}\n",
     "lab.yaml:3: hosts.b.uri: 'qemu:///system' is already the uri"),
])
def test_bad_hosts_are_file_line_field_errors(text, expected):
    errs = errors_of(text)
    assert any(e.startswith(expected) for e in errs), errs


def test_only_nodes_on_this_machine_count_against_its_memory():
    # 7 nodes need 5120 MiB; rack1 (this machine) holds 5 of them: 3584 MiB.
    parse_config(TWO_HOSTS, "lab.yaml", host_mem_mib=3600)
    errs = errors_of(TWO_HOSTS, host_mem_mib=3500)
    assert any("needs 3584 MiB" in e for e in errs), errs


def test_halab_runs_only_ip_and_bridge_on_a_host():
    from halab.lab import hostshell

    cfg = parse(TWO_HOSTS)
    assert hostshell.argv_for(cfg.host("rack1"), ["ip", "link"]) == ["ip", "link"]  # this machine
    remote = hostshell.argv_for(cfg.host("rack2"), ["bridge", "fdb", "show"])
    assert remote[0] == "ssh" and remote[-2:] == ["root@10.99.0.2", "bridge fdb show"]
    with pytest.raises(ValueError):
        hostshell.argv_for(cfg.host("rack2"), ["sh", "-c", "anything"])


def test_only_flood_entries_count_as_tunnel_peers():
    from halab.lab.tunnel import _flood_peers

    fdb = ("de:c7:ea:ba:68:a4 dst 10.231.0.1 self \n"  # learned: a MAC seen from that host once
           "00:00:00:00:00:00 dst 10.231.0.3 self permanent\n"
           "26:20:de:95:bf:73 master hlx permanent\n")
    assert _flood_peers(fdb) == {"10.231.0.3"}
