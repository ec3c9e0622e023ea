"""A tiny stand-in for the lab API on 127.0.0.1: keep-alive HTTP/1.1, X-Served-By, and switches
to make it fail (status code, delay, dropped connections) — for traffic generator tests and the
benchmark."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeAPI:
    def __init__(self, nodes: tuple[str, ...] = ("api-1", "api-2", "api-3", "api-4"),
                 idle_close_s: float | None = None):
        self.nodes = nodes
        self._rr = itertools.cycle(nodes)
        self._lock = threading.Lock()
        self.fail_status: int | None = None  # answer every request with this status
        self.fail_methods: tuple[str, ...] = ("GET", "POST")
        self.delay_s = 0.0
        self.drop = False  # close the connection without answering
        self.hits = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes
            timeout = idle_close_s  # like HAProxy: a kept-alive connection idle this long is closed

            def log_message(self, *args):  # quiet
                pass

            def _answer(self):
                with api._lock:
                    api.hits += 1
                    node = next(api._rr)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if api.delay_s:
                    time.sleep(api.delay_s)
                if api.drop:
                    self.close_connection = True
                    return
                status = 200 if self.command == "GET" else 202
                if api.fail_status and self.command in api.fail_methods:
                    status = api.fail_status
                body = json.dumps({"servers": []} if self.command == "GET" else {"server": {"id": "x"}}
                                  ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Served-By", node)
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients that hang up early: quiet
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def fake_api_process() -> Iterator[int]:
    """The fake API in its own process (its own GIL): the port. For rate measurements, so the
    server's threads do not compete with the generator in one interpreter."""
    root = Path(__file__).resolve().parent.parent.parent
    code = (f"import sys; sys.path.insert(0, {str(root)!r})\n"
            "from tests.support.fake_api import FakeAPI\n"
            "with FakeAPI() as api:\n"
            "    print(api.port, flush=True)\n"
            "    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
