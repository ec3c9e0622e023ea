#!/usr/bin/python3
"""Galera health endpoint for HAProxy (clustercheck-style), on port 9200 of every db node (ha).

Any request (HAProxy's ``option httpchk`` sends ``OPTIONS /``) is answered 200 only when the local
node is Synced (wsrep_local_state = 4) and ready (wsrep_ready = ON); 503 otherwise, including when
MariaDB cannot be reached. Queries run over the local socket as a USAGE-only user, with short
timeouts; only the standard library is needed to import this file (PyMySQL is imported on use).
"""

from __future__ import annotations

import argparse
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger("halab-clustercheck")
SYNCED = 4
STATE_NAMES = {1: "Joining", 2: "Donor/Desynced", 3: "Joined", 4: "Synced"}


def verdict(status: dict[str, str] | None) -> tuple[int, str]:
    """(HTTP status, text) for the node's wsrep status variables (None: MariaDB unreachable)."""
    if status is None:
        return 503, "Galera node is not reachable (MariaDB down?).\r\n"
    try:
        state = int(status.get("wsrep_local_state", "0"))
    except ValueError:
        state = 0
    ready = status.get("wsrep_ready", "OFF").upper() == "ON"
    name = STATE_NAMES.get(state, f"state {state}")
    if state == SYNCED and ready:
        return 200, "Galera node is synced.\r\n"
    return 503, f"Galera node is not synced ({name}, ready={'ON' if ready else 'OFF'}).\r\n"


def read_status(cfg: dict[str, Any]) -> dict[str, str] | None:
    import pymysql

    try:
        conn = pymysql.connect(unix_socket=cfg.get("socket", "/run/mysqld/mysqld.sock"), user=cfg["user"],
                               password=cfg["password"], connect_timeout=1, read_timeout=2, write_timeout=2)
    except (pymysql.err.MySQLError, OSError):
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_ready')")
            return {str(k).lower(): str(v) for k, v in cur.fetchall()}
    except (pymysql.err.MySQLError, OSError):
        return None
    finally:
        conn.close()


def make_handler(cfg: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5

        def _answer(self) -> None:
            code, text = verdict(read_status(cfg))
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_OPTIONS = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="/etc/halab/clustercheck.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with open(args.config, encoding="utf-8") as fh:
        cfg = json.load(fh)
    server = ThreadingHTTPServer(("0.0.0.0", int(cfg.get("port", 9200))), make_handler(cfg))
    server.daemon_threads = True
    LOG.info("listening on port %s", server.server_address[1])
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
