#!/usr/bin/env python3
"""Makes the README's screenshots from the real programs (no VMs: the recorded demo lab).

* ``tui-story.svg`` — the TUI (Textual's own SVG screenshot, headless) in the middle of the
  built-in mq story, waiting for the presenter, full layout at 120x36.
* ``browser-viewer.png`` — a browser viewer: Debian's chromium, headless, on ``./lab.py serve
  --demo`` (what a person in the room opens from the printed link).

    .venv/bin/python docs/img/shoot.py
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))


def story_session(state: Path):
    from halab.chaos.scenario import load_scenario
    from halab.chaos.story import HypothesisView, Story
    from tui.demo import demo_session

    session = demo_session(state_dir=state)
    story = Story.for_scenario(load_scenario("story-mq-loss"))
    for i in (1, 2, 3, 4):
        story.begin(i)
    story.hypotheses([HypothesisView("read_availability >= 99.9 %", "run", "holding"),
                      HypothesisView("failed_pages == 0", "run", "holding"),
                      HypothesisView("read-only cloud", "step 7", "pending")])
    session._story = story  # the story as the runner would have it at step 4 (the TUI reads it)
    return session


async def tui_svg(out: Path) -> None:
    from tui import TuiSettings, make_app

    state = Path(tempfile.mkdtemp(prefix="halab-shoot-"))
    app = make_app(lambda: story_session(state), TuiSettings(tz=UTC))
    async with app.run_test(size=(120, 36)) as pilot:
        while app.snapshot is None:
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        out.write_text(app.export_screenshot(title="halab: story mode"), encoding="utf-8")
    shutil.rmtree(state, ignore_errors=True)


def browser_png(out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs Debian's chromium and chromium-driver (./setup.sh installs them)")
    state = Path(tempfile.mkdtemp(prefix="halab-shoot-"))
    env = {**os.environ, "HALAB_STATE": str(state), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "lab.py"), "serve", "--demo", "--port", "8765"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("serve stopped before printing the viewer link")
            m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
            url = m.group(1) if m else None
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1200,760", "--hide-scrollbars"):
            opts.add_argument(a)
        drv = webdriver.Chrome(service=Service(driver), options=opts)
        try:
            drv.get(url)
            time.sleep(12)  # the viewer process starts, attaches to the feed and draws
            drv.save_screenshot(str(out))
        finally:
            drv.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    asyncio.run(tui_svg(HERE / "tui-story.svg"))
    browser_png(HERE / "browser-viewer.png")
    for f in ("tui-story.svg", "browser-viewer.png"):
        print(f"{HERE / f}: {(HERE / f).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
