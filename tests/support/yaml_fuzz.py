"""Hypothesis strategies for hostile lab and scenario files, as YAML *text*.

`yaml.safe_dump` of generated data cannot produce what breaks loaders (explicit tags, integers of
thousands of digits, raw control characters, aliases), so the documents are written here: the keys
halab knows, with values drawn from valid ones and from every class of bad input issue 15 lists.
Used by the property tests (tests/unit/test_*_properties.py) and bench/fuzz_loaders.py.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from halab.lab.config import ROLES, TOP_KEYS

TAGS = ["!!timestamp", "!!bool", "!!int", "!!float", "!!str", "!!null", "!!binary", "!!set", "!!omap",
        "!!python/object:os.system", "!!python/name:os.system", "!mine", "!", "!!merge", "!<tag:x>"]
NASTY = [
    "!!timestamp x", "!!bool maybe", "!!int abc", "!!float x", "!!binary aGk=", "!!str 12", "!mine x",
    "!!timestamp 2001-01-01", "!!python/object/apply:os.system ['true']", "!!int 0x" + "f" * 40,
    ".nan", ".inf", "-.inf", ".NaN", "1e999", "2001-13-45", "2001-01-01", "~", "null", "yes", "off",
    "~nosuchuser-halab/disk.qcow2", "~/x.qcow2", "/" + "a" * 300, "/a" * 2100, "x" * 5000,
    '"a\\x01b"', '"\\e[31mred"', '"lab\\n"', "'lab\n\n'", '"\\u2028"', '"\\ud800"', '"\\0"', '"tab\\there"',
    "*undefined", "&anchor value", "[1, [2, [3]]]", "{a: {b: {c: d}}}", "[" * 50 + "]" * 50,
    "0b" + "1" * 500, ":".join(["59"] * 400), "9" * 4400, "-" + "9" * 5000, "0o777", "1_000", "+12",
    "'qemu+ext:///system?command=/tmp/p'", "'qemu+ssh://h/system?command=/tmp/p'", "'qemu+ssh://h/s?netcat=x'",
    "'qemu+ssh://h/s?no_verify=1;comm%61nd=x'", "'test:///default'", "'qemu:///session'", "'qemu+tls://h/system'",
    "|\n  multi\n  line", ">-\n  folded", "?", "- - -", "{", "]", "'unterminated", '"bad \\q escape"',
]
WORDS = ["auto", "kvm", "tcg", "ha", "default", "nat", "isolated", "fast", "kolla", "builtin", "10.1.0.0/24",
         "192.168.9.0/24", "lab", "my-lab", "api-2", "db-1", "mq-1", "haproxy-1", "api-9", "kill", "netem",
         "start", "stop", "all", "last", "end", "conn-failure 503", "true", "false", "0", "1", "3", "512",
         "1024", "0.5", "0.1", "50", "-1"]


def _quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


scalar = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(NASTY),
    st.integers(-(10**6), 10**6).map(str),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"nan": ".nan", "inf": ".inf",
                                                                  "-inf": "-.inf"}.get(repr(f), repr(f))),
    st.text(max_size=24).map(_quoted),
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=8).map(_quoted),
    st.tuples(st.sampled_from(TAGS), st.sampled_from([*WORDS, "x", "maybe", "2001-01-01"])).map(" ".join),
    st.integers(1, 3000).map(lambda n: "'" + "y" * n + "'"),
)


def _block(value: object, indent: int) -> list[str]:
    """Render a generated tree: dicts and lists in block style, leaves as scalar text."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines += _block(v, indent + 2)
            else:
                lines.append(f"{pad}{k}: {_flow(v)}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict) and v:
                sub = _block(v, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_flow(v)}")
    else:
        lines.append(pad + _flow(value))
    return lines


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def render(value: object) -> str:
    return "\n".join(_block(value, 0)) + "\n"


def _keys(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), st.sampled_from(["x" * 300, "'a\\x01'", '"\\e"', "1", "~", "<<",
                                                              "? [a]", "&k key", "*k"]),
                     st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))


LAB_KEYS = [*TOP_KEYS, *ROLES, "count", "memory_mib", "vcpus", "cidr", "mode", "preset", "inter_ms", "fall",
            "rise", "redispatch", "retry_on", "rate", "read_share", "write_share", "page_share", "page_calls",
            "timeout_ms"]
SCENARIO_KEYS = ["name", "description", "profile", "preset", "hypotheses", "steps", "traffic", "wait",
                 "fault", "revive", "undo", "restore", "mark", "measure", "expect", "until", "timeout",
                 "seconds", "action", "node", "params", "delay_ms", "loss_pct", "check", "service", "hard"]


