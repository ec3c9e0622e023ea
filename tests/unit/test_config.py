"""The lab definition: defaults, profiles and every kind of mistake, each with file:line: field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from halab.errors import ConfigError
from halab.lab.config import MAX_YAML_NODES, load_config, parse_config

BAD = Path(__file__).resolve().parent.parent / "fixtures" / "bad-configs"
BIG_HOST = 1 << 20  # MiB: memory checks pass unless a test says otherwise


def errors_of(text: str, host_mem_mib: int = BIG_HOST, fname: str = "lab.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, fname, host_mem_mib=host_mem_mib)
    return info.value.errors


# ---- the good cases ---------------------------------------------------------------------------


def test_builtin_default_is_the_seven_node_lab():
    cfg = parse_config("", "<built-in default>", host_mem_mib=BIG_HOST)
    assert [n.name for n in cfg.nodes()] == [
        "haproxy-1", "api-1", "api-2", "api-3", "api-4", "db-1", "mq-1",
    ]
    assert [n.ip for n in cfg.nodes()][:2] == ["10.77.0.11", "10.77.0.12"]
    assert cfg.vip == "10.77.0.11"  # one HAProxy: its own address
    assert cfg.gateway == "10.77.0.1"
    assert cfg.domain_name("api-2") == "halab-api-2"
    assert cfg.network_name == "halab-net"
    assert len(cfg.bridge_name) <= 15
    assert cfg.accel == "auto" and cfg.libvirt_uri == "qemu:///system"


def test_load_config_without_file_is_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("HALAB_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert len(load_config().nodes()) == 7


def test_ha_profile():
    cfg = parse_config("name: ha1\nprofile: ha\n", host_mem_mib=BIG_HOST)
    counts = {r: cfg.roles[r].count for r in cfg.roles}
    assert counts == {"haproxy": 2, "api": 4, "db": 3, "mq": 3}
    assert cfg.vip == "10.77.0.10"
    assert len(cfg.nodes()) == 12


def test_nodes_macs_are_stable_and_distinct():
    cfg = parse_config("name: lab1\nprofile: ha\n", host_mem_mib=BIG_HOST)
    macs = [n.mac for n in cfg.nodes()]
    assert len(set(macs)) == len(macs)
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert macs == [n.mac for n in parse_config("name: lab1\nprofile: ha\n", host_mem_mib=BIG_HOST).nodes()]


def test_every_field_accepted():
    text = """\
name: full
profile: default
network: {cidr: 192.168.50.0/24, mode: isolated}
roles:
  api: {count: 2, memory_mib: 768, vcpus: 2}
  db: {count: 3}
