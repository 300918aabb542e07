"""One list of scenarios, run against every route's adapter through ``RefundGateway``,
over HTTP against the sandbox, on SQLite and PostgreSQL.

Scenarios: succeeds; refused (final); rate-limited then succeeds; timeout after commit
then resolved by query with exactly one refund in the sandbox's truth; abnormal then
rerouted; duplicate notification; forged notification. Where a route's channel has no
such behaviour (balance sends no notifications; an Alipay "abnormal" bank leg ends in
the buyer's Alipay balance, which is a success) the scenario asserts that instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.settings import load_settings
from sandbox.server import SandboxServer
from tests.helpers import FakeClock

ROUTES = [Route.ALIPAY, Route.WECHATPAY, Route.BANKCARD, Route.BALANCE]
S = RefundStatus


@pytest.fixture
def clock() -> FakeClock:
    from gateway.clock import utcnow

    return FakeClock(utcnow())


@pytest.fixture
def gw(refund_sandbox: SandboxServer, database_url: str, tmp_path: Path,
       clock: FakeClock) -> Iterator[RefundGateway]:
    env = refund_sandbox.write_env_file(tmp_path / "sandbox.env")
    overrides: dict[str, Any] = {"database_url": database_url}
    settings = load_settings(env, **overrides)
    for route in ROUTES:   # short read timeouts so timeout_after_commit is quick
        sub = settings.route_settings(route.value)
        assert sub is not None
        sub.timeouts.read = 1.0   # type: ignore[attr-defined]
    gateway = build_gateway(settings, clock=clock, sleep=lambda _: None,
                            adapters=build_adapters(settings, clock), configure_logs=False)
    yield gateway
    gateway.close()


def paid(sandbox: SandboxServer, route: Route, amount: int = 10_000,
         funding: str | None = None) -> Payment:
    p = sandbox.state.add_payment(route.value, amount, funding=funding)
    return Payment(route=route, merchant_order_no=p.merchant_order_no,
                   channel_trade_no=p.channel_trade_no, amount=Money(amount),
                   user_id=p.user_id)


def fault(sandbox: SandboxServer, route: Route, operation: str, kind: str, **params: Any
          ) -> None:
    from sandbox.state import Fault

    sandbox.state.add_fault(Fault(route.value, operation, kind, 1, params))


def drive(gw: RefundGateway, clock: FakeClock, refund_id: str, cycles: int = 8) -> Any:
    for _ in range(cycles):
        refund = gw.get(refund_id)
        if refund.status.is_final or refund.status is S.ABNORMAL:
            return refund
        clock.advance(hours=1)
        gw.resolve_due()
    return gw.get(refund_id)


def executions(sandbox: SandboxServer, refund_no: str) -> int:
    return sum(r["executions"] for r in sandbox.state.truth()
               if r["channel_refund_no"] == refund_no)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.value)
def test_succeeds(route: Route, gw: RefundGateway, refund_sandbox: SandboxServer,
                  clock: FakeClock) -> None:
    refund = gw.refund(RefundRequest("k-ok", paid(refund_sandbox, route), Money(2_500)))
    done = drive(gw, clock, refund.id)
    assert done.status is S.SUCCEEDED
    assert executions(refund_sandbox, refund.channel_refund_no) == 1


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.value)
def test_refused_is_final(route: Route, gw: RefundGateway, refund_sandbox: SandboxServer,
                          clock: FakeClock) -> None:
    payment = paid(refund_sandbox, route)
    if route is Route.BALANCE:
        fault(refund_sandbox, route, "refund", "abnormal")     # wallet frozen: refused
    else:
        payment = Payment(route, payment.merchant_order_no + "X", "9" * 20,
                          payment.amount, payment.user_id)      # unknown to the channel
    refund = drive(gw, clock, gw.refund(RefundRequest("k-no", payment, Money(100))).id)
    assert refund.status is S.FAILED and refund.failure_code
    assert executions(refund_sandbox, refund.channel_refund_no) == 0


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.value)
def test_rate_limited_then_succeeds(route: Route, gw: RefundGateway,
                                    refund_sandbox: SandboxServer, clock: FakeClock) -> None:
    fault(refund_sandbox, route, "refund", "rate_limited")
    refund = gw.refund(RefundRequest("k-429", paid(refund_sandbox, route), Money(700)))
    assert refund.status is not S.FAILED          # unknown is never failure
    done = drive(gw, clock, refund.id)
    assert done.status is S.SUCCEEDED
    assert executions(refund_sandbox, refund.channel_refund_no) == 1


@pytest.mark.parametrize("kind", ["timeout_after_commit", "drop_before_commit", "http_500",
                                  "bad_signature"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.value)
def test_transport_faults_converge_once(route: Route, kind: str, gw: RefundGateway,
                                        refund_sandbox: SandboxServer,
                                        clock: FakeClock) -> None:
    fault(refund_sandbox, route, "refund", kind, stall_seconds=1.5)
    refund = gw.refund(RefundRequest(f"k-{kind}", paid(refund_sandbox, route), Money(900)))
    assert refund.status in (S.PENDING, S.PROCESSING, S.SUCCEEDED)
    done = drive(gw, clock, refund.id)
    assert done.status is S.SUCCEEDED
    assert executions(refund_sandbox, refund.channel_refund_no) == 1
    assert len(refund_sandbox.state.truth()) == 1


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.value)
def test_abnormal_then_rerouted(route: Route, gw: RefundGateway,
                                refund_sandbox: SandboxServer, clock: FakeClock) -> None:
    payment = paid(refund_sandbox, route,
                   funding="bankcard" if route is Route.ALIPAY else None)
    fault(refund_sandbox, route, "refund", "abnormal")
    refund = drive(gw, clock, gw.refund(RefundRequest("k-ab", payment, Money(6_000))).id)
    if route is Route.ALIPAY:      # dback F: the money is in the buyer's Alipay balance
        assert refund.status is S.SUCCEEDED
        for _ in range(3):         # the bank leg moves P -> F over queries
            refund = gw.sync(refund.id)
        assert refund.status is S.SUCCEEDED and refund.bank_ack.get("dback_status") == "F"
        return
    if route is Route.BALANCE:     # a frozen wallet refuses; nothing to reroute
        assert refund.status is S.FAILED
        return
    assert refund.status is S.ABNORMAL
    linked = drive(gw, clock, gw.reroute(refund.id, Route.BALANCE, note="card cancelled").id)
    assert linked.status is S.SUCCEEDED and linked.rerouted_from == refund.id
    assert gw.get(refund.id).status is S.REROUTED
    assert gw.store.sum_counting(route, payment.merchant_order_no) == Money(6_000)


NOTIFYING = [Route.ALIPAY, Route.WECHATPAY, Route.BANKCARD]


def _settled_with_notification(gw: RefundGateway, sandbox: SandboxServer, route: Route
                               ) -> tuple[Any, list[Any]]:
    refund = gw.refund(RefundRequest("k-n", paid(sandbox, route), Money(1_200)))
    notes = [n for n in sandbox.pending_notifications(route.value)
             if n.channel_refund_no == refund.channel_refund_no]
    if not notes:            # channels that settle on the first query notify then
        gw.sync(refund.id)
        notes = [n for n in sandbox.pending_notifications(route.value)
                 if n.channel_refund_no == refund.channel_refund_no]
    return refund, notes


@pytest.mark.parametrize("route", NOTIFYING, ids=lambda r: r.value)
def test_duplicate_notification_changes_nothing(route: Route, gw: RefundGateway,
                                                refund_sandbox: SandboxServer) -> None:
    fault(refund_sandbox, route, "notify", "duplicate_notification")
    refund, notes = _settled_with_notification(gw, refund_sandbox, route)
    assert len(notes) >= 2
    acks = [gw.handle_notification(route, n.headers, n.body) for n in notes]
    assert acks[0].accepted
    after = gw.get(refund.id)
    assert after.status is S.SUCCEEDED
    assert executions(refund_sandbox, refund.channel_refund_no) == 1


@pytest.mark.parametrize("route", NOTIFYING, ids=lambda r: r.value)
def test_forged_notification_rejected(route: Route, gw: RefundGateway,
                                      refund_sandbox: SandboxServer) -> None:
    fault(refund_sandbox, route, "notify", "bad_signature")
    refund, notes = _settled_with_notification(gw, refund_sandbox, route)
    before = gw.store.get(refund.id)
    forged = notes[0]
    ack = gw.handle_notification(route, forged.headers, forged.body)
    assert not ack.accepted
    assert gw.store.get(refund.id) == before


def test_notifications_drive_status_without_polling(gw: RefundGateway,
                                                     refund_sandbox: SandboxServer,
                                                     clock: FakeClock) -> None:
    refund = gw.refund(RefundRequest("k-w", paid(refund_sandbox, Route.WECHATPAY),
                                     Money(1_000)))
    assert refund.status is S.PROCESSING
    notes = refund_sandbox.pending_notifications("wechatpay")
    assert notes, "WeChat sends REFUND.SUCCESS once it settles"
    for n in notes:
        gw.handle_notification(Route.WECHATPAY, n.headers, n.body)
    assert gw.get(refund.id).status is S.SUCCEEDED
    assert clock.now - refund.created_at < timedelta(seconds=1)
