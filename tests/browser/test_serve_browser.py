"""A real browser (Debian's chromium + chromium-driver, through Selenium) on `./lab.py serve --demo`:
the dashboard renders in two viewers at once, both show the presenter's one snapshot, a wrong token
gets the refusal page, and a viewer's kill keystroke changes nothing in the lab (read from the
presenter's own feed, not from the screen). No VMs: the demo lab is libvirt's test driver."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# Keeps every text the page's websocket receives (the app's terminal output), so the test reads
# what the viewer was sent to draw: xterm.js paints on a canvas, not in the DOM.
CAPTURE = """
(() => {
  const rx = []; window.__halab_rx = rx;
  const Orig = window.WebSocket;
  window.WebSocket = class extends Orig {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        const d = ev.data;
        if (typeof d === 'string') rx.push(d);
        else if (d instanceof ArrayBuffer) rx.push(new TextDecoder().decode(d));
        else if (d instanceof Blob) d.text().then((t) => rx.push(t));
      });
    }
  };
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (./setup.sh installs them)")
    port = free_port()
    env = {**os.environ, "HALAB_STATE": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "lab.py"), "serve", "--demo", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline and url is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        url = m.group(1) if m else None
    assert url, "serve printed no viewer URL:\n" + "".join(lines)
    try:
        yield url, tmp_path / "state" / "demo"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE})
    return drv


def received(drv) -> str:
    return "".join(drv.execute_script("return window.__halab_rx || []"))


def wait_for(drv, words, timeout=90.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = received(drv)
        if all(w in text for w in words):
            return text
        time.sleep(0.5)
    raise AssertionError(f"the viewer never showed {words}; it got {len(text)} characters")


def presenter_snapshot(state: Path):
    from halab.live.feed import FeedClient

    client = FeedClient(state / "feed.sock", (state / "feed.token").read_text().strip())
    try:
        return client.latest()
    finally:
        client.close()


def test_two_viewers_share_the_presenters_lab_read_only(served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    url, state = served
    names = ["haproxy-1", "api-1", "api-4", "db-1", "mq-1"]
    one, two = browser(), browser()
    try:
        one.get(url)
        two.get(url)
        a = wait_for(one, [*names, "12:01:15"])
        b = wait_for(two, [*names, "12:01:15"])
        one.save_screenshot(str(tmp_path / "viewer.png"))
        assert (tmp_path / "viewer.png").stat().st_size > 10_000
        snap = presenter_snapshot(state)
        # both show the presenter's one snapshot: its clock and its traffic figures
        assert time.strftime("%H:%M:%S", time.gmtime(snap.taken_at)) == "12:01:15"
        for text in (a, b):
            assert "VIP 10.77.0.11" in text and "50 ok" in text

        before = [(n.name, n.state, n.faults) for n in snap.nodes]
        body = one.find_element("css selector", "body")
        ActionChains(one).move_to_element(body).click().send_keys("2").send_keys("k").perform()
        time.sleep(3)
        after = presenter_snapshot(state)
        assert [(n.name, n.state, n.faults) for n in after.nodes] == before
        assert "Kill api-1?" not in received(one)

        two.get(url.split("?")[0] + "?token=wrong")
        two.delete_all_cookies()
        two.get(url.split("?")[0] + "?token=wrong")
        assert "This viewer link is wrong or out of date" in two.page_source
    finally:
        one.quit()
        two.quit()
