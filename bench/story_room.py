#!/usr/bin/env python3
"""What the room sees: runs built-in stories on a real, running lab from the TUI in story mode (a
headless Textual app driven by Pilot, with the keys a presenter presses: x, the story, a to run on
without pauses; R between stories), and prints JSON: for each step, when it began, the nodes' states,
the requests that failed during it, the events the room saw (detection, recovery), the servers
panel when the step showed it; then the story's verdicts.

Needs a lab that is up (`./lab.py up`, `ready` checkpoint for the reset between stories). Boots
nothing itself. Run it under the VM lock, as a lab is running.

    .venv/bin/python bench/story_room.py [--story story-two-apis --story story-mq-loss] [--timeout 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from halab.live.session import LabSession, LabSnapshot
from tui import TuiSettings, make_app


def failed_between(snap: LabSnapshot, t0: float, t1: float) -> dict[str, int]:
    out = {"reads_ok": 0, "reads_err": 0, "writes_ok": 0, "writes_err": 0, "pages_ok": 0, "pages_err": 0}
    for p in snap.series:
        if t0 <= p.t < t1:
            for k in out:
                out[k] += getattr(p, k)
    return out


def node_states(snap: LabSnapshot) -> dict[str, str]:
    return {n.name: f"{n.state}/{n.health}/{n.backend}" + (f" {','.join(n.faults)}" if n.faults else "")
            for n in snap.nodes}


async def run_story(app, pilot, name: str, timeout: float) -> dict:
    from tui.screens.dashboard import DashboardScreen
    from tui.widgets.panels import ServersPanel

    paths = app.session.scenarios()
    index = [p.stem for p in paths].index(name)
    await pilot.press("x")
    await pilot.pause(0.3)
    for _ in range(index):
        await pilot.press("down")
    await pilot.press("enter")
    started = time.time()
    steps: list[dict] = []
    seen_events = max((e.seq for e in app.snapshot.events), default=0)  # only this story's events
    pressed_a = False
    deadline = time.monotonic() + timeout
    last: LabSnapshot | None = None
    while time.monotonic() < deadline:
        await pilot.pause(0.5)
        snap = app.snapshot
        if snap is None or snap.story is None or snap.story.title != name:
            continue
        if not pressed_a:
            await pilot.press("a")  # the presenter runs on without pauses
            pressed_a = True
        last = snap
        story = snap.story
        if not steps or steps[-1]["index"] != story.current:
            if steps:
                steps[-1]["requests"] = failed_between(snap, steps[-1]["_t"], snap.taken_at)
                steps[-1]["seconds"] = round(snap.taken_at - steps[-1]["_t"], 1)
            step = story.step
            steps.append({"index": story.current, "label": step.label if step else "",
                          "say": step.say if step else "", "_t": snap.taken_at,
                          "at_s": round(snap.taken_at - started, 1), "nodes": node_states(snap),
                          "events": []})
        new = [e for e in snap.events if e.seq > seen_events]
        if new:
            seen_events = max(e.seq for e in new)
            steps[-1]["events"] += [f"+{e.t - started:.1f}s {e.text}" for e in new if e.kind != "traffic"]
        screen = app.screen
        if isinstance(screen, DashboardScreen) and screen.stage == "servers":
            steps[-1]["servers_panel"] = str(screen.query_one(ServersPanel).render())
        if story.done:
            break
    if last is None:
        return {"story": name, "error": "the story never started"}
    if steps:
        steps[-1]["requests"] = failed_between(last, steps[-1]["_t"], last.taken_at)
        steps[-1]["seconds"] = round(last.taken_at - steps[-1]["_t"], 1)
    for s in steps:
        s.pop("_t", None)
    story = last.story
    return {
        "story": name,
        "done": bool(story and story.done),
        "passed": story.passed if story else None,
        "seconds": round(time.time() - started, 1),
        "hypotheses": [{"label": h.label, "scope": h.scope, "status": h.status, "value": h.value,
                        "at_s": h.at_s, "reason": h.reason} for h in (story.hypotheses if story else ())],
        "steps": steps,
    }


async def main_async(stories: list[str], timeout: float, demo: bool) -> dict:
    from halab.lab.config import load_config
    from halab.lab.lifecycle import lab_accel

    if demo:  # the script's own check, without a lab: the recorded demo lab, live clock
        from tui.demo import demo_session

        def factory():
            return demo_session(clock=time.time, keep_requests=True, history=False)

        cfg = factory().cfg
    else:
        cfg = load_config()
        cfg = cfg.for_accel(lab_accel(cfg))  # as `./lab.py tui` opens it

        def factory():
            return LabSession.open(cfg)

    app = make_app(factory, TuiSettings(tz=UTC, confirm_destructive=False))
    out: dict = {"lab": cfg.name, "profile": cfg.profile, "stories": []}
    async with app.run_test(size=(160, 48)) as pilot:
        while app.snapshot is None:
            await pilot.pause(0.2)
        for i, name in enumerate(stories):
            if i:
                t0 = time.monotonic()
                await pilot.press("R")  # reset to `ready` between runs, as the presenter would
                await pilot.pause(2.0)
                while app.workers and any(w.name.startswith("reset") and not w.is_finished
                                          for w in app.workers):
                    await pilot.pause(1.0)
                out.setdefault("resets_s", []).append(round(time.monotonic() - t0, 1))
            out["stories"].append(await run_story(app, pilot, name, timeout))
        await pilot.press("t")  # traffic off if a story left it on
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--story", action="append", help="a built-in story (repeatable)")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds per story at most")
    ap.add_argument("--demo", action="store_true", help="the demo lab (checks this script; no VMs)")
    args = ap.parse_args()
    result = asyncio.run(main_async(args.story or ["story-two-apis", "story-mq-loss"], args.timeout,
                                    args.demo))
    json.dump(result, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0 if all(s.get("done") for s in result["stories"]) else 1


if __name__ == "__main__":
    sys.exit(main())
