"""Bank card (UnionPay 5.1.0) and balance through RefundGateway against the sandbox over
HTTP, on SQLite and PostgreSQL: every fault kind, back notifications, reroute."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from gateway import Money, OverRefund, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.clock import BEIJING, to_beijing
from reconciliation.statements import LineKind, Source, read_lines
from tests.integration.bankcard.conftest import Receiver, fault, paid, settle, truth

S = RefundStatus
BANK = Route.BANKCARD


def ask(gw: RefundGateway, sandbox_url: str, fen: int = 2_500, key: str = "k1",
        paid_fen: int = 10_000, route: Route = BANK) -> tuple[RefundRequest, str]:
    payment = paid(sandbox_url, route, paid_fen)
    return RefundRequest(idempotency_key=key, payment=payment, amount=Money(fen),
                         reason="test"), payment.merchant_order_no


def wait_for(predicate: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():   # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_accepted_then_query_succeeds(gw: RefundGateway, sandbox_url: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    req, _ = ask(gw, sandbox_url)
    refund = gw.refund(req)
    assert refund.status is S.PROCESSING and refund.channel_refund_id
    done = gw.sync(refund.id)
    assert done.status is S.SUCCEEDED
    assert done.bank_ack["queryId"] == refund.channel_refund_id
    assert {"settleDate", "traceNo"} <= set(done.bank_ack)
    assert done.expected_arrival is not None
    [row] = truth(sandbox_url, BANK)
    assert (row["channel_refund_no"], row["executions"], row["status"]) == (
        refund.channel_refund_no, 1, "SUCCESS")


def test_processing_05_then_success(gw: RefundGateway, sandbox_url: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 2)
    refund = gw.refund(ask(gw, sandbox_url)[0])
    assert gw.sync(refund.id).status is S.PROCESSING      # origRespCode 05
    assert gw.sync(refund.id).status is S.SUCCEEDED


def test_notification_overtaking_a_stalled_answer_wins(gw: RefundGateway,
                                                       sandbox_url: str) -> None:
    fault(sandbox_url, BANK, "refund", "timeout_after_commit", stall_seconds=2)
    refund = gw.refund(ask(gw, sandbox_url)[0])   # notified while the answer stalls
    assert refund.status is S.SUCCEEDED
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1]


def test_back_notification_verified_and_applied(gw: RefundGateway, sandbox_url: str,
                                                receiver: Receiver) -> None:
    refund = gw.refund(ask(gw, sandbox_url)[0])   # settles at once: a notification follows
    assert wait_for(lambda: gw.get(refund.id).status is S.SUCCEEDED)
    # The answer already made it SUCCEEDED: the notification is the sandbox's answer to
    # follow, and its 200 is recorded once the receiver replied.
    assert wait_for(lambda: 200 in receiver.answers)
    assert gw.get(refund.id).bank_ack.get("queryId") == refund.channel_refund_id


def test_forged_back_notification_is_refused(gw: RefundGateway, sandbox_url: str,
                                             receiver: Receiver) -> None:
    fault(sandbox_url, BANK, "notify", "bad_signature")
    refund = gw.refund(ask(gw, sandbox_url)[0])
    assert wait_for(lambda: 400 in receiver.answers)
    assert gw.get(refund.id).status is S.PROCESSING
    assert gw.sync(refund.id).status is S.SUCCEEDED      # the query still tells the truth


def test_abnormal_then_rerouted_to_balance_keeps_total(gw: RefundGateway,
                                                       sandbox_url: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    fault(sandbox_url, BANK, "refund", "abnormal")
    req, order = ask(gw, sandbox_url, fen=6_000)
    refund = gw.refund(req)
    abnormal = gw.sync(refund.id)
    assert (abnormal.status, abnormal.failure_code) == (S.ABNORMAL, "63")
    linked = gw.reroute(refund.id, Route.BALANCE)
    assert (linked.route, linked.status, linked.amount) == (Route.BALANCE, S.SUCCEEDED,
                                                            Money(6_000))
    assert gw.get(refund.id).status is S.REROUTED
    with pytest.raises(OverRefund) as err:
        gw.refund(RefundRequest("k2", req.payment, Money(4_001), "more"))
    assert err.value.remaining_minor == 4_000
    total = gw.store.sum_counting(BANK, order)
    assert total is not None and total.minor <= 10_000
    [credit] = truth(sandbox_url, Route.BALANCE)
    assert (credit["channel_refund_no"], credit["amount_fen"]) == (linked.channel_refund_no,
                                                                   6_000)


@pytest.mark.parametrize("kind,params", [
    ("bad_signature", {}),
    ("timeout_after_commit", {"stall_seconds": 2}),
    ("drop_before_commit", {}),
    ("http_500", {}),
])
def test_unknown_outcomes_are_resolved_by_query_with_one_execution(
        gw: RefundGateway, sandbox_url: str, kind: str, params: dict[str, object]) -> None:
    # Settle on the first query, so no back notification overtakes the stalled answer
    # (with immediate settling it does, and the refund is SUCCEEDED before the timeout).
    settle(sandbox_url, BANK, "after_queries", 1)
    fault(sandbox_url, BANK, "refund", kind, **params)
    refund = gw.refund(ask(gw, sandbox_url)[0])
    assert refund.status is S.PROCESSING and refund.failure_code is None
    after = gw.sync(refund.id)              # query; 34 -> resend under the same orderId
    if after.status is not S.SUCCEEDED:
        after = gw.sync(refund.id)
    assert after.status is S.SUCCEEDED
    rows = truth(sandbox_url, BANK)
    assert [(r["channel_refund_no"], r["executions"]) for r in rows] == [
        (refund.channel_refund_no, 1)]


def test_rate_limited_is_retried_inline(gw: RefundGateway, sandbox_url: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    fault(sandbox_url, BANK, "refund", "rate_limited")
    refund = gw.refund(ask(gw, sandbox_url)[0])    # 06: nothing executed; resent at once
    assert refund.status is S.PROCESSING
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1]


def test_refusal_is_failed(gw: RefundGateway, sandbox_url: str) -> None:
    req, _ = ask(gw, sandbox_url)
    unknown = RefundRequest("k9", type(req.payment)(
        route=BANK, merchant_order_no=req.payment.merchant_order_no,
        channel_trade_no="20990101000000000000000", amount=req.payment.amount,
        user_id=req.payment.user_id), Money(100), "x")
    refund = gw.refund(unknown)
    assert (refund.status, refund.failure_code) == (S.FAILED, "35")


def test_settlement_file_lists_the_refunds(gw: RefundGateway, sandbox_url: str) -> None:
    """Refunds made here appear in the file UnionPay's file transfer hands out (txnType 76,
    fileContent decoded as the SDK does, ZM records read by byte position), with their
    amounts and numbers; one still processing is not cleared, so not listed."""
    first = gw.sync(gw.refund(ask(gw, sandbox_url, fen=2_500, key="k1")[0]).id)
    second = gw.sync(gw.refund(ask(gw, sandbox_url, fen=1, key="k2")[0]).id)
    settle(sandbox_url, BANK, "after_queries", 5)
    open_ = gw.refund(ask(gw, sandbox_url, fen=300, key="k3")[0])
    assert (first.status, second.status, open_.status) == (S.SUCCEEDED, S.SUCCEEDED,
                                                           S.PROCESSING)
    today = datetime.now(BEIJING).date()
    data = gw.adapters[BANK].download_statement(today)
    assert data.startswith(b"PK\x03\x04")
    lines = list(read_lines(Source.of(data, f"bankcard-{today}"), route=BANK))
    refunds = {ln.channel_refund_no: ln for ln in lines if ln.kind is LineKind.REFUND}
    assert set(refunds) == {first.channel_refund_no, second.channel_refund_no}
    for refund in (first, second):
        line = refunds[refund.channel_refund_no]
        assert line.amount == refund.amount
        assert line.channel_refund_id == refund.channel_refund_id
        assert line.channel_trade_no == refund.payment.channel_trade_no
        assert line.merchant_order_no == refund.payment.merchant_order_no
        assert line.time is not None and to_beijing(line.time).date() == today
    payments = [ln for ln in lines if ln.kind is LineKind.PAYMENT]
    assert {ln.channel_trade_no for ln in payments} >= {
        r.payment.channel_trade_no for r in (first, second, open_)}
