"""The lab's timeline: events (faults, probe state changes, notes) and per-second traffic figures.

Kept in memory, thread-safe (traffic, probes and faults report from their own threads), with
subscription callbacks so a UI can coalesce updates, and written as JSON Lines.

Callbacks run on the reporting thread, outside the timeline's lock; a Textual app should hand them
to its loop (``app.call_from_thread``) and keep only the newest bucket per refresh.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

KINDS = ("read", "write", "page")


@dataclass(frozen=True)
class Event:
    at: float  # wall-clock seconds
    kind: str  # "fault" | "probe" | "note" | "measure"
    message: str  # e.g. "HAProxy marked api-2 DOWN"
    node: str | None = None
    source: str | None = None  # probe source ("haproxy", "libvirt", ...) or fault action
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def failover(self) -> dict[str, Any] | None:
        """A failover measurement's result (``MeasureResult.to_dict()``) on 'measure' events."""
        return self.data.get("failover")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "event", **asdict(self)}


@dataclass(slots=True)
class RequestRecord:
    """One client operation. A page is one record for its burst of calls (fails if any call fails)."""

    kind: str  # "read" | "write" | "page"
    scheduled: float  # wall-clock seconds the open-loop schedule wanted it sent
    start: float
    end: float
    ok: bool
    error: str | None = None  # "timeout", "connect", "reset", "http_503", "overload", ...
    status: int | None = None
    served_by: tuple[str, ...] = ()  # X-Served-By of each call that answered
    calls: int = 1

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000.0

    @property
    def lag_ms(self) -> float:
        return (self.start - self.scheduled) * 1000.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["served_by"] = list(self.served_by)
        return {"type": "request", **d}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(rank, len(s)) - 1]


