"""Slow channels and broken bodies, every route through its real adapter and RefundGateway
against the sandbox's ``latency`` and ``truncated_body`` faults (sandbox/server.py), on
every store the suite runs on, with the contract suite's gateway (read timeout 1 s).

A slow answer inside the timeout is an ordinary answer; one slower than the timeout, or
cut halfway (the full Content-Length announced, half the bytes sent), is an unknown
outcome - never FAILED - the refund executed once all the same, and the query settles
it. A cut query answer decides nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.clock import to_beijing
from gateway.errors import OutcomeUnknown, StatementError
from sandbox.server import SandboxServer
from tests.integration.contract import test_adapter_contract as contract
from tests.integration.contract.test_adapter_contract import ROUTES

S = RefundStatus
BEYOND_READ_TIMEOUT_MS = 2_000
# The contract suite's gateway (every route, read timeout 1 s) and its business clock.
gw, clock = contract.gw, contract.clock


@pytest.fixture(params=ROUTES, ids=lambda r: r.value)
def route(request: pytest.FixtureRequest) -> Route:
    return Route(request.param)


@pytest.fixture
def sandbox_url(refund_sandbox: SandboxServer) -> str:
    return refund_sandbox.url


@pytest.fixture
def new_payment(refund_sandbox: SandboxServer, route: Route) -> Callable[[], Payment]:
    return lambda: contract.paid(refund_sandbox, route)


def fault(sandbox_url: str, route: Route, operation: str, kind: str, **params: Any) -> None:
    r = requests.post(f"{sandbox_url}/_sandbox/faults", timeout=5, json={
        "route": route.value, "operation": operation, "kind": kind, **params})
    r.raise_for_status()


def executions(sandbox_url: str, route: Route) -> list[int]:
    rows = requests.get(f"{sandbox_url}/_sandbox/refunds", timeout=5).json()["refunds"]
    return [r["executions"] for r in rows if r["route"] == route.value]


def ask(payment: Payment, key: str = "k-slow") -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=payment, amount=Money(2_500),
                         reason="slow channel")


def settled(gw: RefundGateway, refund_id: str) -> RefundStatus:
    """Ask the channel until the refund is final (at most a few queries)."""
    for _ in range(3):
        status = gw.sync(refund_id).status
        if status.is_final:
            return status
    return gw.get(refund_id).status


def test_a_slow_answer_in_time(gw: RefundGateway, sandbox_url: str, route: Route,
                               new_payment: Callable[[], Payment]) -> None:
    ms = 400
    fault(sandbox_url, route, "refund", "latency", ms=ms, jitter_ms=50)
    started = time.monotonic()
    refund = gw.refund(ask(new_payment()))
    assert time.monotonic() - started >= (ms - 50) / 1000      # it did wait for it
    assert refund.status in (S.PROCESSING, S.SUCCEEDED) and refund.failure_code is None
    assert settled(gw, refund.id) is S.SUCCEEDED
    assert executions(sandbox_url, route) == [1]


def test_an_answer_slower_than_the_read_timeout(
        gw: RefundGateway, sandbox_url: str, route: Route,
        new_payment: Callable[[], Payment]) -> None:
    """``where: after``: executed at once, the answer later than the client waits. The
    gateway records an unknown outcome (PROCESSING; SUCCEEDED when the channel's
    notification got in first), and the adapter alone raises OutcomeUnknown."""
    ms = BEYOND_READ_TIMEOUT_MS
    fault(sandbox_url, route, "refund", "latency", ms=ms, where="after")
    refund = gw.refund(ask(new_payment()))
    assert refund.status in (S.PROCESSING, S.SUCCEEDED) and refund.failure_code is None
    assert executions(sandbox_url, route) == [1]
    assert settled(gw, refund.id) is S.SUCCEEDED
    fault(sandbox_url, route, "refund", "latency", ms=ms, where="after")
    with pytest.raises(OutcomeUnknown):           # the same refund sent again, as slowly
        gw.adapters[route].submit(refund)
    assert executions(sandbox_url, route) == [1]


def test_a_refund_answer_cut_halfway(gw: RefundGateway, sandbox_url: str, route: Route,
                                     new_payment: Callable[[], Payment]) -> None:
    """Unknown, never a failure; the query settles the refund, executed once."""
    for n in (1, 2):
        fault(sandbox_url, route, "refund", "truncated_body")
        refund = gw.refund(ask(new_payment(), f"k-cut-{n}"))
        assert (refund.status, refund.failure_code) == (S.PROCESSING, None)
        assert executions(sandbox_url, route) == [1] * n
        assert settled(gw, refund.id) is S.SUCCEEDED
    assert executions(sandbox_url, route) == [1, 1]


def test_a_query_answer_cut_halfway(gw: RefundGateway, sandbox_url: str, route: Route,
                                    new_payment: Callable[[], Payment]) -> None:
    refund = gw.refund(ask(new_payment()))
    assert settled(gw, refund.id) is S.SUCCEEDED
    fault(sandbox_url, route, "query", "truncated_body")
    with pytest.raises(OutcomeUnknown):
        gw.adapters[route].query(refund)
    assert gw.sync(refund.id).status is S.SUCCEEDED          # and nothing changed
    assert executions(sandbox_url, route) == [1]


# The request that carries a route's statement file: a separate file fetch for Alipay and
# WeChat (their statement answer is a link), the statement answer itself for the others.
FILE_OPERATION = {Route.ALIPAY: "download", Route.WECHATPAY: "download",
                  Route.BANKCARD: "statement", Route.BALANCE: "statement"}


def test_a_statement_file_cut_halfway_is_never_read(
        gw: RefundGateway, sandbox_url: str, route: Route,
        new_payment: Callable[[], Payment]) -> None:
    """Half a ZIP, gzip or CSV must not reach reconciliation as if it were the day."""
    refund = gw.refund(ask(new_payment()))
    assert settled(gw, refund.id) is S.SUCCEEDED
    day = to_beijing(refund.created_at).date()
    adapter = gw.adapters[route]
    whole = adapter.download_statement(day)
    assert whole
    fault(sandbox_url, route, FILE_OPERATION[route], "truncated_body")
    with pytest.raises((OutcomeUnknown, StatementError)):
        adapter.download_statement(day)
    assert adapter.download_statement(day) == whole
