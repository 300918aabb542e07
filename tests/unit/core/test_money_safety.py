"""Issue 15's money-safety behaviours, each against the service on SQLite and PostgreSQL
(a scripted channel, tests/fakes.py). Each test fails on the code before the lifecycle
rewrite (commit 560faf0's parent): a customer paid twice, a refund stuck for ever, or a
driver exception leaking out of the public API."""

from __future__ import annotations

import pytest
import structlog
from sqlalchemy import text

from gateway import (
    AbnormalRefundInstruction,
    AbnormalTarget,
    ChannelStatus,
    InvalidRequest,
    Money,
    OutcomeUnknown,
    Payment,
    RefundGateway,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.errors import RerouteRefused, StoreUnavailable
from gateway.models import EventKind, Refund
from tests.fakes import FakeBalance, FakeChannel
from tests.helpers import FakeClock, request

S = RefundStatus
GOOD = {"x-signature": "good"}


def nothing_due(gw: RefundGateway, clock: FakeClock) -> bool:
    clock.advance(days=2)
    return gw.resolve_due().claimed == 0


def balance_request(key: str, user_id: str | None, order: str = "ORDB") -> RefundRequest:
    return RefundRequest(key, Payment(Route.BALANCE, order, "TB1", Money(10_000),
                                      user_id=user_id), Money(10_000), "goods not delivered")


def notify(gw: RefundGateway, refund: Refund, status: str, nonce: str) -> bool:
    body = f"{refund.channel_refund_no}:{status}:{refund.amount.minor}".encode()
    return gw.handle_notification(Route.WECHATPAY, {**GOOD, "x-nonce": nonce},
                                  body).accepted


def abnormal(gw: RefundGateway, channel: FakeChannel, key: str = "k1",
             amount: int = 2_500) -> Refund:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(request(key, amount))
    assert refund.status is S.ABNORMAL
    return refund


# -- 1. nothing is written for a request the route would refuse -------------------------
def test_balance_user_id_the_wallet_refuses_stores_nothing(
        gw: RefundGateway, balance: FakeBalance, clock: FakeClock) -> None:
    with pytest.raises(InvalidRequest) as err:
        gw.refund(balance_request("kb", "alice@example.com"))
    assert err.value.field == "payment.user_id"
    assert gw.store.find_by_key("kb") is None
    # the corrected retry is not an OverRefund: nothing held the payment's amount
    fixed = gw.refund(balance_request("kb", "alice"))
    assert fixed.status is S.SUCCEEDED
    assert nothing_due(gw, clock)
    assert balance.ledger.executed == {fixed.channel_refund_no: 1}


def test_a_currency_the_route_does_not_carry_stores_nothing(
        gw: RefundGateway, channel: FakeChannel, clock: FakeClock) -> None:
    hkd = RefundRequest("khkd", Payment(Route.WECHATPAY, "ORDH", "TH", Money(10_000, "HKD")),
                        Money(100, "HKD"))
    with pytest.raises(InvalidRequest, match="HKD"):
        gw.refund(hkd)
    assert gw.store.find_by_key("khkd") is None
    assert nothing_due(gw, clock)
    assert channel.ledger.calls == []


def test_a_reason_longer_than_the_channel_counts_stores_nothing(gw: RefundGateway) -> None:
    # FakeChannel keeps the default 256 characters; WeChat's 80 bytes: test_route_rules
    with pytest.raises(InvalidRequest, match="reason"):
        gw.refund(request("klong", reason="x" * 257))
    assert gw.store.find_by_key("klong") is None


def test_reroute_to_a_balance_that_would_refuse_changes_nothing(
        gw: RefundGateway, channel: FakeChannel, balance: FakeBalance) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(RefundRequest("k1", Payment(Route.WECHATPAY, "ORD1", "T1",
                                                   Money(10_000), user_id="a@b.example"),
                                     Money(2_500)))
    assert refund.status is S.ABNORMAL
    with pytest.raises(InvalidRequest, match="user_id"):
        gw.reroute(refund.id, Route.BALANCE)
    after = gw.get(refund.id)
    assert after.status is S.ABNORMAL and after.rerouted_to is None
    assert not [e for e in gw.events(refund.id) if e.kind is EventKind.REROUTED]
    assert balance.ledger.calls == []


# -- 3. a notification is applied once; an old one cannot reopen a refund ---------------
def test_redelivered_abnormal_cannot_reopen_after_the_abnormal_refund_api(
        gw: RefundGateway, channel: FakeChannel, balance: FakeBalance) -> None:
    channel.settle = ChannelStatus.PROCESSING
    refund = gw.refund(request())
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.ABNORMAL
    assert notify(gw, refund, "abnormal", "n1")
    assert gw.get(refund.id).status is S.ABNORMAL
    after = gw.reroute(refund.id, instruction=AbnormalRefundInstruction(
        AbnormalTarget.MERCHANT_BANK_CARD))
    assert after.status is S.PROCESSING
    # WeChat redelivers the same envelope (same event id) with a new nonce
    assert notify(gw, refund, "abnormal", "n2")        # acknowledged ...
    assert gw.get(refund.id).status is S.PROCESSING    # ... and changes nothing
    kinds = [e.kind for e in gw.events(refund.id)]
    assert EventKind.DUPLICATE_NOTIFICATION in kinds
    with pytest.raises(InvalidRequest):                # so no second payout
        gw.reroute(refund.id, Route.BALANCE)
    assert balance.ledger.calls == []


def test_a_refused_notifications_event_id_is_not_burnt(gw: RefundGateway,
                                                       channel: FakeChannel) -> None:
    refund = gw.refund(request())
    wrong = f"{refund.channel_refund_no}:succeeded:1".encode()     # amount mismatch
    assert not gw.handle_notification(Route.WECHATPAY, {**GOOD, "x-nonce": "a"}, wrong)\
        .accepted
    assert notify(gw, refund, "succeeded", "b")        # the genuine one still applies
    assert gw.get(refund.id).status is S.SUCCEEDED


# -- 4. a reroute asks the channel first -------------------------------------------------
@pytest.mark.parametrize("channel_says,after", [
    (ChannelStatus.PROCESSING, S.ABNORMAL), (ChannelStatus.SUCCEEDED, S.SUCCEEDED)])
def test_reroute_the_channel_does_not_confirm_changes_nothing(
        gw: RefundGateway, channel: FakeChannel, balance: FakeBalance,
        channel_says: ChannelStatus, after: RefundStatus) -> None:
    refund = gw.refund(RefundRequest("k1", Payment(Route.WECHATPAY, "ORD1", "T1",
                                                   Money(10_000), user_id="u1"),
                                     Money(2_500)))
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.ABNORMAL
    gw.sync(refund.id)
    assert gw.get(refund.id).status is S.ABNORMAL
    channel.ledger.status[refund.channel_refund_no] = channel_says
    with pytest.raises(RerouteRefused) as err:
        gw.reroute(refund.id, Route.BALANCE)
    assert err.value.channel_status == channel_says.value
    stored = gw.get(refund.id)
    assert stored.status is after and stored.rerouted_to is None
    assert balance.ledger.calls == []


def test_a_bad_instruction_changes_nothing_and_calls_nothing(
        gw: RefundGateway, channel: FakeChannel) -> None:
    refund = abnormal(gw, channel)
    calls = list(channel.ledger.calls)
    with pytest.raises(InvalidRequest, match="bank_type"):
        gw.reroute(refund.id, instruction=AbnormalRefundInstruction(
            AbnormalTarget.USER_BANK_CARD, bank_account="6222021234567890123",
            real_name="张三"))
    assert gw.get(refund.id).status is S.ABNORMAL
    assert not [e for e in gw.events(refund.id) if e.kind is EventKind.REROUTED]
    assert channel.ledger.calls == calls


# -- 5. a failed reroute can be retried --------------------------------------------------
def test_a_failed_linked_refund_is_replaced_and_the_chain_kept(
        gw: RefundGateway, channel: FakeChannel, balance: FakeBalance) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(RefundRequest("k1", Payment(Route.WECHATPAY, "ORD1", "T1",
                                                   Money(10_000), user_id="u1"),
                                     Money(2_500)))
    balance.submit_script = ["refuse"]          # the wallet answers ACCOUNT_FROZEN
    first = gw.reroute(refund.id, Route.BALANCE)
    assert first.status is S.FAILED
    second = gw.reroute(refund.id, Route.BALANCE)
    assert second.id != first.id and second.status is S.SUCCEEDED
    assert gw.reroute(refund.id, Route.BALANCE).id == second.id   # one live link
    original = gw.get(refund.id)
    assert original.status is S.REROUTED and original.rerouted_to == second.id
    assert original.linked_refunds == (first.id, second.id)
    linked_events = [e.data.get("linked_refund") for e in gw.events(refund.id)
                     if e.kind is EventKind.REROUTED]
    assert linked_events == [first.id, second.id]
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(2_500)
    assert sum(balance.ledger.executed.values()) == 1


# -- 7. one payment, one cap -------------------------------------------------------------
def test_the_same_trade_under_another_order_number_is_one_payment(
        gw: RefundGateway, channel: FakeChannel) -> None:
    gw.refund(RefundRequest("k1", Payment(Route.WECHATPAY, "ORD1", "T1", Money(10_000)),
                            Money(10_000)))
    with pytest.raises(InvalidRequest) as err:
        gw.refund(RefundRequest("k2", Payment(Route.WECHATPAY, "ord1", "T1",
                                              Money(10_000)), Money(10_000)))
    assert "'ORD1'" in err.value.message and "'ord1'" in err.value.message
    assert len(channel.ledger.executed) == 1


def test_one_order_may_have_two_trades(gw: RefundGateway) -> None:
    """A duplicate charge (重复扣款): two trades, one order; each is its own payment."""
    for key, trade in (("k1", "T1"), ("k2", "T2")):
        gw.refund(RefundRequest(key, Payment(Route.WECHATPAY, "ORD1", trade,
                                             Money(10_000)), Money(10_000)))
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(20_000)


# -- 8. money that moved after its amount was released -----------------------------------
def test_success_for_a_rerouted_refund_is_paid_twice(
        gw: RefundGateway, channel: FakeChannel, balance: FakeBalance) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(RefundRequest("k1", Payment(Route.WECHATPAY, "ORD1", "T1",
                                                   Money(10_000), user_id="u1"),
                                     Money(10_000)))
    linked = gw.reroute(refund.id, Route.BALANCE)
    assert linked.status is S.SUCCEEDED
    with structlog.testing.capture_logs() as logs:
        assert notify(gw, refund, "succeeded", "late")
    alarms = [entry for entry in logs if entry["event"] == "refund.paid_after_release"]
    assert alarms and alarms[0]["log_level"] == "error"
    assert alarms[0]["linked_refunds"] == [linked.id]
    events = [e for e in gw.events(refund.id) if e.kind is EventKind.PAID_AFTER_RELEASE]
    assert events and events[0].data["linked_refunds"] == [linked.id]
    assert gw.get(refund.id).status is S.REROUTED
    # both left: the cap shows 200.00 of 100.00, and nothing more can be refunded
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(20_000)


# -- 9. store failures are errors a caller can act on -------------------------------------
def test_a_database_error_before_the_call_is_store_unavailable(
        gw: RefundGateway, channel: FakeChannel) -> None:
    with gw.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE refund_events RENAME TO refund_events_gone"))
    with pytest.raises(StoreUnavailable):
        gw.refund(request())
    assert channel.ledger.calls == []


def test_a_database_error_after_the_call_is_outcome_unknown(
        gw: RefundGateway, channel: FakeChannel, clock: FakeClock) -> None:
    engine = gw.store.engine
    real_submit = channel.submit

    def submit_then_lose_the_table(refund: Refund) -> object:
        answer = real_submit(refund)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE attempts RENAME TO attempts_gone"))
        return answer

    channel.submit = submit_then_lose_the_table  # type: ignore[method-assign]
    with pytest.raises(OutcomeUnknown) as err:
        gw.refund(request())
    refund_id = err.value.refund_id
    assert refund_id is not None
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE attempts_gone RENAME TO attempts"))
    channel.submit = real_submit  # type: ignore[method-assign]
    stored = gw.get(refund_id)
    assert stored.status is S.PENDING               # never "failed"
    clock.advance(minutes=2)
    gw.resolve_due()
    assert gw.get(refund_id).status is S.PROCESSING
    assert len(channel.ledger.executed) == 1        # found, not refunded again


def test_the_cli_exits_3_for_an_outcome_unknown_never_1() -> None:
    from gateway.cli import EXIT_UNKNOWN, handle_errors

    @handle_errors
    def refund_command() -> None:
        raise OutcomeUnknown("db lost after the call", channel="store", operation="submit",
                             refund_id="RF1")

    with pytest.raises(SystemExit) as exited:
        refund_command()
    assert exited.value.code == EXIT_UNKNOWN == 3


def test_a_route_that_sends_no_notifications_takes_none(gw: RefundGateway,
                                                        balance: FakeBalance) -> None:
    ack = gw.handle_notification(Route.BALANCE, GOOD, b"x:succeeded:1")
    assert ack.http_status == 404 and not ack.accepted


def test_a_notification_body_may_be_text(gw: RefundGateway, channel: FakeChannel) -> None:
    refund = gw.refund(request())
    body = f"{refund.channel_refund_no}:succeeded:2500"
    assert gw.handle_notification("wechatpay", {**GOOD, "x-nonce": "t"}, body).accepted
    with pytest.raises(InvalidRequest, match="body"):
        gw.handle_notification("wechatpay", GOOD, 12345)  # type: ignore[arg-type]
