"""Helpers for the sandbox channel tests: the running sandbox, a notification catcher."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox.server import SandboxServer


def running_sandbox(request: pytest.FixtureRequest) -> SandboxServer:
    """The plugin's ``refund_sandbox`` (reset per test)."""
    server: SandboxServer = request.getfixturevalue("refund_sandbox")
    return server


class Catcher:
    """A loopback HTTP endpoint that records POSTs (a merchant's notify URL)."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.received.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/notify"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
