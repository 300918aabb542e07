"""Helpers for the sandbox channel tests: a running server and a notification catcher.

``running_sandbox`` returns the plugin's ``refund_sandbox``; until every channel module of
the sandbox exists it first registers inert stand-ins for the missing ones, so one
channel's tests can run while the others are being written.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import types
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.server import SandboxServer

CHANNEL_MODULES = {"sandbox.alipay": ("AlipayChannel", "alipay"),
                   "sandbox.wechatpay": ("WechatPayChannel", "wechatpay"),
                   "sandbox.unionpay": ("UnionPayChannel", "bankcard"),
                   "sandbox.balance": ("BalanceChannel", "balance")}


def _stand_in(class_name: str, route: str) -> type[Channel]:
    class StandIn(Channel):
        prefixes = (f"/__missing_{route}/",)

        def operation(self, request: Request) -> str | None:
            return None

        def handle(self, request: Request) -> Response:
            return Response.text("not written yet", 404)

        def server_error(self) -> Response:
            return Response.text("", 500)

        def statement(self, day: date, base_url: str) -> bytes:
            return b""

        def client_settings(self, base_url: str) -> dict[str, str]:
            return {}

    StandIn.route = route
    StandIn.__name__ = class_name
    return StandIn


def ensure_channel_modules() -> None:
    for module, (class_name, route) in CHANNEL_MODULES.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            stub = types.ModuleType(module)
            setattr(stub, class_name, _stand_in(class_name, route))
            sys.modules[module] = stub


def running_sandbox(request: pytest.FixtureRequest) -> SandboxServer:
    ensure_channel_modules()
    server: SandboxServer = request.getfixturevalue("refund_sandbox")
    return server


class Catcher:
    """A loopback HTTP endpoint that records POSTs (a merchant's notify URL)."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.event = threading.Event()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.received.append((dict(self.headers.items()), body))
                catcher.event.set()
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
