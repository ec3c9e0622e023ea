"""Property tests: whatever text arrives, parse_config returns a LabConfig or raises ConfigError,
and every ConfigError line names the file and a line number."""

from __future__ import annotations

import os
import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halab.errors import ConfigError
from halab.lab.config import ROLES, TOP_KEYS, LabConfig, parse_config

BIG_HOST = 1 << 20
LOCATED = re.compile(r"^lab\.yaml:\d+: ")
# HALAB_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the unit tier in seconds.
SETTINGS = settings(max_examples=int(os.environ.get("HALAB_FUZZ_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(text: str) -> None:
    try:
        cfg = parse_config(text, "lab.yaml", host_mem_mib=BIG_HOST)
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must carry at least one message"
        for line in exc.errors:
            assert LOCATED.match(line), line
            assert "\n" not in line and len(line) < 700, line  # one readable line
        return
    assert isinstance(cfg, LabConfig)
    # A config that validates must also be usable by every layer.
    nodes = cfg.nodes()
    assert len({n.ip for n in nodes}) == len(nodes)
    assert cfg.vip and cfg.gateway and cfg.bridge_name


@SETTINGS
@given(st.text())
def test_random_text(text):
    check(text)


# Characters YAML gives meaning to, so random text reaches deeper parser states.
YAML_ALPHABET = st.sampled_from([*"abcmnrotu01239 :-[]{},&*!|>'\"#?%@`\n\t.~/\\", "<<", "---", "..."])


@SETTINGS
@given(st.lists(YAML_ALPHABET, max_size=80).map("".join))
def test_random_yaml_looking_text(text):
    check(text)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["auto", "kvm", "tcg", "ha", "default", "nat", "10.1.0.0/24"]),
)
keys = st.one_of(st.sampled_from([*TOP_KEYS, *ROLES, "count", "memory_mib", "vcpus", "cidr", "mode",
                                  "preset", "fall", "rate"]), st.text(max_size=12))
nested = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)


@SETTINGS
@given(nested)
def test_random_structures_dumped_to_yaml(data):
    check(yaml.safe_dump(data))


# Mostly-valid configs: the right keys with random values, so the validators themselves are exercised.
role_spec = st.dictionaries(st.sampled_from(["count", "memory_mib", "vcpus", "cuont"]),
                            st.one_of(st.integers(-5, 70000), scalars), max_size=3)
lab = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,24}", fullmatch=True), scalars),
    "profile": st.one_of(st.sampled_from(["default", "ha", "hA"]), scalars),
    "network": st.one_of(
        st.fixed_dictionaries({}, optional={
            "cidr": st.one_of(
                st.builds(lambda a, p: f"10.{a}.0.0/{p}", st.integers(0, 300), st.integers(8, 32)), scalars),
            "mode": st.one_of(st.sampled_from(["nat", "isolated"]), scalars)}),
        scalars),
    "roles": st.one_of(st.dictionaries(st.sampled_from([*ROLES, "apis"]), role_spec, max_size=5), scalars),
    "accel": st.one_of(st.sampled_from(["auto", "kvm", "tcg"]), scalars),
    "libvirt_uri": st.one_of(st.just("test:///default"), scalars),
    "haproxy": st.one_of(st.dictionaries(
        st.sampled_from(["preset", "inter_ms", "fall", "rise", "redispatch", "retry_on", "timeout_ms"]),
        st.one_of(st.sampled_from(["fast", "kolla", "conn-failure 503"]), st.integers(-1, 700000), scalars),
        max_size=4), scalars),
    "traffic": st.one_of(st.dictionaries(
        st.sampled_from(["rate", "read_share", "write_share", "page_share", "page_calls", "timeout_ms"]),
        st.one_of(st.floats(-1, 2000), st.integers(-1, 100000), scalars), max_size=4), scalars),
})


@SETTINGS
@given(lab)
def test_random_lab_definitions(data):
    check(yaml.safe_dump(data))


# Hostile documents written as YAML text (tests/support/yaml_fuzz.py): explicit tags, integers of
# thousands of digits, control characters raw and escaped, ~user and over-long paths, NaN/inf,
# program-running libvirt URIs, aliases, deep nesting (issue 15).
from tests.support.yaml_fuzz import lab_texts  # noqa: E402


@SETTINGS
@given(lab_texts)
def test_hostile_lab_files(text):
    check(text)
