"""Client traffic against the lab's VIP: an open-loop schedule of reads, writes and page loads.

Open loop: operation *i* is due at ``t0 + i / rate`` whatever happened to earlier ones, so a stalled
backend shows up as errors and latency, not as a quietly lower rate. One asyncio loop in one thread,
a minimal HTTP/1.1 client over keep-alive connections (no per-request thread, no header parsing
beyond what we need): enough for several hundred requests per second on one core.

* read  — ``GET /v2/servers?limit=20``: one page of the server list, as a dashboard pages it
* write — ``POST /v2/servers`` with a Nova-shaped body ``{"server": {...}}``
* page  — ``page_calls`` GETs in parallel (a dashboard page); the page fails if any call fails

Each operation produces one ``RequestRecord`` handed to ``on_record`` (on the generator's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from halab.errors import HalabError
from halab.lab.config import LabConfig, TrafficSettings, check_rate
from halab.observe.timeline import RequestRecord, percentile
from halab.ports import FRONTEND_PORT

SERVERS_PATH = "/v2/servers"
READ_LIMIT = 20  # Horizon's default page size: a read lists one page, not the whole table
# Kept-alive connections idle longer than this are closed rather than reused: HAProxy closes an idle
# client connection after `timeout http-request` (10 s), and a page's burst of parallel calls used to
# dig up several such dead connections at once.
IDLE_REUSE_S = 4.0


class _HTTPError(Exception):
    def __init__(self, kind: str, status: int | None = None):
        super().__init__(kind)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class _Response:
    status: int
    served_by: str | None
    keep_alive: bool


class _Conn:
    __slots__ = ("idle_since", "reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.used = 0
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass(frozen=True)
class TrafficStats:
    running: bool
    rate: float
    scheduled: int  # operations scheduled since start
    completed: int
    in_flight: int
    connections: int
    lag_p99_ms: float | None  # over the last ~1000 operations
    http_calls: int  # HTTP requests sent (a page counts page_calls)


class TrafficGenerator:
    """Start/stop from any thread; ``set_rate`` applies live (next scheduled operation)."""

    def __init__(
        self,
        host: str,
        port: int = FRONTEND_PORT,
        settings: TrafficSettings | None = None,
        on_record: Callable[[RequestRecord], None] | None = None,
        *,
        rate: float | None = None,
        seed: int | None = 0,
        max_connections: int = 1024,
        path: str = SERVERS_PATH,
    ):
        self.host = host
        self.port = port
        self.settings = settings or TrafficSettings()
        self.on_record = on_record
        self._rate = float(rate if rate is not None else self.settings.rate)
        self._check_rate(self._rate)
        self.path = path
        self.max_connections = max_connections
        self._rng = random.Random(seed)
        self._timeout = self.settings.timeout_ms / 1000.0
        self._kinds = ("read", "write", "page")
        self._weights = (self.settings.read_share, self.settings.write_share, self.settings.page_share)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_evt: asyncio.Event | None = None
        self._idle: list[_Conn] = []
        self._open_conns = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = 0
        self._completed = 0
        self._http_calls = 0
        self._lags: deque[float] = deque(maxlen=1000)
        self._write_seq = itertools.count(1)
        self._error: BaseException | None = None
        self._drain_s = self._timeout + 0.5
        host_hdr = host if port == 80 else f"{host}:{port}"
        self._get_bytes = (f"GET {path}?limit={READ_LIMIT} HTTP/1.1\r\nHost: {host_hdr}\r\n"
                           "User-Agent: halab-traffic\r\nAccept: application/json\r\n\r\n").encode()
        self._post_head = (f"POST {path} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: halab-traffic\r\n"
                           "Accept: application/json\r\nContent-Type: application/json\r\n")

    @classmethod
    def for_lab(cls, cfg: LabConfig, on_record: Callable[[RequestRecord], None] | None = None,
                **kw: object) -> TrafficGenerator:
        return cls(cfg.vip, FRONTEND_PORT, cfg.traffic, on_record, **kw)  # type: ignore[arg-type]

    # ---- control -----------------------------------------------------------------------------
    @staticmethod
    def _check_rate(rate: float) -> None:
        check_rate(rate)

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._check_rate(float(rate))
        self._rate = float(rate)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        started = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(started,), name="halab-traffic", daemon=True)
        self._thread.start()
        started.wait(5)

    def stop(self, drain_s: float | None = None) -> None:
        """Stop scheduling; wait up to ``drain_s`` (default: the request timeout) for operations in
        flight to finish and be recorded, then cancel the rest."""
        loop, evt, th = self._loop, self._stop_evt, self._thread
        if loop is None or evt is None or th is None:
            return
        self._drain_s = self._timeout + 0.5 if drain_s is None else drain_s
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(evt.set)
        th.join(self._drain_s + 5)
        self._thread = None
        if self._error is not None:
            raise HalabError(f"traffic generator failed: {self._error}") from self._error

    def stats(self) -> TrafficStats:
        return TrafficStats(self.running, self._rate, self._scheduled, self._completed,
                            len(self._tasks), self._open_conns, percentile(list(self._lags), 99),
                            self._http_calls)

    # ---- loop --------------------------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop_evt = asyncio.Event()
            started.set()
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
        finally:
            for c in self._idle:
                c.close()
            self._idle.clear()
            self._open_conns = 0
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        assert self._stop_evt is not None
        sched = asyncio.ensure_future(self._schedule())
        await self._stop_evt.wait()
        sched.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sched
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        mono = time.monotonic
        wall_offset = time.time() - mono()
        next_t = mono()
        while True:
            now = mono()
            if next_t > now:
                await asyncio.sleep(next_t - now)
            kind = self._rng.choices(self._kinds, self._weights)[0]
            task = loop.create_task(self._operation(kind, next_t + wall_offset, wall_offset))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._scheduled += 1
            next_t += 1.0 / self._rate
            # If we fell more than a second behind (host stalled), do not fire a burst to catch up;
            # the lag is still recorded on the operations that were late.
            if mono() - next_t > 1.0:
                next_t = mono()

    async def _operation(self, kind: str, scheduled: float, wall_offset: float) -> None:
        start = time.monotonic() + wall_offset
        self._lags.append((start - scheduled) * 1000.0)
        if kind == "page":
            results = await asyncio.gather(*(self._call(self._get_bytes)
                                             for _ in range(self.settings.page_calls)))
            served = tuple(r[2] for r in results if r[2])
            bad = next((r for r in results if r[0] is not None), None)
            ok = bad is None
            rec = RequestRecord("page", scheduled, start, time.monotonic() + wall_offset, ok,
                                None if ok else bad[0], results[0][1] if ok else bad[1], served,
                                self.settings.page_calls)
        else:
            req = self._get_bytes if kind == "read" else self._post_bytes()
            err, status, served_by = await self._call(req)
            rec = RequestRecord(kind, scheduled, start, time.monotonic() + wall_offset, err is None, err,
                                status, (served_by,) if served_by else ())
        self._completed += 1
        if self.on_record is not None:
            self.on_record(rec)

    def _post_bytes(self) -> bytes:
        n = next(self._write_seq)
        body = json.dumps({"server": {"name": f"traffic-{n}", "imageRef": "halab", "flavorRef": "1"}}
                          ).encode()
        return (self._post_head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    # ---- HTTP --------------------------------------------------------------------------------
    async def _call(self, request: bytes) -> tuple[str | None, int | None, str | None]:
        """One HTTP exchange: (error kind or None, status, X-Served-By)."""
        self._http_calls += 1
        try:
            async with asyncio.timeout(self._timeout):
                for attempt in (1, 2):
                    # The retry always gets a new connection: the next idle one may be as stale.
                    conn = self._take_idle() if attempt == 1 else None
                    reused = conn is not None
                    if conn is None:
                        if self._open_conns >= self.max_connections:
                            return "overload", None, None
                        conn = await self._connect()
                    try:
                        resp = await self._exchange(conn, request)
                    except _HTTPError as exc:
                        conn.close()
                        self._open_conns -= 1
                        # A kept-alive connection the server closed while idle: retry once on a new
                        # one, as every HTTP client does (nothing reached the application).
                        if reused and exc.kind == "reset-idle" and attempt == 1:
                            continue
                        return ("reset" if exc.kind == "reset-idle" else exc.kind), exc.status, None
                    except BaseException:
                        conn.close()
                        self._open_conns -= 1
                        raise
                    if resp.keep_alive:
                        conn.idle_since = time.monotonic()
                        self._idle.append(conn)
                    else:
                        conn.close()
                        self._open_conns -= 1
                    err = None if resp.status < 400 else f"http_{resp.status}"
                    return err, resp.status, resp.served_by
        except TimeoutError:
            return "timeout", None, None
        except _HTTPError as exc:
            return exc.kind, exc.status, None
        return "reset", None, None

    def _take_idle(self) -> _Conn | None:
        """The most recently used idle connection young enough to trust; older ones are closed."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since <= IDLE_REUSE_S:
                return conn
            conn.close()
            self._open_conns -= 1
        return None

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except ConnectionRefusedError:
            raise _HTTPError("connect-refused") from None
        except OSError:
            raise _HTTPError("connect") from None
        self._open_conns += 1
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: bytes) -> _Response:
        conn.used += 1
        got_any = False
        try:
            conn.writer.write(request)
            head = await conn.reader.readuntil(b"\r\n\r\n")
            got_any = True
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise _HTTPError("bad-response")
            status = int(parts[1])
            length = None
            chunked = False
            served_by = None
            keep_alive = parts[0] == "HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "x-served-by":
                    served_by = value.strip()
                elif name == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif name == "connection":
                    v = value.strip().lower()
                    keep_alive = v == "keep-alive" or (keep_alive and v != "close")
            if chunked:
                await self._read_chunked(conn.reader)
            elif length is not None:
                if length:
                    await conn.reader.readexactly(length)
            else:
                await conn.reader.read()  # body runs to EOF
                keep_alive = False
            return _Response(status, served_by, keep_alive)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            kind = "reset-idle" if not got_any and (
                not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial) else "reset"
            raise _HTTPError(kind) from None
        except (asyncio.LimitOverrunError, ValueError, UnicodeDecodeError):
            raise _HTTPError("bad-response") from None
        except OSError:
            raise _HTTPError("reset") from None

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # trailers end (assumes none)
                return
            await reader.readexactly(size + 2)
