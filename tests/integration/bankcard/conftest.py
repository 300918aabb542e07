"""A RefundGateway (bank card + balance) pointed at the running sandbox, on SQLite and
PostgreSQL, with an HTTP receiver as UnionPay's backUrl feeding ``handle_notification``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from gateway import Money, Payment, RefundGateway, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.settings import load_settings


class Receiver(ThreadingHTTPServer):
    # Join handler threads on close, so none still uses a gateway being closed.
    daemon_threads = False
    block_on_close = True
    gateway: RefundGateway | None = None
    answers: list[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/notify/bankcard"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        gw = self.server.gateway
        if gw is None:
            status, payload = 503, b"not ready"
        else:
            ack = gw.handle_notification(Route.BANKCARD, dict(self.headers.items()), body)
            status, payload = ack.http_status, ack.body
        self.server.answers.append(status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.answers = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    stop(server)


def stop(server: Receiver) -> None:
    if not getattr(server, "stopped", False):
        server.stopped = True   # type: ignore[attr-defined]
        server.gateway = None
        server.shutdown()
        server.server_close()


@pytest.fixture
def sandbox_url(refund_sandbox: Any) -> str:
    return str(refund_sandbox.url)


@pytest.fixture
def gw(database_url: str, sandbox_settings: dict[str, str], receiver: Receiver,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    for key, value in sandbox_settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("REFUND_GATEWAY_BANKCARD__BACK_URL", receiver.url)
    # Short read timeouts so timeout_after_commit (a 2 s stall) is a real ReadTimeout.
    monkeypatch.setenv("REFUND_GATEWAY_BANKCARD__TIMEOUTS__READ", "1")
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__TIMEOUTS__READ", "1")
    settings = load_settings(database_url=database_url)
    adapters = build_adapters(settings, routes=[Route.BANKCARD, Route.BALANCE])
    gateway = build_gateway(settings, adapters=adapters, sleep=lambda _: None,
                            configure_logs=False)
    receiver.gateway = gateway
    yield gateway
    stop(receiver)      # no notification in flight while the gateway closes
    gateway.close()


def paid(sandbox_url: str, route: Route, fen: int = 10_000) -> Payment:
    """A payment the sandbox knows, as the refund service would describe it."""
    r = requests.post(f"{sandbox_url}/_sandbox/payments",
                      json={"route": route.value, "amount_fen": fen}, timeout=5)
    r.raise_for_status()
    p = r.json()
    return Payment(route=route, merchant_order_no=p["merchant_order_no"],
                   channel_trade_no=p["channel_trade_no"], amount=Money(fen),
                   user_id=p["user_id"])


def fault(sandbox_url: str, route: Route, operation: str, kind: str, count: int = 1,
          **params: Any) -> None:
    r = requests.post(f"{sandbox_url}/_sandbox/faults", json={
        "route": route.value, "operation": operation, "kind": kind, "count": count,
        **params}, timeout=5)
    r.raise_for_status()


def settle(sandbox_url: str, route: Route, mode: str, n: int = 1) -> None:
    r = requests.post(f"{sandbox_url}/_sandbox/config",
                      json={"settle": {route.value: {"mode": mode, "n": n}}}, timeout=5)
    r.raise_for_status()


def truth(sandbox_url: str, route: Route) -> list[dict[str, Any]]:
    r = requests.get(f"{sandbox_url}/_sandbox/refunds", timeout=5)
    r.raise_for_status()
    return [x for x in r.json()["refunds"] if x["route"] == route.value]
