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
    assert not session.faults.active() and session.snapshot().node("api-2").state == "running"
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
