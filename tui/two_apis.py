"""One server under both of the lab API's views, for the story step that shows why OpenStack and
EC2 references differ (``show: servers``).

The presenter asks the lab, through the VIP as any client would: the newest server in the
OpenStack view (``/v2/servers``, a UUID), its detail (where Nova's integer id leaks as
``instance_name: instance-%08x``), and the same server in the EC2 view (``/ec2/instances/i-%08x``).
What it read goes to the timeline as events (prefix ``two APIs:``), so browser viewers and a replay
show the same panel. No Textual here: the app calls ``ask`` in a worker, the panel reads the events.
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

from halab.ports import FRONTEND_PORT

PREFIX = "two APIs: "
TIMEOUT_S = 3.0
_INSTANCE_RE = re.compile(r"^instance-([0-9a-f]{8,16})$")


class NoAnswer(Exception):
    """The API did not give what the step needs; the text says what (shown to the room)."""


def target(session: Any) -> tuple[str, int] | None:
    """Where the lab's clients send their requests (the traffic generator's VIP and port); None
    for a lab without an API (the demo lab on libvirt's test driver)."""
    traffic = session.engine.traffic
    host, port = getattr(traffic, "host", None), getattr(traffic, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    cfg = getattr(session, "cfg", None)
    if cfg is None or str(getattr(cfg, "libvirt_uri", "")).startswith("test:"):
        return None
    return cfg.vip, FRONTEND_PORT


def _get(host: str, port: int, path: str) -> tuple[dict[str, Any], str]:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "halab-story"})
        resp = conn.getresponse()
        raw = resp.read()
        served = resp.getheader("X-Served-By") or "?"
    except (OSError, http.client.HTTPException) as exc:
        raise NoAnswer(f"GET {path}: no answer ({exc or type(exc).__name__})") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise NoAnswer(f"GET {path}: HTTP {resp.status} from {served}")
    try:
        body = json.loads(raw)
    except ValueError:
        raise NoAnswer(f"GET {path}: not JSON") from None
    if not isinstance(body, dict):
        raise NoAnswer(f"GET {path}: not a JSON object")
    return body, served


def ask(host: str, port: int) -> list[str]:
    """The event lines for one server in both views (or one line saying why not)."""
    try:
        listing, _ = _get(host, port, "/v2/servers?limit=1")
        servers = listing.get("servers") or []
        if not servers:
            return [PREFIX + "no server yet (the clients' writes create them)"]
        uuid = str(servers[0].get("id"))
        detail, os_by = _get(host, port, f"/v2/servers/{uuid}")
        s = detail.get("server") or {}
        m = _INSTANCE_RE.match(str(s.get("OS-EXT-SRV-ATTR:instance_name", "")))
        if m is None:
            return [PREFIX + f"OpenStack shows {uuid} without the instance name that would link it to EC2"]
        num = int(m.group(1), 16)
        iid = f"i-{num:08x}"
        ec2, ec2_by = _get(host, port, f"/ec2/instances/{iid}")
        inst = (ec2.get("instancesSet") or [{}])[0]
    except NoAnswer as exc:
        return [PREFIX + str(exc)]
    tags = {t.get("key"): t.get("value") for t in inst.get("tagSet", []) if isinstance(t, dict)}
    state = (inst.get("instanceState") or {}).get("name", "?")
    lines = [
        PREFIX + f"OpenStack GET /v2/servers/{uuid} → id {uuid}, name {s.get('name')}, status "
        f"{s.get('status')}, host {s.get('OS-EXT-SRV-ATTR:host')} (answered by {os_by})",
        PREFIX + f"EC2 GET /ec2/instances/{iid} → instanceId {inst.get('instanceId')}, Name "
        f"{tags.get('Name')}, state {state}, privateDnsName {inst.get('privateDnsName')} "
        f"(answered by {ec2_by})",
    ]
    same = tags.get("Name") == s.get("name") and inst.get("privateDnsName") == s.get("OS-EXT-SRV-ATTR:host")
    if same:
        lines.append(PREFIX + f"one server, two ids that share nothing: only the integer id {num} (leaked "
                     f"as instance-{num:08x}) links {uuid} to {iid}")
    else:
        lines.append(PREFIX + f"the two views disagree about {uuid} / {iid} (name or host differ)")
    return lines


def latest(events: tuple[Any, ...]) -> list[str]:
    """The newest answer's lines (without the prefix), from the snapshot's events."""
    mine = [e.text[len(PREFIX):] for e in events if e.text.startswith(PREFIX)]
    for i in range(len(mine) - 1, -1, -1):
        if mine[i].startswith("OpenStack GET"):
            return mine[i:]
    return mine[-1:]
