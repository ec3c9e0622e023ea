"""The traffic generator against a local fake API on 127.0.0.1."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import Counter

import pytest

from halab.errors import UsageError
from halab.lab.config import TrafficSettings
from halab.observe.timeline import Timeline, percentile
from halab.observe.traffic import TrafficGenerator
from tests.support.fake_api import FakeAPI, fake_api_process


@pytest.fixture
def api():
    with FakeAPI() as a:
        yield a


def run(api_port: int, seconds: float, rate: float, settings: TrafficSettings | None = None,
        during=None) -> tuple[Timeline, TrafficGenerator]:
    tl = Timeline()
    gen = TrafficGenerator("127.0.0.1", api_port, settings, tl.add_request, rate=rate)
    gen.start()
    if during:
        during(gen)
    time.sleep(seconds)
    gen.stop()
    tl.flush()
    return tl, gen


def test_keeps_schedule_at_200_per_second():
    with fake_api_process() as port:
        tl, gen = run(port, 3.0, 200.0)
    recs = tl.requests()
    assert all(r.ok for r in recs), Counter(r.error for r in recs)
    first, last = min(r.scheduled for r in recs), max(r.scheduled for r in recs)
    achieved = (len(recs) - 1) / (last - first)
    assert achieved == pytest.approx(200.0, rel=0.02)
    # The schedule itself is exact: slots 5 ms apart.
    slots = sorted(r.scheduled for r in recs)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert max(gaps) == pytest.approx(0.005, abs=1e-6)
    kinds = Counter(r.kind for r in recs)
    assert kinds["read"] > kinds["page"] > kinds["write"] > 0
    pages = [r for r in recs if r.kind == "page"]
    assert all(r.calls == 8 and len(r.served_by) == 8 for r in pages)
    nodes = Counter(n for r in recs for n in r.served_by)
    assert set(nodes) == {"api-1", "api-2", "api-3", "api-4"}
    assert gen.stats().scheduled == len(recs)
    buckets = tl.buckets()
    assert sum(b.read.ok + b.write.ok + b.page.ok for b in buckets) == len(recs)
    assert set(buckets[len(buckets) // 2].share) == {"api-1", "api-2", "api-3", "api-4"}
    # Last, the one timing figure: everything above holds on any host. ~4 ms on an idle 2-core host
    # (bench/traffic_bench.py); an overloaded host says nothing about the generator, so only this
    # part is skipped there.
    lag_p99 = percentile([r.lag_ms for r in recs], 99)
    if lag_p99 >= 100 and os.getloadavg()[0] > 2 * (os.cpu_count() or 1):
        pytest.skip(f"host overloaded (load {os.getloadavg()[0]:.1f}): lag p99 {lag_p99:.0f} ms; every "
                    "other check of the schedule passed; run bench/traffic_bench.py on a quiet host")
    assert lag_p99 < 100, f"operations started {lag_p99:.1f} ms late (p99)"


def test_http_errors_by_kind(api):
    api.fail_status = 503
    api.fail_methods = ("POST",)
    tl, _ = run(api.port, 1.0, 100.0)
    recs = tl.requests()
    writes = [r for r in recs if r.kind == "write"]
    assert writes
    assert Counter(r.error for r in writes) == {"http_503": len(writes)}
    assert Counter(r.error for r in recs if r.kind != "write") == {None: len(recs) - len(writes)}
    api.fail_methods = ("GET",)
    tl, _ = run(api.port, 1.0, 100.0)
    pages = [r for r in tl.requests() if r.kind == "page"]
    assert pages and Counter(r.error for r in pages) == {"http_503": len(pages)}


def test_timeouts_are_errors_and_schedule_holds(api):
    api.delay_s = 0.4
    settings = TrafficSettings(timeout_ms=200)
    tl, _ = run(api.port, 1.5, 40.0, settings)
    recs = tl.requests()
    assert recs and all(r.error == "timeout" for r in recs)
    assert all(190 <= r.latency_ms <= 400 for r in recs)
    # Open loop: slow answers do not slow the schedule.
    first, last = min(r.scheduled for r in recs), max(r.scheduled for r in recs)
    assert (len(recs) - 1) / (last - first) == pytest.approx(40.0, rel=0.05)


def test_connection_refused_and_dropped():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tl, _ = run(port, 0.5, 40.0)
    assert {r.error for r in tl.requests()} == {"connect-refused"}
    with FakeAPI() as api:
        api.drop = True
        tl, _ = run(api.port, 0.5, 40.0)
        assert {r.error for r in tl.requests()} == {"reset"}


def test_rate_changes_live(api):
    tl = Timeline()
    gen = TrafficGenerator("127.0.0.1", api.port, None, tl.add_request, rate=50)
    gen.start()
    time.sleep(1.0)
    t_switch = time.time()
    gen.set_rate(150)
    time.sleep(1.5)
    gen.stop()
    after = [r for r in tl.requests() if r.scheduled > t_switch + 0.05]
    span = max(r.scheduled for r in after) - min(r.scheduled for r in after)
    assert (len(after) - 1) / span == pytest.approx(150, rel=0.05)
    assert not gen.running
    with pytest.raises(UsageError):
        gen.set_rate(0)


@pytest.mark.parametrize("reuse_s", [0.15, 60.0])
def test_connections_the_server_closed_while_idle_never_fail_a_page(monkeypatch, reuse_s):
    """A server closes kept-alive connections idle for 0.3 s (HAProxy does after 10 s). Pages come
    every 0.6 s, each a burst of 8 parallel calls that finds the pool full of dead connections. With
    reuse_s=0.15 the client drops them by age; with 60 s it must still retry each on a *new*
    connection (retrying on the next idle one hit another dead one: the 'reset' pages seen on
    real VMs)."""
    import halab.observe.traffic

    monkeypatch.setattr(halab.observe.traffic, "IDLE_REUSE_S", reuse_s)
    settings = TrafficSettings(read_share=0.0, write_share=0.0, page_share=1.0, page_calls=8)
    with FakeAPI(idle_close_s=0.3) as api:
        tl, _ = run(api.port, 3.1, 1 / 0.6, settings)
    pages = tl.requests()
    assert len(pages) >= 5
    assert [r.error for r in pages if not r.ok] == []