@dataclass
class KindStats:
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class TrafficPoint:
    """One second of client traffic, starting at ``t``: operations (reads, writes, page loads) that
    succeeded and failed, latency, and which API node answered what share of the HTTP calls. The one
    shape of a traffic second: the TUI's graphs, browser viewers, replays and reports all read it
    (``t`` is wall-clock seconds, or seconds from the run's start in a report)."""

    t: float
    reads_ok: int = 0
    reads_err: int = 0
    writes_ok: int = 0
    writes_err: int = 0
    pages_ok: int = 0
    pages_err: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    share: dict[str, float] = field(default_factory=dict)  # node -> fraction of HTTP calls answered

    @property
    def ok(self) -> int:
        return self.reads_ok + self.writes_ok + self.pages_ok

    @property
    def errors(self) -> int:
        return self.reads_err + self.writes_err + self.pages_err

    @property
    def operations(self) -> int:
        """Operations completed in this second: the operations/s the graphs and reports show."""
        return self.ok + self.errors

    def shifted(self, t0: float) -> TrafficPoint:
        """The same second with ``t`` counted from ``t0`` (a report's run start)."""
        return replace(self, t=self.t - t0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrafficPoint:
        return cls(**{**d, "share": dict(d.get("share") or {})})


@dataclass
class TrafficBucket:
    """Traffic completed during one wall-clock second [second, second + 1)."""

    second: int
    read: KindStats = field(default_factory=KindStats)
    write: KindStats = field(default_factory=KindStats)
    page: KindStats = field(default_factory=KindStats)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    lag_p99_ms: float | None = None
    by_node: dict[str, int] = field(default_factory=dict)  # HTTP calls answered, per serving node

    @property
    def share(self) -> dict[str, float]:
        total = sum(self.by_node.values())
        return {n: c / total for n, c in sorted(self.by_node.items())} if total else {}

    @property
    def errors(self) -> int:
        return self.read.errors + self.write.errors + self.page.errors

    def point(self) -> TrafficPoint:
        """This second as the one shape every front end and report reads."""
        return TrafficPoint(float(self.second), self.read.ok, self.read.errors, self.write.ok,
                            self.write.errors, self.page.ok, self.page.errors, self.p50_ms, self.p99_ms,
                            self.max_ms, self.share)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["share"] = self.share
        return {"type": "traffic", **d}


TimelineItem = Event | TrafficBucket
Subscriber = Callable[[TimelineItem], None]


def _summarise(second: int, recs: list[RequestRecord]) -> TrafficBucket:
    b = TrafficBucket(second)
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in recs:
        ks: KindStats = getattr(b, r.kind)
        if r.ok:
            ks.ok += 1
        else:
            ks.errors += 1
            key = r.error or "error"
            ks.error_kinds[key] = ks.error_kinds.get(key, 0) + 1
        lat[r.kind].append(r.latency_ms)
        for node in r.served_by:
            b.by_node[node] = b.by_node.get(node, 0) + 1
    for k in KINDS:
        ks = getattr(b, k)
        ks.p50_ms, ks.p99_ms = percentile(lat[k], 50), percentile(lat[k], 99)
    every = [x for k in KINDS for x in lat[k]]
    b.p50_ms, b.p99_ms = percentile(every, 50), percentile(every, 99)
    b.max_ms = max(every) if every else None
    b.lag_p99_ms = percentile([r.lag_ms for r in recs], 99)
    return b


class Timeline:
    """Events and traffic of one lab session."""

    def __init__(self, keep_requests: bool = True, clock: Callable[[], float] = time.time,
                 close_grace_s: float = 0.2):
        self.clock = clock
        self.keep_requests = keep_requests
        self.close_grace_s = close_grace_s
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._requests: list[RequestRecord] = []
        self._open: dict[int, list[RequestRecord]] = {}
        self._buckets: list[TrafficBucket] = []
        self._subs: list[Subscriber] = []
        self._sink: IO[str] | None = None

    # ---- subscription ------------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(item)`` for every new Event and every closed TrafficBucket. Returns an
        unsubscribe function."""
        with self._lock:
            self._subs.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subs:
                    self._subs.remove(callback)

        return unsubscribe

    def _publish(self, items: Iterable[TimelineItem]) -> None:
        items = list(items)
        if not items:
            return
        with self._lock:
            subs = list(self._subs)
            if self._sink is not None:
                for it in items:
                    self._sink.write(json.dumps(it.to_dict(), default=str) + "\n")
                self._sink.flush()
        for it in items:
            for cb in subs:
                cb(it)

    # ---- events ------------------------------------------------------------------------------
    def add_event(self, ev: Event) -> Event:
        with self._lock:
            self._events.append(ev)
        self._publish([ev])
        return ev

    def event(self, kind: str, message: str, *, node: str | None = None, source: str | None = None,
              at: float | None = None, **data: Any) -> Event:
        return self.add_event(Event(self.clock() if at is None else at, kind, message, node, source, data))

    def note(self, message: str, **data: Any) -> Event:
        return self.event("note", message, **data)

    def on_fault(self, fe: Any) -> Event:
        """Adapter for ``Faults(on_event=timeline.on_fault)``."""
        return self.event("fault", fe.message, node=fe.node, source=fe.action, at=fe.at,
                          action=fe.action, **fe.params)

    def events(self, kind: str | None = None, since: float | None = None) -> list[Event]:
        with self._lock:
            evs = list(self._events)
        evs.sort(key=lambda e: e.at)
        return [e for e in evs if (kind is None or e.kind == kind) and (since is None or e.at >= since)]

    # ---- traffic -----------------------------------------------------------------------------
    def add_request(self, rec: RequestRecord) -> None:
        with self._lock:
            if self.keep_requests:
                self._requests.append(rec)
            self._open.setdefault(int(rec.end), []).append(rec)
        self.tick(rec.end - self.close_grace_s)

    def tick(self, now: float | None = None) -> list[TrafficBucket]:
        """Close and publish every bucket whose second ended before ``now - grace``. Call it about
        once a second while traffic runs (``add_request`` also does)."""
        limit = (self.clock() if now is None else now) - self.close_grace_s
        closed: list[TrafficBucket] = []
        with self._lock:
            for sec in sorted(s for s in self._open if s + 1 <= limit):
                b = _summarise(sec, self._open.pop(sec))
                self._buckets.append(b)
                closed.append(b)
        self._publish(closed)
        return closed

    def flush(self) -> list[TrafficBucket]:
        """Close every open bucket (at the end of a run)."""
        return self.tick(float("inf"))

    def buckets(self) -> list[TrafficBucket]:
        with self._lock:
            return sorted(self._buckets, key=lambda b: b.second)

    def requests(self, since: float | None = None, until: float | None = None) -> list[RequestRecord]:
        """Kept request records whose schedule falls in [since, until)."""
        with self._lock:
            recs = list(self._requests)
        return [r for r in recs if (since is None or r.scheduled >= since)
                and (until is None or r.scheduled < until)]

    # ---- JSON Lines --------------------------------------------------------------------------
    def stream_to(self, path: str | Path) -> None:
        """From now on, append every published event and closed bucket to ``path``."""
        with self._lock:
            if self._sink is not None:
                self._sink.close()
            self._sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        with self._lock:
            if self._sink is not None:
                self._sink.close()
                self._sink = None

    def write_jsonl(self, path: str | Path, include_requests: bool = True,
                    since: float | None = None) -> None:
        """Everything, in time order: events, buckets and (optionally) request records; ``since``:
        only from then on (one run of several on the same timeline)."""
        rows: list[tuple[float, dict[str, Any]]] = [(e.at, e.to_dict()) for e in self.events(since=since)]
        rows += [(b.second + 1.0, b.to_dict()) for b in self.buckets()
                 if since is None or b.second + 1 >= since]
        if include_requests:
            rows += [(r.end, r.to_dict()) for r in self.requests(since=since)]
        rows.sort(key=lambda r: r[0])
        from halab.atomic import write_atomic

        write_atomic(path, "".join(json.dumps(row, default=str) + "\n" for _, row in rows), 0o644)

    @classmethod
    def read_jsonl(cls, path: str | Path) -> Timeline:
        """Rebuild a timeline (events and requests; buckets recomputed) from ``write_jsonl`` output."""
        tl = cls()
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                typ = row.pop("type", None)
                if typ == "event":
                    tl._events.append(Event(**row))
                elif typ == "request":
                    row["served_by"] = tuple(row.get("served_by") or ())
                    rec = RequestRecord(**row)
                    tl._requests.append(rec)
                    tl._open.setdefault(int(rec.end), []).append(rec)
        tl.flush()
        return tl