def _tree(keys: list[str], leaves: int = 20) -> st.SearchStrategy[object]:
    return st.recursive(scalar, lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_keys(keys), children, max_size=5)),
        max_leaves=leaves)


def _mutated(doc: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Documents, sometimes with a raw character (often a control character) spliced in."""
    splice = st.tuples(doc, st.integers(0, 10_000), st.characters(max_codepoint=0x2030)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1):])
    return st.one_of(doc, doc, splice)


# Field values: mostly plausible words, so documents also get past the first refusal to the checks
# that combine fields (quorum, subnet size, traffic shares).
value = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS), scalar)
_role = st.dictionaries(st.sampled_from(["count", "memory_mib", "vcpus", "cuont"]),
                        st.one_of(st.sampled_from(["1", "3", "2", "512", "1024", "0"]), value), max_size=3)
lab_doc = st.fixed_dictionaries({}, optional={
    "name": value, "profile": value, "image": value, "accel": value, "libvirt_uri": value,
    "network": st.one_of(value, st.fixed_dictionaries({}, optional={"cidr": value, "mode": value})),
    "roles": st.one_of(value, st.dictionaries(st.sampled_from([*ROLES, "apis"]), _role, max_size=4)),
    "haproxy": st.one_of(value, st.dictionaries(st.sampled_from(
        ["preset", "inter_ms", "fall", "rise", "redispatch", "retry_on", "timeout_check_ms"]), value,
        max_size=4)),
    "traffic": st.one_of(value, st.dictionaries(st.sampled_from(
        ["rate", "read_share", "write_share", "page_share", "page_calls", "timeout_ms"]), value,
        max_size=4)),
    "extra": _tree(LAB_KEYS, 8),
})
lab_texts = _mutated(st.one_of(lab_doc.map(render), _tree(LAB_KEYS).map(render)))

_hyp = st.one_of(st.sampled_from(["failed_reads == 0", "errors <= 3", "read_availability >= 99.9 %",
                                  "node api-2 DOWN within 30 s", "writes stuck", "detection_ratio <= 1.25",
                                  "error_window_s <= 2000 ms", "p99_latency_ms < 1e999", "errors <= nan",
                                  "node api-2 DOWN within " + "9" * 5000 + " s", "availability >= 120 %"]),
                 scalar)
_step = st.one_of(
    st.fixed_dictionaries({"traffic": st.one_of(st.sampled_from(["start", "stop"]), scalar,
                                                 st.fixed_dictionaries({"rate": scalar}))}),
    st.fixed_dictionaries({"wait": st.one_of(scalar, st.fixed_dictionaries({}, optional={
        "seconds": scalar,
        "until": st.one_of(st.sampled_from(["detected", "recovered", "steady 5 s", "node api-2 DOWN",
                                            "steady " + "9" * 5000 + " s"]), scalar),
        "timeout": scalar}))}),
    st.fixed_dictionaries({"fault": st.fixed_dictionaries({}, optional={
        "action": st.one_of(st.sampled_from(["kill", "netem", "pause", "stop-service", "reboot"]), scalar),
        "node": st.one_of(st.sampled_from(["api-2", "db-1", "api-2\\n"]), scalar),
        "params": st.one_of(scalar, st.dictionaries(
            st.sampled_from(["delay_ms", "loss_pct", "jitter_ms", "service", "hard"]), scalar,
            max_size=3))})}),
    st.fixed_dictionaries({"revive": st.one_of(st.sampled_from(["api-2", "db-1"]), scalar)}),
    st.fixed_dictionaries({"undo": st.one_of(st.just("last"), scalar)}),
    st.fixed_dictionaries({"restore": st.one_of(st.just("all"), scalar)}),
    st.fixed_dictionaries({"mark": scalar}),
    st.fixed_dictionaries({"measure": st.one_of(st.sampled_from(["start", "end"]), scalar)}),
    st.fixed_dictionaries({"preset": scalar}),
    _tree(SCENARIO_KEYS, 6),
).flatmap(lambda step: st.fixed_dictionaries({}, optional={
    "name": scalar, "expect": st.lists(_hyp, max_size=3)}).map(
        lambda extra: {**step, **extra} if isinstance(step, dict) else step))
scenario_doc = st.fixed_dictionaries({"steps": st.one_of(st.lists(_step, max_size=6), scalar)}, optional={
    "name": scalar, "description": scalar, "profile": st.one_of(scalar, st.lists(scalar, max_size=3)),
    "preset": scalar, "hypotheses": st.one_of(scalar, st.lists(_hyp, max_size=4)),
})
scenario_texts = _mutated(st.one_of(scenario_doc.map(render), scenario_doc.map(render),
                                    _tree(SCENARIO_KEYS).map(render)))
