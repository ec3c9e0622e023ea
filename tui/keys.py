"""The key map: one list that the dashboard's bindings, the key bar and the help screen share."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class KeySpec:
    keys: str  # Textual key names, comma separated
    action: str  # dashboard action
    label: str  # short, for the key bar
    help: str  # one line, for the help screen
    shown: str  # how the key is written for people
    destructive: bool = False


NODE_KEYS: tuple[KeySpec, ...] = (
    KeySpec("k", "kill", "kill", "Kill the selected node: power cut (libvirt destroy)", "k", True),
    KeySpec("r", "revive", "revive", "Revive the selected node: start it again (or resume it); warm or "
            "cold as lab.yaml's `revive:` says", "r"),
    KeySpec("w", "revive_warm", "warm rev", "Revive the selected api/haproxy node warm: from the `ready` "
            "checkpoint in seconds, not a cold boot", "w"),
    KeySpec("p", "pause", "pause", "Pause / resume the selected node (a frozen VM)", "p", True),
    KeySpec("b", "reboot", "reboot", "Reboot the selected node (hard reset)", "b", True),
    KeySpec("n", "netcut", "net cut", "Cut / restore the selected node's network link", "n", True),
    KeySpec("l", "latency", "latency", "Add latency (netem) to the selected node; again to clear it",
            "l", True),
    KeySpec("s", "service", "stop svc", "Stop / start the selected node's role service (over SSH)",
            "s", True),
    KeySpec("u", "restore", "restore all", "Undo every active fault on the lab", "u"),
)
LAB_KEYS: tuple[KeySpec, ...] = (
    KeySpec("t", "traffic", "traffic", "Start / stop client traffic against the VIP", "t"),
    KeySpec("plus,equals_sign", "rate_up", "rate+", "Raise the traffic rate", "+"),
    KeySpec("minus", "rate_down", "rate-", "Lower the traffic rate", "-"),
    KeySpec("x", "scenario", "scenario", "Run a scripted scenario from scenarios/", "x", True),
    KeySpec("R", "reset", "reset",
            "Reset the whole lab to its `ready` checkpoint (what changed since is gone)", "R", True),
)
STORY_KEYS: tuple[KeySpec, ...] = (
    KeySpec("space", "story_next", "next", "Story: go on with the step that waits for the presenter",
            "space"),
    KeySpec("a", "story_auto", "run on", "Story: run on without pauses", "a"),
)
VIEW_KEYS: tuple[KeySpec, ...] = (
    KeySpec("v", "projector", "projector", "Projector layout: fewer, larger panels (again: back)", "v"),
    KeySpec("f", "quiet_events", "quiet", "Events: only what changes the story (faults, HAProxy DOWN/UP, "
            "detection, recovery, steps); again: everything", "f"),
)
APP_KEYS: tuple[KeySpec, ...] = (
    KeySpec("question_mark,f1", "help", "help", "This help", "?"),
    KeySpec("q", "quit", "quit", "Quit (the lab keeps running; `./lab.py down` removes it)", "q"),
)
MOVE_KEYS: tuple[tuple[str, str], ...] = (
    ("↑ ↓ / mouse", "Select a node"),
    ("1 … 9", "Select the node with that number"),
    ("y / n / Esc", "Answer a confirmation"),
    ("ctrl+p", "Command palette (themes and more)"),
)

ALL_KEYS = NODE_KEYS + LAB_KEYS + STORY_KEYS + VIEW_KEYS + APP_KEYS
VIEWER_KEYS = VIEW_KEYS + APP_KEYS  # a browser viewer: no key that changes the lab exists


def bindings(specs: tuple[KeySpec, ...]) -> list[Binding]:
    return [Binding(s.keys, s.action, s.label, show=False) for s in specs]
