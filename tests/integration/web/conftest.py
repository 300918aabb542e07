"""Fixtures for the web app and the framework examples: a gateway on every route of the
project sandbox, and the sandbox's genuine signed notifications to hand to it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import Money, Payment, RefundGateway, RefundRequest, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from sandbox.server import SandboxServer
from sandbox.state import Notification
from tests.helpers import FakeClock

NOTIFYING = (Route.ALIPAY, Route.WECHATPAY, Route.BANKCARD)


class Sandbox:
    """The sandbox's control API, as the tests here use it."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server.url + path, data=data,  # noqa: S310
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local sandbox
            return json.loads(resp.read() or b"null")

    def payment(self, route: Route, fen: int = 10_000) -> Payment:
        doc = self.call("POST", "/_sandbox/payments", {"route": route.value,
                                                       "amount_fen": fen})
        return Payment(route, doc["merchant_order_no"], doc["channel_trade_no"], Money(fen),
                       doc.get("user_id"))

    def fault(self, route: Route, operation: str, kind: str, count: int = 1,
              **params: Any) -> None:
        self.call("POST", "/_sandbox/faults", {"route": route.value, "operation": operation,
                                               "kind": kind, "count": count, **params})

    def notifications(self, route: Route, channel_refund_no: str,
                      timeout: float = 8.0) -> list[Notification]:
        """The notifications the channel sent for one refund (signed as the channel
        signs them), waiting for the channel to settle and send them."""
        deadline = time.monotonic() + timeout
        found: list[Notification] = []
        while time.monotonic() < deadline:
            found += [n for n in self.server.pending_notifications(route.value)
                      if n.channel_refund_no == channel_refund_no]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {route.value} notification for {channel_refund_no}")


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> Sandbox:
    return Sandbox(refund_sandbox)


@pytest.fixture
def clock() -> FakeClock:
    # notifications carry wall-clock timestamps: the business clock starts at now
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


def sandbox_gateway(database_url: str, settings: Mapping[str, str], clock: FakeClock,
                    monkeypatch: pytest.MonkeyPatch) -> RefundGateway:
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    for route in Route:   # a stalled answer times out in 2 s, not the default 10
        monkeypatch.setenv(f"REFUND_GATEWAY_{route.value.upper()}__TIMEOUTS__READ", "2")
    return build_gateway(load_settings(database_url=database_url), clock=clock,
                         sleep=lambda _: None, configure_logs=False)


@pytest.fixture
def gw(database_url: str, sandbox_settings: Mapping[str, str], clock: FakeClock,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    gateway = sandbox_gateway(database_url, sandbox_settings, clock, monkeypatch)
    yield gateway
    gateway.close()


def ask(payment: Payment, fen: int = 2_500, key: str | None = None) -> RefundRequest:
    return RefundRequest(key or f"k-{payment.merchant_order_no}", payment, Money(fen),
                         "web test")
