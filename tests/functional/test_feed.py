"""The presenter's feed: 0600 socket and token, one snapshot taken per period for every viewer,
wrong tokens rejected, anything a viewer sends refused, snapshots that survive the wire."""

from __future__ import annotations

import stat
import time

import pytest

from halab.errors import HalabError, UsageError
from halab.live.feed import (
    FeedClient,
    FeedServer,
    ViewerReadOnly,
    ViewerSession,
    feed_paths,
    load_or_create_token,
    snapshot_from_dict,
    snapshot_to_dict,
)
from tui.demo import demo_session


@pytest.fixture
def presenter(tmp_path):
    session = demo_session(state_dir=tmp_path)
    taken = []

    def source():
        taken.append(1)
        return session.snapshot()

    sock, tok = feed_paths("demo", tmp_path / "state")
    token = load_or_create_token(tok)
    server = FeedServer(source, sock, token, hz=20).start()
    yield server, sock, token, taken, session
    server.stop()
    session.close()


def test_socket_and_token_are_private(presenter):
    _server, sock, _token, _t, _s = presenter
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((sock.parent / "feed.token").stat().st_mode) == 0o600
    with pytest.raises(UsageError, match="another presenter already publishes"):
        FeedServer(lambda: None, sock, "x" * 40).start()


def test_viewers_share_one_snapshot_stream_and_cannot_act(presenter):
    server, sock, token, taken, session = presenter
    viewers = [ViewerSession(FeedClient(sock, token)) for _ in range(3)]
    snaps = [v.snapshot() for v in viewers]
    assert all(s.lab == "demo" and len(s.nodes) == 7 for s in snaps)
    assert snaps[0] == snaps[1] == snaps[2] or snaps[0].nodes == snaps[2].nodes
    before = len(taken)
    time.sleep(1.0)
    per_second = len(taken) - before
    assert per_second <= 25  # one snapshot per period however many viewers (20 Hz here), not per viewer
    assert server.viewers == 3
    with pytest.raises(ViewerReadOnly, match="viewers are read-only"):
        viewers[0].kill("api-2")
    viewers[0].client.send_raw('{"action": "kill", "node": "api-2"}')
    time.sleep(0.3)
    assert server.refused == 1
    assert not session.engine.faults.active() and session.snapshot().node("api-2").state == "running"
    for v in viewers:
        v.close()


def test_a_wrong_token_is_refused(presenter):
    server, sock, _token, _t, _s = presenter
    client = FeedClient(sock, "not-the-token")
    with pytest.raises(HalabError, match="refused this viewer: wrong feed token"):
        client.latest(wait_s=5)
    assert server.rejected == 1


def test_no_presenter_is_a_clear_error(tmp_path):
    with pytest.raises(HalabError, match="no presenter publishes the lab"):
        FeedClient(tmp_path / "feed.sock", "x")


def test_snapshots_round_trip(tmp_path):
    s = demo_session(state_dir=tmp_path).snapshot()
    assert snapshot_from_dict(snapshot_to_dict(s)) == s
    with pytest.raises(HalabError, match="cannot read"):
        snapshot_from_dict({"lab": "x"})


class SlowSnapshots:
    """The demo lab, each snapshot taking ``cost_s`` (a real lab's libvirt, HAProxy and timeline
    reads take ~0.1 s on a busy TCG host)."""

    def __init__(self, session, cost_s: float):
        self.session, self.cost_s = session, cost_s

    def snapshot(self):
        time.sleep(self.cost_s)
        return self.session.snapshot()

    def close(self) -> None:
        self.session.close()


def test_the_presenter_keeps_five_a_second_when_a_snapshot_takes_a_tenth(tmp_path):
    """Fixed-rate ticks, not a sleep after each snapshot (that made 1/(0.2 + 0.1) = 3.3 a second)."""
    from tui.serve import HeadlessPresenter

    presenter = HeadlessPresenter(SlowSnapshots(demo_session(state_dir=tmp_path), 0.1)).start()
    sock, tok = feed_paths("demo", tmp_path / "state")
    token = load_or_create_token(tok)
    feed = FeedServer(lambda: presenter.latest, sock, token).start()
    presenter.on_snapshot = feed.notify
    client = FeedClient(sock, token)
    try:
        client.latest()
        time.sleep(0.5)
        taken0, got0, t0 = presenter.taken, client.received, time.monotonic()
        time.sleep(3.0)
        wall = time.monotonic() - t0
        taken, got = (presenter.taken - taken0) / wall, (client.received - got0) / wall
    finally:
        client.close()
        feed.stop()
        presenter.stop()
    assert 4.5 <= taken <= 5.5, f"presenter took {taken:.2f} snapshots/s"
    assert got >= 4.5, f"a viewer received {got:.2f} snapshots/s (presenter {taken:.2f})"


def test_fixed_rate_skips_missed_ticks_instead_of_bursting():
    import itertools
    import threading

    from halab.live.feed import fixed_rate

    stop, times = threading.Event(), []

    def tick() -> None:
        times.append(time.monotonic())
        if len(times) == 2:
            time.sleep(0.35)  # overruns almost four periods of 0.1 s
        if len(times) >= 6:
            stop.set()

    fixed_rate(stop, 0.1, tick)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.04 for g in gaps), gaps  # no burst of catch-up ticks after the overrun
    assert all(abs(g - 0.1) < 0.06 for g in gaps[2:]), gaps  # then back on a 0.1 s schedule
