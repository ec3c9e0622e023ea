"""The lab definition: `lab.yaml` read into a typed, validated model.

Every error names file, line and field, e.g. ``lab.yaml:12: roles.api.count: must be >= 1 (got 0)``,
so a user can fix the file without reading halab's code.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
import os
import re
import stat
import urllib.parse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from halab.errors import ConfigError, UsageError

ROLES = ("haproxy", "api", "db", "mq")
PROFILES = ("default", "ha")
ACCELS = ("auto", "kvm", "tcg")
NETWORK_MODES = ("nat", "isolated")
HAPROXY_PRESETS = ("fast", "kolla")
TCG_TRAFFIC_RATE = 8.0  # default operations/s under software emulation (see LabConfig.for_accel)
CONFIG_ENV = "HALAB_CONFIG"
TOP_KEYS = ("name", "profile", "network", "roles", "image", "accel", "libvirt_uri", "haproxy", "traffic",
            "checkpoint", "revive", "boot", "hosts", "placement")
HOST_KEYS = ("uri", "underlay", "ssh")
SSH_KEYS = ("target", "port", "keyfile", "known_hosts")
MAX_HOSTS = 8
# How the nodes boot: auto = in waves (db, mq, api, haproxy; each when the one before answers) for a
# TCG lab of more than seven nodes, all at once otherwise; waves; together.
BOOT_MODES = ("auto", "waves", "together")
# How a killed node comes back: auto = warm (from the `ready` checkpoint) for stateless roles under
# TCG, where a cold boot takes a host core for minutes, cold on KVM; cold; warm (stateless roles).
REVIVE_MODES = ("auto", "cold", "warm")

_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# Network address, .1 gateway, .2-.9 spare, .10 VIP, broadcast: nodes start at .11.
_RESERVED_ADDRESSES = 12

# libvirt accepts more, but these names also become file names, bridge parts and hostnames.
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}\Z")  # \Z: "$" would let a trailing newline in

PROFILE_COUNTS: dict[str, dict[str, int]] = {
    "default": {"haproxy": 1, "api": 4, "db": 1, "mq": 1},
    "ha": {"haproxy": 2, "api": 4, "db": 3, "mq": 3},
}
ROLE_DEFAULTS: dict[str, dict[str, int]] = {
    "haproxy": {"memory_mib": 512, "vcpus": 1},
    "api": {"memory_mib": 512, "vcpus": 1},
    "db": {"memory_mib": 1024, "vcpus": 1},
    "mq": {"memory_mib": 1024, "vcpus": 1},
}

# HAProxy health-check presets. "fast" is halab's default; "kolla" mirrors kolla-ansible's.
HAPROXY_PRESET_VALUES: dict[str, dict[str, Any]] = {
    "fast": {
        "inter_ms": 1000,
        "fastinter_ms": 250,
        "downinter_ms": 1000,
        "rise": 2,
        "fall": 2,
        "retries": 3,
        "redispatch": True,
        "observe_layer4": True,
        "retry_on": "conn-failure empty-response response-timeout 502 503 504",
        # A check or request to a powered-off node gets no answer at all, so this is what detecting
        # it costs; a LAN connect to a live node answers in well under a millisecond.
        "timeout_connect_ms": 500,
        "timeout_server_ms": 10000,
        # A dead node fails the check's connect (timeout_connect_ms); this only bounds a live node's
        # answer, and a busy emulated node can take over a second: no flapping of slow-but-alive nodes.
        "timeout_check_ms": 2000,
        # Reads (GET/HEAD) only, retried elsewhere when it expires; below the traffic client's 2 s.
        "read_timeout_ms": 1500,
    },
    "kolla": {
        "inter_ms": 2000,
        "fastinter_ms": 2000,
        "downinter_ms": 2000,
        "rise": 2,
        "fall": 5,
        "retries": 3,
        "redispatch": True,
        "observe_layer4": False,
        "retry_on": "conn-failure",
        "timeout_connect_ms": 10000,
        "timeout_server_ms": 60000,
        "timeout_check_ms": 2000,  # kolla sets none: HAProxy then bounds a check by `inter`
        "read_timeout_ms": 0,  # 0: reads wait as long as writes (timeout_server_ms)
    },
}


@dataclass(frozen=True)
class RoleSpec:
    count: int
    memory_mib: int
    vcpus: int


@dataclass(frozen=True)
class NetworkSpec:
    cidr: str = "10.77.0.0/24"
    mode: str = "nat"


@dataclass(frozen=True)
class HAProxySettings:
    preset: str = "fast"
    inter_ms: int = 1000
    fastinter_ms: int = 250
    downinter_ms: int = 1000
    rise: int = 2
    fall: int = 2
    retries: int = 3
    redispatch: bool = True
    observe_layer4: bool = True
    retry_on: str = "conn-failure empty-response response-timeout 502 503 504"
    timeout_connect_ms: int = 500
    timeout_server_ms: int = 10000
    timeout_check_ms: int = 2000
    read_timeout_ms: int = 1500  # 0: none apart from timeout_server_ms

    def expected_detection_s(self, silent: bool = True) -> float:
        """Worst-case time from a failed server to DOWN. The first failed check starts up to `inter`
        after the failure, the others `fastinter` after the previous one ended. A silent server
        (powered off, paused, cut off) makes every check wait out its connect timeout, which HAProxy
        takes as min(timeout connect, inter) once `timeout check` is set; a server that refuses the
        connection (service stopped) fails each check at once. Measured under TCG: kolla 19-20 s for
        a killed node (inter x fall alone would say 10 s), fast 0.6-2.2 s."""
        wait = min(self.timeout_connect_ms, self.inter_ms) if silent else 0
        return (self.inter_ms + (self.fall - 1) * self.fastinter_ms + self.fall * wait) / 1000.0

    def detection_basis(self, silent: bool = True) -> str:
        base = f"HAProxy inter {self.inter_ms} ms + (fall {self.fall} - 1) x fastinter {self.fastinter_ms} ms"
        if not silent:
            return base + " (a refused connection fails each check at once)"
        wait = min(self.timeout_connect_ms, self.inter_ms)
        return base + f" + fall x connect wait {wait} ms (a silent node: each check waits out its connect)"


# The traffic rates halab accepts anywhere (lab.yaml, --rate, scenarios, the TUI), in operations/s
# (a read, a write or a page load each count one; a page load is several HTTP requests).
MIN_RATE = 0.1
MAX_RATE: float = 1000  # an int, so messages say "1000"


def check_rate(rate: float, what: str = "traffic rate") -> float:
    """``rate`` as a float if halab accepts it; a UsageError naming ``what`` otherwise."""
    if not MIN_RATE <= rate <= MAX_RATE:  # NaN fails too
        raise UsageError(f"{what} must be between {MIN_RATE:g} and {MAX_RATE:g} operations/s (got {rate:g})")
    return float(rate)


@dataclass(frozen=True)
class TrafficSettings:
    rate: float = 50.0
    # True while lab.yaml leaves the rate unset: LabConfig.for_accel() then lowers it under TCG.
    rate_auto: bool = True
    read_share: float = 0.7
    write_share: float = 0.1
    page_share: float = 0.2
    page_calls: int = 8
    timeout_ms: int = 2000


@dataclass(frozen=True)
class SshTarget:
    """How halab runs its few host commands (the tunnel's `ip`/`bridge`) on a remote host: the
    user's own ssh to ``user@host``, never anything a lab file could turn into another program."""

    user: str
    host: str
    port: int = 22
    keyfile: str | None = None
    known_hosts: str | None = None

    def argv(self, command: list[str]) -> list[str]:
        """ssh's command line for ``command`` (halab's own argv, each word quoted for the remote
        shell). BatchMode: a missing key fails at once instead of asking for a password."""
        import shlex

        out = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(self.port)]
        if self.keyfile:
            out += ["-i", self.keyfile, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            out += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        target = f"{self.user}@{self.host}" if self.user else self.host
        return [*out, "--", target, " ".join(shlex.quote(w) for w in command)]

    def __str__(self) -> str:
        return f"ssh {self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class HostSpec:
    """One machine of a lab spread over several: its libvirt, its underlay address (the tunnel's
    endpoint) and how halab runs the tunnel's commands there (None: this machine itself)."""

    name: str
    uri: str
    underlay: str
    ssh: SshTarget | None = None

    @property
    def local(self) -> bool:
        return self.ssh is None


@dataclass(frozen=True)
class Node:
    name: str  # e.g. "api-2"
    role: str
    index: int  # 1-based within the role
    ip: str
    mac: str
    memory_mib: int
    vcpus: int
    host: str = ""  # the host it runs on; "" for a lab on one host


@dataclass(frozen=True)
class LabConfig:
    name: str = "halab"
    profile: str = "default"
    network: NetworkSpec = field(default_factory=NetworkSpec)
    roles: dict[str, RoleSpec] = field(default_factory=dict)
    image: str = "builtin"
    accel: str = "auto"
    libvirt_uri: str = "qemu:///system"
    haproxy: HAProxySettings = field(default_factory=HAProxySettings)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    checkpoint: bool = True  # `up` takes the `ready` checkpoint when the lab is first ready
    revive: str = "auto"
    boot: str = "auto"
    source: str = "<built-in default>"
    runs_on: str | None = None  # the accelerator the lab was found to run under (for_accel)
    hosts: tuple[HostSpec, ...] = ()  # empty: the lab lives on libvirt_uri alone
    placement: tuple[tuple[str, str], ...] = ()  # (node, host) for every node when hosts are given

    # ---- several hosts -----------------------------------------------------------------------
    @property
    def multihost(self) -> bool:
        return bool(self.hosts)

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts) or "(none: this lab has no hosts:)"
        raise ConfigError([one_line(f"no host {clip(repr(name))} in lab {self.name!r}; hosts: {known}")])

    def host_of(self, node: str) -> HostSpec | None:
        """The host a node is placed on; None for a lab on one host."""
        where = dict(self.placement).get(node)
        return None if where is None else self.host(where)

    def uri_of(self, node: str) -> str:
        h = self.host_of(node)
        return self.libvirt_uri if h is None else h.uri

    def nodes_on(self, host: str) -> list[Node]:
        return [n for n in self.nodes() if n.host == host]

    @property
    def primary_host(self) -> HostSpec | None:
        """The first host: its lab network carries the gateway (and NAT); the others' are plain
        bridges joined to it by the tunnel."""
        return self.hosts[0] if self.hosts else None

    @property
    def tunnel_name(self) -> str:
        """The VXLAN device on every host (Linux's 15 characters): the lab's bridge name + "vx"."""
        return self.bridge_name + "vx"

    @property
    def vni(self) -> int:
        """The lab's VXLAN network identifier: from its name, so two labs over the same hosts differ."""
        return 1 + int.from_bytes(hashlib.sha256(f"vni/{self.name}".encode()).digest()[:3], "big") % 0xFFFFFE

    # ---- derived facts every layer agrees on -------------------------------------------------
    def for_accel(self, accel: str | None) -> LabConfig:
        """Defaults that depend on the accelerator the lab runs under. The traffic rate: 50 ops/s
        (~120 HTTP requests/s) is comfortable on KVM, but seven emulated (TCG) VMs on two cores
        serve about 12 ops/s before health checks time out, and traffic above capacity measures
        the overload rather than the failover. An explicit ``traffic.rate`` is kept."""
        out = self if accel is None or accel == self.runs_on else replace(self, runs_on=accel)
        if accel != "tcg" or not self.traffic.rate_auto:
            return out
        return replace(out, traffic=replace(self.traffic, rate=TCG_TRAFFIC_RATE))

    @property
    def probe_timeout_s(self) -> float:
        """How long halab's own probes (HAProxy stats, API health) wait for an answer. An emulated
        guest on a busy host answers its stats page in 0.05-0.35 s (seen at load 35 with twelve
        TCG VMs): a 0.4 s limit read a slow-but-alive balancer as unreachable, a false event that
        a scenario then took for the fault's detection."""
        return 1.0 if self.runs_on == "tcg" else 0.4

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.network.cidr, strict=False)

    @property
    def gateway(self) -> str:
        return str(self.ip_network.network_address + 1)

    @property
    def vip(self) -> str:
        """The address clients use. With one HAProxy it is that node's own address; with
        several, a keepalived VIP."""
        if self.roles["haproxy"].count > 1:
            return str(self.ip_network.network_address + 10)
        return self.nodes()[0].ip

    @property
    def network_name(self) -> str:
        return f"{self.name}-net"

    @property
    def bridge_name(self) -> str:
        # Linux caps interface names at 15 characters; a hash keeps labs apart.
        return "hl" + hashlib.sha256(self.name.encode()).hexdigest()[:8]

    def domain_name(self, node: Node | str) -> str:
        return f"{self.name}-{node if isinstance(node, str) else node.name}"

    def nodes(self) -> list[Node]:
        """All nodes in a stable order: haproxy, api, db, mq; addresses from .11 upwards."""
        out: list[Node] = []
        base = self.ip_network.network_address + 11
        offset = 0
        where = dict(self.placement)
        for role in ROLES:
            spec = self.roles[role]
            for i in range(1, spec.count + 1):
                name = f"{role}-{i}"
                digest = hashlib.sha256(f"{self.name}/{name}".encode()).digest()
                mac = f"52:54:00:{digest[0]:02x}:{digest[1]:02x}:{digest[2]:02x}"
                out.append(Node(name, role, i, str(base + offset), mac, spec.memory_mib, spec.vcpus,
                                where.get(name, "")))
                offset += 1
        return out

    def node(self, name: str) -> Node:
        for n in self.nodes():
            if n.name == name:
                return n
        known = [n.name for n in self.nodes()]
        hint = difflib.get_close_matches(name, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError([one_line(f"no node {clip(repr(name))} in lab {self.name!r}{extra}; "
                                    f"nodes: {', '.join(known)}")])

    def total_memory_mib(self) -> int:
        return sum(n.memory_mib for n in self.nodes())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        if not self.hosts:  # a lab on one host reads as it always did
            d.pop("hosts")
            d.pop("placement")
        else:
            d["placement"] = dict(self.placement)
        return d


# ---- loading ---------------------------------------------------------------------------------


class _Located:
    """A YAML value with the line it came from."""

    __slots__ = ("line", "value")

    def __init__(self, value: Any, line: int):
        self.value = value
        self.line = line


# A lab.yaml is a few dozen values; anything far larger is a mistake or an alias bomb
# ("billion laughs"), which would otherwise take minutes to expand.
MAX_YAML_NODES = 10_000
_STD_TAGS = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}


