#!/usr/bin/env python3
"""Browser-viewer benchmark, printed as JSON: `./lab.py serve --demo` with three real browsers
(Debian's chromium, headless, through Selenium, as the browser tier drives it) attached at once;
the presenter's updates per second and each viewer's.

* presenter: snapshots the serving process took and published (counted by a feed reader of the
  bench's own, which renders nothing);
* each viewer: distinct presenter snapshots its process received and handed to its screen, and the
  screen refreshes it did (written by each viewer process when HALAB_VIEWER_STATS is set); plus the
  websocket messages and bytes its browser received (the terminal output xterm.js draws).

Target (issue 17): with three viewers, >= 4 updates/s for the presenter and for every viewer.
``--busy`` runs ``yes > /dev/null`` alongside (one core of two kept busy) for the whole window.

    .venv/bin/python bench/serve_bench.py [--seconds 20] [--viewers 3] [--busy]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from halab.live.feed import FeedClient  # noqa: E402
from tui.viewer import STATS_ENV  # noqa: E402

# Counts what each page's websocket receives (xterm.js paints on a canvas, not in the DOM).
CAPTURE = """
(() => {
  const c = {messages: 0, bytes: 0, text: []}; window.__halab = c;
  const Orig = window.WebSocket;
  window.WebSocket = class extends Orig {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        const d = ev.data;
        c.messages += 1;
        if (typeof d === 'string') { c.bytes += d.length; if (c.text.length < 400) c.text.push(d); }
        else if (d instanceof ArrayBuffer) {
          c.bytes += d.byteLength;
          if (c.text.length < 400) c.text.push(new TextDecoder().decode(d));
        } else if (d instanceof Blob) { c.bytes += d.size; }
      });
    }
  };
})();
"""
NAMES = ("haproxy-1", "api-1", "api-4", "db-1", "mq-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(state: Path, stats: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HALAB_STATE": str(state), STATS_ENV: str(stats), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "lab.py"), "serve", "--demo", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        if m:
            return proc, m.group(1)
    stop(proc)
    raise SystemExit("serve printed no viewer URL:\n" + "".join(lines))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def browser(chromium: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE})
    return drv


def page_counts(drv) -> dict:
    return drv.execute_script("const c = window.__halab || {}; "
                              "return {messages: c.messages || 0, bytes: c.bytes || 0};")


def page_text(drv) -> str:
    return "".join(drv.execute_script("return (window.__halab || {}).text || []"))


def viewer_stats(stats: Path) -> dict[int, dict]:
    out = {}
    for f in stats.glob("*.json"):
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out[row["pid"]] = row
    return out


class PresenterCounter:
    """Counts the presenter's published snapshots through its feed, as a viewer would see them."""

    def __init__(self, state: Path):
        self.n = 0
        self.client = FeedClient(state / "feed.sock", (state / "feed.token").read_text().strip())
        self.client.subscribe(self._count)

    def _count(self, _change) -> None:
        self.n += 1


def rate(a: float, b: float, seconds: float) -> float:
    return round((b - a) / seconds, 2)


def bench(seconds: float, viewers: int, busy: bool) -> dict:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs Debian's chromium and chromium-driver (./setup.sh installs them)")
    tmp = Path(tempfile.mkdtemp(prefix="halab-serve-bench-"))
    state, stats = tmp / "state", tmp / "stats"
    stats.mkdir()
    proc, url = start_serve(state, stats, free_port())
    drivers, hog = [], None
    try:
        for _ in range(viewers):
            d = browser(chromium, driver)
            d.get(url)
            drivers.append(d)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shown = [all(n in page_text(d) for n in NAMES) for d in drivers]
            if all(shown) and len(viewer_stats(stats)) >= viewers:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"the viewers never all rendered the dashboard ({len(viewer_stats(stats))} "
                             f"viewer processes reported)")
        counter = PresenterCounter(state / "demo")
        if busy:
            hog = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
        time.sleep(3.0)  # warm up (and let the hog take its core)

        s0, p0, b0 = viewer_stats(stats), counter.n, [page_counts(d) for d in drivers]
        load0, t0 = os.getloadavg()[0], time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        s1, p1, b1 = viewer_stats(stats), counter.n, [page_counts(d) for d in drivers]
        counter.client.close()
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
        for d in drivers:
            d.quit()
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    per_viewer = []
    for pid in sorted(set(s0) & set(s1)):
        a, b = s0[pid], s1[pid]
        span = b["at"] - a["at"] or wall
        per_viewer.append({
            "pid": pid,
            "snapshots_on_screen_per_s": rate(a["fresh_on_screen"], b["fresh_on_screen"], span),
            "snapshots_received_per_s": rate(a["received"], b["received"], span),
            "screen_refreshes_per_s": rate(a["refreshes"], b["refreshes"], span),
        })
    pages = [{"ws_messages_per_s": rate(a["messages"], b["messages"], wall),
              "ws_kbytes_per_s": round((b["bytes"] - a["bytes"]) / wall / 1000, 1)}
             for a, b in zip(b0, b1, strict=True)]
    presenter = rate(p0, p1, wall)
    worst = min((v["snapshots_on_screen_per_s"] for v in per_viewer), default=0.0)
    return {
        "viewers": viewers,
        "busy_host": busy,
        "window_s": round(wall, 2),
        "load_avg_1m_at_start": round(load0, 2),
        "presenter_updates_per_s": presenter,
        "viewer_processes": per_viewer,
        "browsers": pages,
        "targets": {"presenter_updates_per_s": ">= 4", "each_viewer_snapshots_on_screen_per_s": ">= 4"},
        "pass": {"presenter": presenter >= 4, "every_viewer": len(per_viewer) == viewers and worst >= 4},
        "notes": "serve --demo (libvirt test:///default, the recorded demo lab, its clock frozen); "
                 "three headless chromium via selenium; the presenter's rate is read from its feed by a "
                 "reader that renders nothing; busy = one `yes > /dev/null` on a 2-core host; the "
                 "load average counts whatever else the host runs",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--viewers", type=int, default=3)
    ap.add_argument("--busy", action="store_true", help="run `yes > /dev/null` alongside")
    args = ap.parse_args()
    result = bench(args.seconds, args.viewers, args.busy)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
