"""The story step that shows one server under both APIs (``show: servers``): the real lab API
handler (cloud-init/api/halab_api.py, with the in-memory DB and MQ of its own tests) on 127.0.0.1,
read as the presenter reads it through the VIP; then the TUI asking it from a story step and
showing the answer in the servers panel."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC

import pytest

from tests.functional.test_tui import settle
from tests.functional.test_tui_story import until
from tests.unit.test_halab_api import MemBus, MemStore, _req, api
from tui import TuiSettings, make_app, two_apis
from tui.demo import FakeTraffic, demo_session
from tui.screens.dashboard import DashboardScreen
from tui.widgets.panels import ServersPanel


@pytest.fixture
def lab_api():
    store, bus = MemStore(), MemBus()
    app = api.App("api-2", store, bus, 5.0, lambda: {"consuming": True})
    server = api.ThreadingHTTPServer(("127.0.0.1", 0), api.make_handler(app))
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield server.server_address[1], store
    server.shutdown()
    server.server_close()


def create_active(port, store, name="vm-7"):
    status, _h, body = _req(port, "POST", "/v2/servers", {"server": {"name": name}})
    assert status == 202
    sid = body["server"]["id"]
    store.set_status(sid, "ACTIVE", "api-3")
    return sid, store.rows[sid]["id"]


def test_one_server_in_both_views(lab_api):
    port, store = lab_api
    assert two_apis.ask("127.0.0.1", port) == ["two APIs: no server yet (the clients' writes create them)"]
    create_active(port, store, "vm-1")
    sid, num = create_active(port, store, "vm-7")  # the newest is the one shown
    iid = f"i-{num:08x}"
    lines = two_apis.ask("127.0.0.1", port)
    assert lines[0] == (f"two APIs: OpenStack GET /v2/servers/{sid} → id {sid}, name vm-7, status ACTIVE, "
                        "host api-3 (answered by api-2)")
    assert lines[1] == (f"two APIs: EC2 GET /ec2/instances/{iid} → instanceId {iid}, Name vm-7, "
                        "state running, privateDnsName api-3 (answered by api-2)")
    assert lines[2].endswith(f"only the integer id {num} (leaked as instance-{num:08x}) links {sid} to {iid}")


def test_what_the_room_sees_when_the_api_cannot_answer(lab_api):
    port, store = lab_api
    store.down = True
    [line] = two_apis.ask("127.0.0.1", port)
    assert line == "two APIs: GET /v2/servers?limit=1: HTTP 503 from api-2"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    [line] = two_apis.ask("127.0.0.1", closed)
    assert line.startswith("two APIs: GET /v2/servers?limit=1: no answer (")


def test_the_demo_lab_has_no_api_to_ask(tmp_path):
    session = demo_session(state_dir=tmp_path)
    assert two_apis.target(session) is None  # never a request to the demo's (unreal) VIP
    session.close()


class ApiTraffic(FakeTraffic):
    """The demo's traffic stand-in, aimed at the lab API on 127.0.0.1 (as the real generator is
    aimed at the VIP): where the story step asks."""

    def __init__(self, port: int):
        super().__init__()
        self.host, self.port = "127.0.0.1", port


STORY = """name: two-apis-test
steps:
  - mark: start
  - wait: 1
    say: One server, two APIs.
    show: servers
  - say: The end.
    pause: true
"""


async def test_the_story_step_asks_once_and_the_panel_shows_both_views(tmp_path, lab_api):
    port, store = lab_api
    sid, num = create_active(port, store)
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "two-apis-test.yaml").write_text(STORY)
    box = {}

    def factory():
        box["s"] = demo_session(state_dir=tmp_path, scenario_dir=d, clock=time.time, keep_requests=True,
                                history=False, traffic=ApiTraffic(port))
        return box["s"]

    app = make_app(factory, TuiSettings(tz=UTC, confirm_destructive=False))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("x")
        await pilot.press("enter")
        await until(pilot, app, lambda s: s.story is not None and s.story.waiting)
        screen = app.screen
        assert isinstance(screen, DashboardScreen) and screen.stage == "servers"
        panel = screen.query_one(ServersPanel)
        assert panel.display and not screen.query_one("#timeline").display
        text = str(panel.render())
        assert f"GET /v2/servers/{sid}" in text and f"instanceId i-{num:08x}" in text
        asked = [e for e in app.snapshot.events if e.text.startswith(two_apis.PREFIX)]
        assert len(asked) == 3  # once for the step, however many snapshots showed it
        await pilot.press("a")
        await until(pilot, app, lambda s: s.story.done)
