"""The lab network stretched over several hosts: one VXLAN device per host on the lab's bridge.

Every host's lab bridge gets a VXLAN port (``<bridge>vx``, the lab's own name, VNI from the lab's
name) that floods to every other host's underlay address (head-end replication: one all-zero FDB
entry per peer), so the nodes of all hosts share one L2 segment: addresses, ARP, the keepalived VIP.
halab creates, owns and removes these devices; `down` sweeps them from every host. Commands go
through :mod:`halab.lab.hostshell` (this machine, or the user's ssh to a remote host).
"""

from __future__ import annotations

from dataclasses import dataclass

from halab.lab import hostshell
from halab.lab.config import HostSpec, LabConfig

VXLAN_PORT = 4789  # IANA's VXLAN port
ZERO_MAC = "00:00:00:00:00:00"


def _hosts(cfg: LabConfig) -> list[HostSpec]:
    """Hosts with a real kernel to put a device in (libvirt's test driver has none)."""
    return [h for h in cfg.hosts if not h.uri.startswith("test:")]


def _exists(cfg: LabConfig, host: HostSpec) -> bool:
    res = hostshell.run(host, ["ip", "-o", "link", "show", "dev", cfg.tunnel_name], check=False)
    return res.returncode == 0


@dataclass(frozen=True)
class TunnelState:
    host: str
    present: bool
    up: bool
    peers: tuple[str, ...]


def ensure(cfg: LabConfig, only: str | None = None) -> list[str]:
    """Create (or repair) the tunnel on every host, or ``only`` one; idempotent. Returns what it did,
    one line each. The bridge must exist (Terraform made the lab network)."""
    done: list[str] = []
    name = cfg.tunnel_name
    for h in _hosts(cfg):
        if only is not None and h.name != only:
            continue
        if not _exists(cfg, h):
            hostshell.run(h, ["ip", "link", "add", name, "type", "vxlan", "id", str(cfg.vni),
                              "local", h.underlay, "dstport", str(VXLAN_PORT)])
            done.append(f"tunnel {name} created on host {h.name} (VNI {cfg.vni}, local {h.underlay})")
        hostshell.run(h, ["ip", "link", "set", "dev", name, "master", cfg.bridge_name])
        hostshell.run(h, ["ip", "link", "set", "dev", name, "up"])
        floods = _flood_peers(hostshell.run(h, ["bridge", "fdb", "show", "dev", name]).stdout)
        for peer in cfg.hosts:
            if peer.name == h.name or peer.underlay in floods:
                continue
            hostshell.run(h, ["bridge", "fdb", "append", ZERO_MAC, "dev", name, "dst", peer.underlay])
            done.append(f"tunnel {name} on host {h.name} floods to host {peer.name} ({peer.underlay})")
    return done


def _flood_peers(fdb: str) -> set[str]:
    """The peers of the all-zero (flood) entries in `bridge fdb show` output. Learned entries name
    peers too (a remote MAC seen once) and must not count: without its flood entry a host could
    not reach a MAC it has not yet heard from."""
    out: set[str] = set()
    for line in fdb.splitlines():
        words = line.split()
        if words[:1] == [ZERO_MAC] and "dst" in words:
            out.add(words[words.index("dst") + 1])
    return out


def cut(cfg: LabConfig, host: str) -> None:
    """The partition between racks: that host's tunnel device goes down, so its nodes lose every
    node of the other hosts (and halab's probes, when halab runs elsewhere). Undone by ``ensure``."""
    h = cfg.host(host)
    hostshell.run(h, ["ip", "link", "set", "dev", cfg.tunnel_name, "down"])


def state(cfg: LabConfig) -> list[TunnelState]:
    out: list[TunnelState] = []
    for h in _hosts(cfg):
        res = hostshell.run(h, ["ip", "-o", "link", "show", "dev", cfg.tunnel_name], check=False)
        if res.returncode != 0:
            out.append(TunnelState(h.name, False, False, ()))
            continue
        fdb = hostshell.run(h, ["bridge", "fdb", "show", "dev", cfg.tunnel_name], check=False).stdout
        peers = tuple(sorted(_flood_peers(fdb)))
        out.append(TunnelState(h.name, True, ",UP" in res.stdout or "<UP" in res.stdout, peers))
    return out


def remove(cfg: LabConfig, only: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Delete the tunnel device from every host (or ``only`` one): (removed, left with the command
    that would)."""
    removed: list[str] = []
    left: list[tuple[str, str]] = []
    for h in _hosts(cfg):
        if only is not None and h.name != only:
            continue
        try:
            if not _exists(cfg, h):
                continue
            hostshell.run(h, ["ip", "link", "del", "dev", cfg.tunnel_name])
            removed.append(f"tunnel {cfg.tunnel_name} on host {h.name}")
        except hostshell.HostCommandError as exc:
            left.append((f"tunnel {cfg.tunnel_name} on host {h.name} ({exc})",
                         f"ip link del dev {cfg.tunnel_name}   (on host {h.name})"))
    return removed, left