image: builtin
accel: tcg
libvirt_uri: test:///default
haproxy: {preset: kolla, fall: 3, redispatch: false, retry_on: conn-failure 503}
traffic: {rate: 10, read_share: 0.5, write_share: 0.25, page_share: 0.25, page_calls: 4, timeout_ms: 500}
"""
    cfg = parse_config(text, host_mem_mib=BIG_HOST)
    assert cfg.network.mode == "isolated" and cfg.gateway == "192.168.50.1"
    assert cfg.roles["api"].vcpus == 2 and cfg.roles["db"].count == 3
    assert cfg.haproxy.preset == "kolla" and cfg.haproxy.fall == 3 and cfg.haproxy.inter_ms == 2000
    assert cfg.traffic.rate == 10.0
    assert cfg.accel == "tcg"


def test_network_shorthand():
    assert parse_config("network: 10.9.0.0/24\n", host_mem_mib=BIG_HOST).gateway == "10.9.0.1"


def test_image_path_relative_to_the_file(tmp_path):
    (tmp_path / "cloud.qcow2").write_bytes(b"x")
    f = tmp_path / "lab.yaml"
    f.write_text("image: cloud.qcow2\n")
    assert load_config(f).image == str(tmp_path / "cloud.qcow2")


# ---- each kind of mistake, from the fixture files -------------------------------------------------

# fixture -> the exact message (after the file name); memory depends on the host, hence a pattern.
FIXTURE_ERRORS = {
    "unknown-key.yaml": "5: roles.api.cuont: unknown key (did you mean 'count'?)",
    "unknown-top-key.yaml": "2: profle: unknown key (did you mean 'profile'?)",
    "wrong-type.yaml": "4: roles.api.count: must be an integer (got string 'four')",
    "count-zero.yaml": "12: roles.api.count: must be >= 1 (got 0)",
    "db-quorum.yaml": "4: roles.db.count: Galera cannot keep quorum with 2 nodes: use 1, or an odd "
                      "number >= 3",
    "mq-quorum.yaml": "5: roles.mq.count: RabbitMQ cannot keep quorum with 4 nodes: use 1, or an odd number "
                      ">= 3",
    "cidr-too-small.yaml": "3: network.cidr: 10.77.0.0/28 is too small for 7 nodes (room for 4); use a "
                           "/27 or larger",
    "bad-name.yaml": "1: name: 'My_Lab' is not a usable lab name: lowercase letters, digits and '-', "
                     "starting with a letter, at most 20 characters (it prefixes libvirt object names)",
    "memory-beyond-host.yaml": re.compile(
        r"5: roles\.api\.memory_mib: the lab needs 1051136 MiB of memory but this host has \d+ MiB "
        r"\(largest share: api 16 x 65536 MiB\)"
    ),
}


def test_every_fixture_has_an_expected_message():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(FIXTURE_ERRORS)


@pytest.mark.parametrize("fixture", sorted(FIXTURE_ERRORS))
def test_fixture_gives_exact_message(fixture):
    path = BAD / fixture
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = FIXTURE_ERRORS[fixture]
    assert len(info.value.errors) == 1, info.value.errors
    (msg,) = info.value.errors
    assert msg.startswith(f"{path}:")
    rest = msg[len(f"{path}:"):]
    if isinstance(expected, str):
        assert rest == expected
    else:
        assert expected.fullmatch(rest), rest


# ---- finer points ------------------------------------------------------------------------------


def test_all_problems_reported_at_once():
    errs = errors_of("name: ok\nroles:\n  api:\n    count: 0\n    vcpus: many\naccel: kvmm\n")
    assert errs == [
        "lab.yaml:4: roles.api.count: must be >= 1 (got 0)",
        "lab.yaml:5: roles.api.vcpus: must be an integer (got string 'many')",
        "lab.yaml:6: accel: must be one of auto, kvm, tcg (got 'kvmm'); did you mean 'kvm'?",
    ]


@pytest.mark.parametrize("count,ok", [(1, True), (2, False), (3, True), (4, False), (5, True), (7, True)])
def test_quorum_sizes(count, ok):
    text = f"roles:\n  db:\n    count: {count}\n  mq:\n    count: {count}\n"
    if ok:
        parse_config(text, host_mem_mib=BIG_HOST)
    else:
        assert [e.split(": ", 2)[1] for e in errors_of(text)] == ["roles.db.count", "roles.mq.count"]


def test_ha_needs_two_haproxy_nodes():
    assert errors_of("profile: ha\nroles:\n  haproxy:\n    count: 1\n") == [
        "lab.yaml:4: roles.haproxy.count: profile 'ha' shares a VIP between HAProxy nodes: needs >= 2 (got 1)"
    ]


def test_cidr_suggestion_fits_the_node_count():
    errs = errors_of("network: 10.0.0.0/27\nroles: {api: {count: 16}, db: {count: 15}, mq: {count: 15}}\n")
    assert errs == ["lab.yaml:1: network.cidr: 10.0.0.0/27 is too small for 47 nodes (room for 20); "
                    "use a /26 or larger"]


@pytest.mark.parametrize("cidr", ["127.0.0.0/24", "8.8.8.0/24", "169.254.0.0/24", "100.64.0.0/24",
                                  "240.0.0.0/24"])
def test_cidr_must_be_rfc1918(cidr):
    (err,) = errors_of(f"network:\n  cidr: {cidr}\n")
    assert err.startswith("lab.yaml:2: network.cidr: must be inside a private range")


@pytest.mark.parametrize("cidr", ["10.0.0.1/24", "10.0.0.0/33", "fd00::/64", "ten"])
def test_cidr_not_a_network(cidr):
    (err,) = errors_of(f"network:\n  cidr: '{cidr}'\n")
    assert err.startswith("lab.yaml:2: network.cidr: not an IPv4 network in CIDR form")


@pytest.mark.parametrize("name", ["My_Lab", "1lab", "lab.x", "a" * 21, "-lab", "lab space", ""])
def test_names_libvirt_would_reject(name):
    (err,) = errors_of(f"name: '{name}'\n")
    assert err.startswith("lab.yaml:1: name: ") and "not a usable lab name" in err


def test_memory_beyond_host_uses_given_host_size():
    (err,) = errors_of("name: m\n", host_mem_mib=2048)
    assert err == ("lab.yaml:1: roles.api.memory_mib: the lab needs 4608 MiB of memory but this host has "
                   "2048 MiB (largest share: api 4 x 512 MiB)")


@pytest.mark.parametrize("text,expected", [
    ("- a\n- b\n", "lab.yaml:1: (top level): must be a mapping (got list)"),
    ("roles: [api]\n", "lab.yaml:1: roles: must be a mapping (got list)"),
    ("name: a\nname: b\n", "lab.yaml:2: name: duplicate key (first at line 1)"),
    ("haproxy:\n  redispatch: 'yes'\n",
     "lab.yaml:2: haproxy.redispatch: must be true or false (got string 'yes')"),
    ("traffic:\n  rate: .nan\n", "lab.yaml:2: traffic.rate: must be between 0.1 and 1000 (got nan)"),
    ("name: !!python/object:os.system x\n",
     "lab.yaml:1: name: unsupported YAML value: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'"),
    ("roles: !!omap [{api: 1}]\n", "lab.yaml:1: roles: unsupported YAML tag 'tag:yaml.org,2002:omap'"),
    ("? [a]\n: 1\n", "lab.yaml:1: (top level): keys must be plain names"),
    ("name: [unclosed\n",
     "lab.yaml:2: not valid YAML: while parsing a flow sequence, expected ',' or ']', "
     "but got '<stream end>'"),
    ("name: x\n---\nname: y\n",
     "lab.yaml:2: not valid YAML: expected a single document in the stream, but found another document"),
    ("a: &a [*a]\n", "lab.yaml:1: a[0]: recursive alias: a value cannot contain itself"),
    ("traffic:\n  read_share: 0.9\n", "lab.yaml:1: traffic: read_share + write_share + page_share must be 1 "
                                      "(got 1.2)"),
])
def test_structural_errors(text, expected):
    assert errors_of(text) == [expected]


def test_alias_bomb_is_cut_short():
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    (err,) = errors_of("\n".join(lines) + "\n")
    assert f"more than {MAX_YAML_NODES} values (alias expansion?)" in err


def test_deep_nesting_is_a_config_error():
    errs = errors_of("[" * 3000 + "]" * 3000)
    assert errs[0].startswith("lab.yaml:1: not valid YAML:")


def test_missing_image_and_long_names(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("image: " + "x" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    (err,) = info.value.errors
    assert err.startswith(f"{f}:1: image: 'builtin' or the path of a cloud image; 'xxx")
    assert len(err) < 300


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_unknown_node_suggests():
    cfg = parse_config("", host_mem_mib=BIG_HOST)
    with pytest.raises(ConfigError, match="did you mean 'api-1'"):
        cfg.node("api1")


def test_traffic_rate_defaults_lower_under_tcg_unless_set():
    from halab.lab.config import TCG_TRAFFIC_RATE, parse_config

    auto = parse_config("name: t1\n", host_mem_mib=1 << 20)
    assert auto.traffic.rate_auto and auto.traffic.rate == 50.0
    assert auto.for_accel("kvm").traffic.rate == 50.0
    assert auto.for_accel(None).traffic.rate == 50.0
    assert auto.for_accel("tcg").traffic.rate == TCG_TRAFFIC_RATE < 50.0
    explicit = parse_config("name: t1\ntraffic: {rate: 30}\n", host_mem_mib=1 << 20)
    assert not explicit.traffic.rate_auto
    assert explicit.for_accel("tcg").traffic.rate == 30.0


def test_probe_timeouts_follow_the_accelerator():
    """halab's own probes wait longer for an emulated guest: a slow-but-alive balancer is not a
    dead one. for_accel records what the lab runs under; the probes read it."""
    from halab.observe.probes import HAProxyProbe, HealthProbe, ProbeSet

    cfg = parse_config("name: t\n", "lab.yaml", host_mem_mib=1 << 20)
    assert cfg.runs_on is None and cfg.probe_timeout_s == 0.4
    tcg, kvm = cfg.for_accel("tcg"), cfg.for_accel("kvm")
    assert (tcg.runs_on, tcg.probe_timeout_s) == ("tcg", 1.0)
    assert (kvm.runs_on, kvm.probe_timeout_s) == ("kvm", 0.4)
    assert tcg.for_accel("tcg") == tcg
    probes = ProbeSet.for_lab(tcg, None, stats_auth=("u", "p"), ssh=None).probes
    timed = [p for p in probes if isinstance(p, HAProxyProbe | HealthProbe)]
    assert timed and all(p.timeout == 1.0 for p in timed)