# What YAML itself refuses (its "printable" set), found before parsing so the message names the right
# line in one sentence; PyYAML's own report says line 1 and spans two lines.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
# Control characters a double-quoted YAML string can still carry through escapes ("\e", "\x01"):
# they would rewrite the terminal a message is printed to, or split a name across lines.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # + lone surrogates
# Scalar tags a lab file may spell out: YAML's core schema. Anything else (!!timestamp, !!binary,
# custom and python tags) has no business in a lab definition.
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_MAX_INT_DIGITS = 30  # far beyond any field's range; also keeps int() and str() of it cheap
_SHOW_MAX = 60


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def clip(text: str, limit: int = _SHOW_MAX) -> str:
    """A value cut to a readable length for a message: a 1 MB value is not echoed whole."""
    return text if len(text) <= limit else text[:limit] + "…"


_UNPRINTABLE_IN_MESSAGE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """A message as one printable line: a key or value with a line break or an escape sequence
    in it is shown escaped, so it can neither split the message nor drive the terminal."""
    return _UNPRINTABLE_IN_MESSAGE.sub(lambda m: ascii(m.group())[1:-1], text)


def _line_at(text: str, pos: int) -> int:
    return len(_LINE_BREAK.findall(text, 0, pos)) + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader that marks scalars whose tag was written out: `!!timestamp 2001-01-01` and a plain
    `2001-01-01` compose to the same node otherwise."""

    def compose_scalar_node(self, anchor: str | None) -> yaml.ScalarNode:
        tag = self.peek_event().tag
        node = super().compose_scalar_node(anchor)
        node.explicit_tag = tag not in (None, "!")  # type: ignore[attr-defined]
        return node


def _compose(text: str, fname: str) -> Any:
    bad = _NON_PRINTABLE.search(text)
    if bad:
        ch = bad.group()
        line = _line_at(text, bad.start())
        col = bad.start() - max(text.rfind("\n", 0, bad.start()), text.rfind("\r", 0, bad.start()))
        raise ConfigError([f"{fname}:{line}: control character U+{ord(ch):04X} at column {col} is not "
                           "allowed (YAML takes tab and line breaks only)"])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise ConfigError([f"{fname}:{line}: not valid YAML: {clip(' '.join(what.split()), 200)}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{fname}:1: not valid YAML: {clip(' '.join(str(exc).split()), 200)}"]) from None
    except (ValueError, RecursionError) as exc:  # e.g. unusual characters, deeply nested input
        raise ConfigError([f"{fname}:1: not valid YAML: {clip(' '.join(str(exc).split()), 200)}"]) from None
    if node is None:
        return None
    builder = _Builder(fname)
    try:
        return builder.build(node, "")
    except RecursionError:
        raise ConfigError([f"{fname}:1: not valid YAML: nested too deeply"]) from None


class _Builder:
    """Turns composed YAML nodes into `_Located` values, keeping each value's line.

    Guards against what a plain loader would choke on: recursive aliases (``&a [*a]``), alias
    bombs (node budget), tags other than YAML's plain scalars and collections (``!!python/object``,
    ``!!timestamp`` …), integers of thousands of digits and control characters in strings.
    """

    def __init__(self, fname: str):
        self.fname = fname
        self.count = 0
        self.active: set[int] = set()  # ids of collection nodes on the current path
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, path: str, msg: str) -> ConfigError:
        where = f"{clip(path)}: " if path else "(top level): "
        return ConfigError([one_line(f"{self.fname}:{node.start_mark.line + 1}: {where}{msg}")])

    def build(self, node: yaml.Node, path: str) -> _Located:
        self.count += 1
        if self.count > MAX_YAML_NODES:
            raise self.fail(node, path, f"more than {MAX_YAML_NODES} values (alias expansion?); "
                            "a lab definition is a few dozen")
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return _Located(self._scalar(node, path), line)
        if node.tag != _STD_TAGS.get(type(node)):
            raise self.fail(node, path, f"unsupported YAML tag {clip(node.tag)!r}")
        if id(node) in self.active:
            raise self.fail(node, path, "recursive alias: a value cannot contain itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return _Located([self.build(v, f"{path}[{i}]") for i, v in enumerate(node.value)], line)
            return _Located(self._mapping(node, path), line)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, _Located]:
        out: dict[str, _Located] = {}
        keylines: dict[str, int] = {}
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if not isinstance(knode, yaml.ScalarNode):
                raise self.fail(knode, path or "(top level)", "keys must be plain names")
            key = str(knode.value)
            where = f"{path}.{clip(key)}" if path else clip(key)
            bad = _CONTROL.search(key)
            if bad:
                raise self.fail(knode, where, f"control character U+{ord(bad.group()):04X} in a key")
            if key in out:
                raise self.fail(knode, where, f"duplicate key (first at line {keylines[key]})")
            keylines[key] = kline
            out[key] = self.build(vnode, where)
            out[key].line = kline
        return out

    def _scalar(self, node: yaml.ScalarNode, path: str) -> Any:
        tag = node.tag
        explicit = getattr(node, "explicit_tag", False)
        if explicit and tag not in _PLAIN_TAGS and tag in self.constructor.yaml_constructors:
            raise self.fail(node, path, f"unsupported YAML tag {_short_tag(tag)!r}: write the plain value")
        digits = len(re.sub("[^0-9a-fA-F]", "", node.value))
        if tag == "tag:yaml.org,2002:int" and digits > _MAX_INT_DIGITS:
            raise self.fail(node, path, f"an integer of {digits} digits is far too large")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise self.fail(node, path, f"unsupported YAML value: {clip(str(exc.problem), 120)}") from None
        except (ValueError, OverflowError, TypeError, KeyError, IndexError, AttributeError):
            if explicit:
                raise self.fail(node, path, f"{clip(node.value)!r} is not a valid {_short_tag(tag)} value"
                                ) from None
            # Looks like a typed scalar but is not one (e.g. the "date" 2001-13-45): keep the text,
            # the field's own type check then reports it.
            value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
            raise self.fail(node, path, f"integer {clip(node.value)!r} is far too large")  # 0x…, 1:2:3…
        if isinstance(value, str):
            bad = _CONTROL.search(value)
            if bad:
                raise self.fail(node, path, f"control character U+{ord(bad.group()):04X} is not allowed")
        return value


class _Reader:
    """Walks located YAML, collecting every problem instead of stopping at the first."""

    def __init__(self, fname: str):
        self.fname = fname
        self.errors: list[str] = []

    def err(self, line: int, path: str, msg: str) -> None:
        # Values are clipped where they are quoted; this bounds whatever else a message embeds.
        self.errors.append(one_line(f"{self.fname}:{line}: {clip(path)}: {clip(msg, 400)}"))

    def mapping(self, loc: _Located, path: str, allowed: tuple[str, ...]) -> dict[str, _Located]:
        if not isinstance(loc.value, dict):
            self.err(loc.line, path or "(top level)", f"must be a mapping (got {_kind(loc.value)})")
            return {}
        for key, sub in loc.value.items():
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                where = f"{path}.{key}" if path else key
                extra = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.err(sub.line, where, f"unknown key{extra}")
        return {k: v for k, v in loc.value.items() if k in allowed}

    def integer(self, loc: _Located, path: str, lo: int, hi: int) -> int | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(loc.line, path, f"must be an integer (got {_kind(v)} {_show(v)})")
            return None
        if v < lo:
            self.err(loc.line, path, f"must be >= {lo} (got {_show(v)})")
            return None
        if v > hi:
            self.err(loc.line, path, f"must be <= {hi} (got {_show(v)})")
            return None
        return v

    def number(self, loc: _Located, path: str, lo: float, hi: float) -> float | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.err(loc.line, path, f"must be a number (got {_kind(v)} {_show(v)})")
            return None
        if not (lo <= v <= hi):  # also refuses NaN and infinity: every range is finite
            self.err(loc.line, path, f"must be between {lo} and {hi} (got {_show(v)})")
            return None
        return float(v)

    def boolean(self, loc: _Located, path: str) -> bool | None:
        if not isinstance(loc.value, bool):
            self.err(loc.line, path, f"must be true or false (got {_kind(loc.value)} {_show(loc.value)})")
            return None
        return loc.value

    def string(self, loc: _Located, path: str) -> str | None:
        if not isinstance(loc.value, str):
            self.err(loc.line, path, f"must be a string (got {_kind(loc.value)} {_show(loc.value)})")
            return None
        return loc.value

    def choice(self, loc: _Located, path: str, choices: tuple[str, ...]) -> str | None:
        v = self.string(loc, path)
        if v is None:
            return None
        if v not in choices:
            hint = difflib.get_close_matches(v, choices, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            self.err(loc.line, path, f"must be one of {', '.join(choices)} (got {_show(v)}){extra}")
            return None
        return v


def _kind(v: Any) -> str:
    return {
        bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    """A value as a message quotes it: repr, cut to a readable length."""
    if isinstance(v, _Located):
        v = v.value
    if isinstance(v, dict | list):
        return "..."
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"  # str() would raise
    return clip(repr(v))


# Public names for other YAML formats that want the same file:line errors (scenarios).
Located = _Located
LocatedReader = _Reader
compose_located = _compose
describe_kind = _kind
describe_value = _show


def host_memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 1 << 30


def parse_config(text: str, fname: str = "lab.yaml", host_mem_mib: int | None = None) -> LabConfig:
    """Parse and validate lab.yaml text. Raises ConfigError listing every problem."""
    root = _compose(text, fname)
    r = _Reader(fname)
    top = {} if root is None else r.mapping(root, "", TOP_KEYS)
    if r.errors and root is not None and not isinstance(root.value, dict):
        raise ConfigError(r.errors)

    name = "halab"
    if "name" in top:
        v = r.string(top["name"], "name")
        if v is not None:
            if _NAME_RE.match(v):
                name = v
            else:
                r.err(top["name"].line, "name",
                      f"{_show(v)} is not a usable lab name: lowercase letters, digits and '-', starting "
                      "with a letter, at most 20 characters (it prefixes libvirt object names)")

    profile = "default"
    if "profile" in top:
        profile = r.choice(top["profile"], "profile", PROFILES) or "default"

    network = NetworkSpec()
    cidr_line = 1
    if "network" in top:
        loc = top["network"]
        cidr_line = loc.line
        if isinstance(loc.value, str):  # shorthand: network: 10.1.0.0/24
            loc = _Located({"cidr": loc}, loc.line)
        net = r.mapping(loc, "network", ("cidr", "mode"))
        cidr, mode = network.cidr, network.mode
        if "cidr" in net:
            cidr_line = net["cidr"].line
            v = r.string(net["cidr"], "network.cidr")
            if v is not None:
                try:
                    parsed = ipaddress.IPv4Network(v, strict=True)
                    if not any(parsed.subnet_of(rng) for rng in _RFC1918):
                        r.err(net["cidr"].line, "network.cidr",
                              f"must be inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), "
                              f"got {clip(v)}")
                    else:
                        cidr = v
                except ValueError as exc:
                    r.err(net["cidr"].line, "network.cidr",
                          f"not an IPv4 network in CIDR form: {clip(str(exc))}")
        if "mode" in net:
            mode = r.choice(net["mode"], "network.mode", NETWORK_MODES) or mode
        network = NetworkSpec(cidr=cidr, mode=mode)

    counts = dict(PROFILE_COUNTS[profile])
    roles: dict[str, RoleSpec] = {}
    role_lines: dict[str, int] = {}
    roles_map = r.mapping(top["roles"], "roles", ROLES) if "roles" in top else {}
    for role in ROLES:
        spec = {"count": counts[role], **ROLE_DEFAULTS[role]}
        if role in roles_map:
            role_lines[role] = roles_map[role].line
            fields = r.mapping(roles_map[role], f"roles.{role}", ("count", "memory_mib", "vcpus"))
            limits = {"count": (1, 16), "memory_mib": (256, 65536), "vcpus": (1, 16)}
            for key, (lo, hi) in limits.items():
                if key in fields:
                    role_lines[f"{role}.{key}"] = fields[key].line
                    v = r.integer(fields[key], f"roles.{role}.{key}", lo, hi)
                    if v is not None:
                        spec[key] = v
        roles[role] = RoleSpec(**spec)

    for role in ("db", "mq"):
        c = roles[role].count
        if c != 1 and (c < 3 or c % 2 == 0):
            what = "Galera" if role == "db" else "RabbitMQ"
            line = role_lines.get(f"{role}.count", role_lines.get(role, 1))
            r.err(line, f"roles.{role}.count",
                  f"{what} cannot keep quorum with {c} nodes: use 1, or an odd number >= 3")
    if profile == "ha" and roles["haproxy"].count < 2:
        r.err(role_lines.get("haproxy.count", 1), "roles.haproxy.count",
              f"profile 'ha' shares a VIP between HAProxy nodes: needs >= 2 (got {roles['haproxy'].count})")

    image = "builtin"
    if "image" in top:
        v = r.string(top["image"], "image")
        if v is not None and v != "builtin":
            found, problem = _image_path(v, fname)
            if problem:
                r.err(top["image"].line, "image", f"'builtin' or the path of a cloud image; {_show(v)} "
                      f"{problem}")
            else:
                image = found

    accel = "auto"
    if "accel" in top:
        accel = r.choice(top["accel"], "accel", ACCELS) or accel

    libvirt_uri = "qemu:///system"
    if "libvirt_uri" in top:
        v = r.string(top["libvirt_uri"], "libvirt_uri")
        if v is not None:
            problem = libvirt_uri_problem(v)
            if problem:
                r.err(top["libvirt_uri"].line, "libvirt_uri", problem)
            else:
                libvirt_uri = v

    hosts, host_lines = _read_hosts(r, top.get("hosts"), fname)
    if hosts and "libvirt_uri" in top:
        r.err(top["libvirt_uri"].line, "libvirt_uri", "give either libvirt_uri (one host) or hosts: (each "
              "with its uri), not both")
    if hosts:
        libvirt_uri = hosts[0].uri

    haproxy = _read_haproxy(r, top.get("haproxy"))
    traffic = _read_traffic(r, top.get("traffic"))
    checkpoint = not hosts  # a checkpoint saves memory and copies disks on one host
    if "checkpoint" in top:
        v = r.boolean(top["checkpoint"], "checkpoint")
        if v and hosts:
            r.err(top["checkpoint"].line, "checkpoint", "a lab spread over hosts: has no checkpoints yet "
                  "(memory images and overlays live on each host); use checkpoint: false")
        elif v is not None:
            checkpoint = v
    revive = "auto"
    if "revive" in top:
        revive = r.choice(top["revive"], "revive", REVIVE_MODES) or revive
    boot = "auto"
    if "boot" in top:
        boot = r.choice(top["boot"], "boot", BOOT_MODES) or boot

    if not r.errors:
        total = sum(spec.count for spec in roles.values())
        net = ipaddress.IPv4Network(network.cidr)
        # .1 gateway, .10 VIP, nodes from .11, and the broadcast address.
        usable = net.num_addresses - _RESERVED_ADDRESSES
        if usable < total:
            prefix = 32 - math.ceil(math.log2(total + _RESERVED_ADDRESSES))
            r.err(cidr_line, "network.cidr",
                  f"{network.cidr} is too small for {total} nodes (room for {max(usable, 0)}); use a "
                  f"/{prefix} or larger")

    cfg = LabConfig(
        name=name, profile=profile, network=network, roles=roles, image=image, accel=accel,
        libvirt_uri=libvirt_uri, haproxy=haproxy, traffic=traffic, checkpoint=checkpoint, revive=revive,
        boot=boot, source=fname,
    )
    if "placement" in top and not hosts:
        r.err(top["placement"].line, "placement", "places nodes on hosts: give hosts: too")
    if hosts and not r.errors:
        cfg = replace(cfg, hosts=hosts, placement=_read_placement(r, top.get("placement"), cfg, hosts))
        for h in hosts:
            if ipaddress.IPv4Address(h.underlay) in cfg.ip_network:
                r.err(host_lines.get(h.name, 1), f"hosts.{h.name}.underlay",
                      f"{h.underlay} is inside the lab network {cfg.network.cidr}: the tunnel runs over "
                      "the hosts' own network (the underlay), not the lab's")
    if not r.errors:
        mem_limit = host_mem_mib if host_mem_mib is not None else host_memory_mib()
        # Only the nodes on this machine count against its memory; a remote host checks its own.
        local = {h.name for h in hosts if h.local}
        need = sum(n.memory_mib for n in cfg.nodes() if not hosts or n.host in local)
        if need > mem_limit:
            worst = max(ROLES, key=lambda ro: roles[ro].count * roles[ro].memory_mib)
            line = role_lines.get(f"{worst}.memory_mib", role_lines.get(worst, 1))
            r.err(line, f"roles.{worst}.memory_mib",
                  f"the lab needs {need} MiB of memory but this host has {mem_limit} MiB "
                  f"(largest share: {worst} {roles[worst].count} x {roles[worst].memory_mib} MiB)")
    if r.errors:
        raise ConfigError(r.errors)
    return cfg


_HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}\Z")  # also a Terraform alias and a module name


def _uri_host(uri: str) -> tuple[str, str, int | None, dict[str, str]]:
    """(transport, user, port, params) and the host of a libvirt URI: ("", "", None, {}) parts when
    absent. Only called on URIs libvirt_uri_problem accepted."""
    scheme, _, rest = uri.partition("://")
    transport = scheme.lower().partition("+")[2]
    parts = urllib.parse.urlsplit("x://" + rest)
    params = dict(urllib.parse.parse_qsl(parts.query))
    return transport, parts.username or "", parts.port, {"host": parts.hostname or "", **params}


def _read_ssh(r: _Reader, loc: _Located, path: str, fname: str) -> SshTarget | None:
    fields = r.mapping(loc, path, SSH_KEYS)
    if "target" not in fields:
        if isinstance(loc.value, dict):
            r.err(loc.line, path, "needs target: user@host (how halab reaches that host's shell)")
        return None
    target = r.string(fields["target"], f"{path}.target")
    if target is None:
        return None
    user, _, host = target.rpartition("@")
    if not re.fullmatch(r"([A-Za-z0-9_][A-Za-z0-9._-]*)?", user) or not re.fullmatch(
            r"[A-Za-z0-9][A-Za-z0-9.-]*", host):
        r.err(fields["target"].line, f"{path}.target",
              f"must be user@host with plain names (got {_show(target)})")
        return None
    port = 22
    if "port" in fields:
        port = r.integer(fields["port"], f"{path}.port", 1, 65535) or 22
    files: dict[str, str | None] = {"keyfile": None, "known_hosts": None}
    for key in files:
        if key in fields:
            v = r.string(fields[key], f"{path}.{key}")
            if v is None:
                continue
            found, problem = _image_path(v, fname)
            if problem:
                r.err(fields[key].line, f"{path}.{key}", f"{_show(v)} {problem}")
            else:
                files[key] = found
    return SshTarget(user, host, port, files["keyfile"], files["known_hosts"])


def _read_hosts(r: _Reader, loc: _Located | None, fname: str) -> tuple[tuple[HostSpec, ...], dict[str, int]]:
    """lab.yaml's `hosts:`: name -> {uri, underlay, ssh}, and each host's line. Every problem is a
    file:line: field error; nothing is contacted here (`doctor` and `up` reach the hosts)."""
    lines: dict[str, int] = {}
    if loc is None:
        return (), lines
    if not isinstance(loc.value, dict):
        r.err(loc.line, "hosts",
              f"must be a mapping of host name to {{uri, underlay}} (got {_kind(loc.value)})")
        return (), lines
    if not 2 <= len(loc.value) <= MAX_HOSTS:
        r.err(loc.line, "hosts", f"needs 2 to {MAX_HOSTS} hosts (got {len(loc.value)}); a lab on one host "
              "needs no hosts: (libvirt_uri says where)")
    out: list[HostSpec] = []
    seen_uri: dict[str, int] = {}
    seen_underlay: dict[str, tuple[str, int]] = {}
    local_at: tuple[str, int] | None = None
    for name, sub in loc.value.items():
        path = f"hosts.{clip(name)}"
        if not _HOST_NAME_RE.match(name):
            r.err(sub.line, path, "a host name is lowercase letters, digits and '-', starting with a letter, "
                  "at most 15 characters")
            continue
        lines[name] = sub.line
        fields = r.mapping(sub, path, HOST_KEYS)
        if not isinstance(sub.value, dict):
            continue
        uri = underlay = None
        if "uri" not in fields:
            r.err(sub.line, f"{path}.uri", "missing: the host's libvirt URI, e.g. qemu+ssh://root@rack2/system")
        else:
            v = r.string(fields["uri"], f"{path}.uri")
            if v is not None:
                problem = libvirt_uri_problem(v)
                if problem:
                    r.err(fields["uri"].line, f"{path}.uri", problem)
                elif v in seen_uri:
                    r.err(fields["uri"].line, f"{path}.uri", f"{_show(v)} is already the uri of the host at "
                          f"line {seen_uri[v]}: one libvirt cannot be two hosts")
                else:
                    seen_uri[v] = fields["uri"].line
                    uri = v
        if "underlay" not in fields:
            r.err(sub.line, f"{path}.underlay", "missing: the host's address on the network between the "
                  "hosts (the tunnel's endpoint)")
        else:
            v = r.string(fields["underlay"], f"{path}.underlay")
            if v is not None:
                try:
                    addr = ipaddress.IPv4Address(v)
                except ValueError:
                    r.err(fields["underlay"].line, f"{path}.underlay",
                          f"must be an IPv4 address (got {_show(v)})")
                else:
                    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local:
                        r.err(fields["underlay"].line, f"{path}.underlay",
                              f"{addr} cannot carry a tunnel between hosts (loopback, multicast, "
                              "link-local or unspecified)")
                    elif str(addr) in seen_underlay:
                        other, line = seen_underlay[str(addr)]
                        r.err(fields["underlay"].line, f"{path}.underlay",
                              f"{addr} is already the underlay of host {other!r} (line {line}): each host "
                              "needs its own address")
                    else:
                        seen_underlay[str(addr)] = (name, fields["underlay"].line)
                        underlay = str(addr)
        ssh = _read_ssh(r, fields["ssh"], f"{path}.ssh", fname) if "ssh" in fields else None
        if uri is None or underlay is None:
            continue
        transport, user, port, params = _uri_host(uri)
        remote = bool(params["host"])
        if not remote and not uri.startswith("test:"):
            if "ssh" in fields:
                r.err(fields["ssh"].line, f"{path}.ssh", "the uri names this machine (no host in it): halab "
                      "runs the tunnel's commands here itself; remove ssh: or give the uri its host")
                continue
            if local_at is not None:
                r.err(fields["uri"].line, f"{path}.uri", f"host {local_at[0]!r} (line {local_at[1]}) is "
                      "already this machine: give every other host a remote uri (qemu+ssh://user@host/system)")
                continue
            local_at = (name, fields["uri"].line)
        if remote and ssh is None:
            if transport in ("ssh", "libssh", "libssh2"):
                ssh = SshTarget(user, params["host"], port or 22, params.get("keyfile"),
                                params.get("known_hosts"))
            else:
                r.err(fields["uri"].line, f"{path}.ssh", f"missing: qemu+{transport or 'tls'} reaches only "
                      "libvirt there, and the tunnel's endpoint is made with `ip` on that host: give "
                      "ssh: {target: user@host} (or use a qemu+ssh uri)")
                continue
        out.append(HostSpec(name, uri, underlay, ssh))
    return tuple(out), lines


def _read_placement(r: _Reader, loc: _Located | None, cfg: LabConfig,
                    hosts: tuple[HostSpec, ...]) -> tuple[tuple[str, str], ...]:
    """Which host each node runs on: `spread` (each role round-robin over the hosts, in order, so
    host 1 holds the first of every role) or node -> host for some nodes, the rest spread."""
    names = [h.name for h in hosts]
    explicit: dict[str, str] = {}
    if loc is not None and loc.value != "spread":
        if not isinstance(loc.value, dict):
            r.err(loc.line, "placement",
                  f"must be spread or a mapping of node to host (got {_show(loc.value)})")
        else:
            known = [n.name for n in cfg.nodes()]
            for node, sub in loc.value.items():
                path = f"placement.{clip(node)}"
                if node not in known:
                    hint = difflib.get_close_matches(node, known, n=1)
                    extra = f" (did you mean {hint[0]!r}?)" if hint else f" (nodes: {', '.join(known)})"
                    r.err(sub.line, path, f"no such node in this lab{extra}")
                    continue
                host = r.string(sub, path)
                if host is None:
                    continue
                if host not in names:
                    hint = difflib.get_close_matches(host, names, n=1)
                    extra = f"; did you mean {hint[0]!r}?" if hint else ""
                    r.err(sub.line, path, f"no host {_show(host)} (hosts: {', '.join(names)}){extra}")
                    continue
                explicit[node] = host
    out: list[tuple[str, str]] = []
    turn: dict[str, int] = {}
    for n in cfg.nodes():
        if n.name in explicit:
            out.append((n.name, explicit[n.name]))
            continue
        k = turn.get(n.role, 0)
        turn[n.role] = k + 1
        out.append((n.name, names[k % len(names)]))
    return tuple(out)


PATH_MAX = 4095  # Linux: 4096 bytes with the terminating NUL
NAME_MAX = 255


def _image_path(v: str, fname: str) -> tuple[str, str]:
    """(absolute path, "") for an existing image file, else ("", why not)."""
    if "\n" in v or "\t" in v:
        return "", "is not a single-line path"
    raw = v.encode("utf-8", "surrogateescape")
    if len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return "", f"is too long ({len(raw)} bytes; a path takes {PATH_MAX}, a file name {NAME_MAX})"
    try:
        p = Path(v).expanduser()
    except RuntimeError:  # ~nosuchuser/…, or ~/… with no home directory known
        user = v[1:].split("/")[0]
        if not user:
            return "", "starts with ~ but this process has no home directory ($HOME unset)"
        return "", f"names the home of {clip(user)!r}, a user this system does not know"
    if not p.is_absolute():
        p = (Path(fname).resolve().parent / p) if fname.endswith((".yaml", ".yml")) else p
    try:
        exists = p.is_file()
    except (OSError, ValueError):  # name too long after joining, NUL byte, unreadable parent
        exists = False
    return (str(p), "") if exists else ("", "does not exist")


# libvirt transports that run no program on this host. `ext` runs the `command=` program; `ssh` runs
# the local ssh client, `command=` replaces it. libssh/libssh2 are libraries inside libvirt.
LIBVIRT_TRANSPORTS = ("", "ssh", "tls", "tcp", "unix", "libssh", "libssh2")
# Query parameters a URI may carry: connection options only. Everything else is refused, above all
# `command` (a local program) and `netcat` (a program run for us on the remote host).
LIBVIRT_URI_PARAMS = ("name", "socket", "mode", "proxy", "no_verify", "no_tty", "pkipath", "tls_priority",
                      "keyfile", "known_hosts", "known_hosts_verify", "sshauth")


def libvirt_uri_problem(uri: str) -> str:
    """Why `uri` is not accepted as lab.yaml's libvirt_uri, or "" when it is. halab runs libvirt
    (and Terraform's libvirt provider) as whoever runs it, often root: a URI must not be a way to
    run a program."""
    shown = clip(repr(uri))
    if "://" not in uri or any(c.isspace() for c in uri):
        return f"must be a libvirt URI like qemu:///system (got {shown})"
    scheme, _, rest = uri.partition("://")
    driver, _, transport = scheme.lower().partition("+")
    if not re.fullmatch(r"[a-z][a-z0-9]*", driver):
        return f"must be a libvirt URI like qemu:///system (got {shown})"
    if transport not in LIBVIRT_TRANSPORTS:
        allowed = ", ".join(f"+{t}" for t in LIBVIRT_TRANSPORTS if t)
        return (f"transport {clip(transport)!r} is not allowed: it can run a program on this host "
                f"(allowed: none, {allowed}; got {shown})")
    parts = urllib.parse.urlsplit("x://" + rest)
    # User and host end up on the ssh command line: nothing that could read as an option.
    user, _, hostport = parts.netloc.rpartition("@")
    if not re.fullmatch(r"([A-Za-z0-9_][A-Za-z0-9._%-]*)?", user) or not re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])?(:[0-9]{1,5})?", hostport):
        return f"user and host must be plain names, like qemu+ssh://user@host/system (got {shown})"
    query = parts.query
    # libvirt splits parameters at '&' and ';' and undoes %-escapes in their names.
    for part in re.split("[&;]", query):
        if not part:
            continue
        name = urllib.parse.unquote(part.partition("=")[0]).strip().lower()
        if name not in LIBVIRT_URI_PARAMS:
            why = ("names a program to run" if name in ("command", "netcat") else "is not a connection "
                   "option halab allows")
            return (f"query parameter {clip(name)!r} {why} (allowed: {', '.join(LIBVIRT_URI_PARAMS)}; "
                    f"got {shown})")
    return ""


def _read_haproxy(r: _Reader, loc: _Located | None) -> HAProxySettings:
    keys = ("preset", *[f for f in HAPROXY_PRESET_VALUES["fast"]])
    if loc is None:
        return HAProxySettings()
    fields = r.mapping(loc, "haproxy", keys)
    preset = "fast"
    if "preset" in fields:
        preset = r.choice(fields["preset"], "haproxy.preset", HAPROXY_PRESETS) or preset
    values: dict[str, Any] = {"preset": preset, **HAPROXY_PRESET_VALUES[preset]}
    int_limits = {
        "inter_ms": (100, 60000), "fastinter_ms": (100, 60000), "downinter_ms": (100, 60000),
        "rise": (1, 100), "fall": (1, 100), "retries": (0, 100),
        "timeout_connect_ms": (100, 600000), "timeout_server_ms": (100, 600000),
        "timeout_check_ms": (100, 600000), "read_timeout_ms": (0, 600000),
    }
    for key, (lo, hi) in int_limits.items():
        if key in fields:
            v = r.integer(fields[key], f"haproxy.{key}", lo, hi)
            if v is not None:
                values[key] = v
    for key in ("redispatch", "observe_layer4"):
        if key in fields:
            v = r.boolean(fields[key], f"haproxy.{key}")
            if v is not None:
                values[key] = v
    if "retry_on" in fields:
        v = r.string(fields["retry_on"], "haproxy.retry_on")
        allowed = {"none", "conn-failure", "empty-response", "junk-response", "response-timeout",
                   "0rtt-rejected", "all-retryable-errors", "401", "403", "404", "408", "425", "500",
                   "501", "502", "503", "504"}
        if v is not None:
            bad = [w for w in v.split() if w not in allowed]
            if bad or not v.split():
                r.err(fields["retry_on"].line, "haproxy.retry_on",
                      f"unknown retry-on keyword(s) {clip(', '.join(bad)) or '(empty)'}")
            else:
                values["retry_on"] = v
    return HAProxySettings(**values)


def _read_traffic(r: _Reader, loc: _Located | None) -> TrafficSettings:
    if loc is None:
        return TrafficSettings()
    keys = ("rate", "read_share", "write_share", "page_share", "page_calls", "timeout_ms")
    fields = r.mapping(loc, "traffic", keys)
    values: dict[str, Any] = asdict(TrafficSettings())
    if "rate" in fields:
        v = r.number(fields["rate"], "traffic.rate", MIN_RATE, MAX_RATE)
        if v is not None:
            values["rate"], values["rate_auto"] = v, False
    for key in ("read_share", "write_share", "page_share"):
        if key in fields:
            v = r.number(fields[key], f"traffic.{key}", 0.0, 1.0)
            if v is not None:
                values[key] = v
    if "page_calls" in fields:
        v = r.integer(fields["page_calls"], "traffic.page_calls", 1, 50)
        if v is not None:
            values["page_calls"] = v
    if "timeout_ms" in fields:
        v = r.integer(fields["timeout_ms"], "traffic.timeout_ms", 50, 60000)
        if v is not None:
            values["timeout_ms"] = v
    total = values["read_share"] + values["write_share"] + values["page_share"]
    if abs(total - 1.0) > 1e-6:
        r.err(loc.line, "traffic", f"read_share + write_share + page_share must be 1 (got {total:g})")
    return TrafficSettings(**values)


def default_config_path() -> Path | None:
    """HALAB_CONFIG, else ./lab.yaml if present, else None (the built-in default)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path("lab.yaml")
    return local if local.is_file() else None


MAX_FILE_BYTES = 1 << 20  # lab and scenario files are a few KiB


def read_definition(path: Path, trusted_only: bool = False) -> str:
    """The text of a lab or scenario file. Only a regular file of at most 1 MiB is read: opening
    does not block (a FIFO would hang forever) and reading stops at the limit (/dev/zero would eat
    the memory). With ``trusted_only`` (a file found rather than named) it must also be the user's
    own or root's and writable by no one else, as OpenSSH treats its config: otherwise running halab
    in someone else's directory would run their lab definition (and its libvirt URI)."""
    shown = one_line(str(path))
    if len(str(path)) > PATH_MAX:  # cannot name a file; not worth echoing whole either
        raise ConfigError([f"{clip(shown)}: cannot read: file name too long ({len(str(path))} "
                           f"characters; at most {PATH_MAX})"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError([f"{shown}: no such file"]) from None
    except (OSError, ValueError) as exc:  # permission, name too long, NUL in the name
        raise ConfigError([f"{shown}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise ConfigError([f"{shown}: is {kind}, not a regular file"])
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError([f"{shown}: {st.st_size} bytes is too large for a definition "
                               f"(at most {MAX_FILE_BYTES} bytes)"])
        if trusted_only:
            problem = _untrusted(st)
            if problem:
                raise ConfigError([f"{shown}: refusing a lab file found by default that {problem}; fix it "
                                   f"(chmod go-w / chown) or name it with -c {shown} if you trust it"])
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:  # grew while being read
        raise ConfigError([f"{shown}: too large for a definition (at most {MAX_FILE_BYTES} bytes)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{shown}:{line}: cannot read: not UTF-8 text (byte 0x{data[exc.start]:02x})"]
                          ) from None


def _untrusted(st: os.stat_result) -> str:
    if st.st_uid not in (0, os.getuid()):
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        who = ("group and others" if st.st_mode & 0o022 == 0o022 else
               "others" if st.st_mode & 0o002 else "group")
        return f"is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def load_config(path: str | Path | None = None, profile: str | None = None) -> LabConfig:
    """Read the lab definition; with no file, the built-in default lab. A file found by default
    ($HALAB_CONFIG, ./lab.yaml) must be trusted; one given explicitly is the user's choice.
    ``profile`` replaces the file's `profile:` (`bench --profile ha` on the same lab file)."""
    found = path is None
    if path is None:
        path = default_config_path()
    text, fname = ("", "<built-in default>") if path is None else (
        read_definition(Path(path), trusted_only=found), str(path))
    cfg = parse_config(text, fname)
    if profile is None or profile == cfg.profile:
        return cfg
    if profile not in PROFILES:
        raise ConfigError([f"--profile: must be one of {', '.join(PROFILES)} (got {profile[:40]!r})"])
    data = yaml.safe_load(text) if text.strip() else {}
    data = dict(data) if isinstance(data, dict) else {}
    data["profile"] = profile
    roles = data.get("roles")
    if isinstance(roles, dict):  # counts belong to the file's profile; the override brings its own
        data["roles"] = {r: {k: v for k, v in (spec or {}).items() if k != "count"}
                         for r, spec in roles.items() if isinstance(spec, dict) or spec is None}
    return parse_config(yaml.safe_dump(data, sort_keys=False), f"{fname} (profile {profile})")
