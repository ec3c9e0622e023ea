"""A revived node boots at a low CPU share so it does not starve the nodes that serve.

In a real cloud a rebooting controller has CPUs of its own. In the lab every node shares the host's
cores, and under TCG a booting guest takes a whole core for a minute or two: on a 2-core host the
other nodes' health checks then time out, HAProxy flaps healthy backends and clients see errors
that are the lab's artefact, not the failover's. While it boots, the node's QEMU gets 1/64 of its
CPU share (libvirt ``cpu_shares``, live only: it ends with that QEMU process); it gets its share
back as soon as its role's service answers. A share that low never ends a boot on a host whose other
nodes keep both cores busy (a cold-revived mq-1 in the 12-VM ``ha`` lab had not booted after 900 s),
so while the node stays silent its share doubles every ``RAMP_STEP_S``: full again after
``GIVE_UP_S`` (3 minutes) at the latest.

Only halab processes that watch the lab (measure, scenarios, watch, the TUI) lower it: they are the
ones that settle it again. Hosts where libvirt has no CPU controller just boot the node as before.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from halab.errors import HalabError
from halab.lab.config import LabConfig
from halab.ports import AMQP_PORT, API_PORT, GALERA_PORT, STATS_PORT

SHARE_DIVISOR = 64
RAMP_STEP_S = 30.0
GIVE_UP_S = RAMP_STEP_S * (SHARE_DIVISOR.bit_length() - 1)  # 1/64 -> 1/1

# The port whose answer means "this node's role is serving again".
SERVICE_PORT = {"api": API_PORT, "db": GALERA_PORT, "mq": AMQP_PORT, "haproxy": STATS_PORT}


def settled_text(node: str, timed_out: bool) -> str:
    """The timeline line when a node gets its share back."""
    why = f"still silent after {GIVE_UP_S:.0f} s" if timed_out else "its service answers"
    return f"{node}: normal CPU share again ({why})"


def tcp_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class _Lowered:
    node: str
    normal_shares: int
    since: float
    shares: int = 0  # what it has now


def ramped_shares(normal: int, silent_for_s: float) -> int:
    """The share of a node still silent after ``silent_for_s``: 1/64 of normal, doubling every
    ``RAMP_STEP_S`` (never below 2, libvirt's minimum)."""
    divisor = max(1, SHARE_DIVISOR >> int(max(0.0, silent_for_s) // RAMP_STEP_S))
    return max(2, normal // divisor)


class BootPriority:
    """Lower a booting node's CPU share; ``settle()`` (called about once a second) gives it back."""

    def __init__(self, cfg: LabConfig, virt: Any, *,
                 answers: Callable[[str, int], bool] = tcp_answers,
                 clock: Callable[[], float] = time.monotonic,
                 on_settled: Callable[[str, bool], None] | None = None):
        self.cfg = cfg
        self.virt = virt
        self.answers = answers
        self.clock = clock
        self.on_settled = on_settled  # (node, timed_out)
        self._lowered: dict[str, _Lowered] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.unavailable: str | None = None  # why shares cannot be set here

    def start(self, interval_s: float = 1.0) -> None:
        """Settle on a thread of its own (a connect to a booting node may wait its timeout)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.settle()

        self._thread = threading.Thread(target=loop, name="halab-boot-priority", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The watching process ends: every lowered node gets its share back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.release_all()

    def lowered(self) -> list[str]:
        with self._lock:
            return sorted(self._lowered)

    def lower(self, node: str) -> str:
        """Called right after the node's QEMU started (or was reset). Returns a note for the event."""
        try:
            dom = self.virt.domain(node)
            params = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            self.unavailable = f"no CPU shares through libvirt here ({_short(exc)})"
            return ""
        except HalabError:
            return ""
        shares = params.get("cpu_shares")
        if not isinstance(shares, int) or shares <= 0:
            self.unavailable = "no CPU shares through libvirt here (no cpu_shares parameter)"
            return ""
        with self._lock:
            normal = self._lowered[node].normal_shares if node in self._lowered else shares
        low = ramped_shares(normal, 0.0)
        try:
            dom.setSchedulerParametersFlags({"cpu_shares": low}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            self.unavailable = f"CPU share not settable ({_short(exc)})"
            return ""
        with self._lock:
            self._lowered[node] = _Lowered(node, normal, self.clock(), low)
        return (f"boots at 1/{SHARE_DIVISOR} CPU share until its service answers "
                f"(doubling every {RAMP_STEP_S:.0f} s while silent)")

    def settle(self) -> list[str]:
        """Give back the share of every lowered node whose service answers (or that took too long).
        Returns the nodes settled now."""
        with self._lock:
            pending = list(self._lowered.values())
        done: list[str] = []
        for item in pending:
            n = self.cfg.node(item.node)
            port = SERVICE_PORT.get(n.role)
            silent_for = self.clock() - item.since
            timed_out = silent_for > GIVE_UP_S
            if timed_out or port is None or self.answers(n.ip, port):
                self._restore(item)
                done.append(item.node)
                if self.on_settled is not None:
                    self.on_settled(item.node, timed_out)
                continue
            want = ramped_shares(item.normal_shares, silent_for)
            if want != item.shares:
                self._set(item.node, want)
                item.shares = want
        return done

    def release_all(self) -> None:
        """Every lowered node gets its share back (the watching process is ending)."""
        with self._lock:
            pending = list(self._lowered.values())
        for item in pending:
            self._restore(item)

    def forget(self, node: str) -> None:
        """The node's QEMU is gone (killed): nothing to give back."""
        with self._lock:
            self._lowered.pop(node, None)

    def _restore(self, item: _Lowered) -> None:
        with self._lock:
            self._lowered.pop(item.node, None)
        self._set(item.node, item.normal_shares)

    def _set(self, node: str, shares: int) -> None:
        try:
            dom = self.virt.domain(node)
            dom.setSchedulerParametersFlags({"cpu_shares": shares}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except (libvirt.libvirtError, HalabError):
            pass  # not running any more: the setting went with its QEMU process


def _short(exc: libvirt.libvirtError) -> str:
    return str(exc).splitlines()[0][:160]
