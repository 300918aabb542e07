"""The service against a scripted channel (tests/fakes.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from gateway import (
    AbnormalRefundInstruction,
    AbnormalTarget,
    ChannelStatus,
    ConfigurationError,
    IdempotencyConflict,
    InvalidRequest,
    Money,
    OverRefund,
    RefundGateway,
    RefundStatus,
    Route,
)
from gateway.bootstrap import build_gateway
from gateway.models import EventKind
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel
from tests.helpers import FakeClock, request

S = RefundStatus


def test_refund_is_stored_sent_and_followed(gw: RefundGateway, channel: FakeChannel,
                                            clock: FakeClock) -> None:
    refund = gw.refund(request())
    assert refund.status is S.PROCESSING
    assert refund.channel_refund_no == refund.id and refund.id.isalnum()
    assert refund.expected_arrival is not None
    assert channel.ledger.executed == {refund.channel_refund_no: 1}
    # Not due yet: the resolver leaves it alone.
    assert gw.resolve_due().claimed == 0
    channel.settle = ChannelStatus.SUCCEEDED
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.SUCCEEDED
    clock.advance(seconds=31)
    report = gw.resolve_due()
    assert (report.claimed, report.final) == (1, 1)
    done = gw.get(refund.id)
    assert done.status is S.SUCCEEDED and done.succeeded_at == clock.now
    assert done.next_check_at is None
    kinds = [e.kind for e in gw.events(refund.id)]
    assert kinds[0] is EventKind.REQUESTED and EventKind.STATUS_CHANGED in kinds


def test_same_key_same_request_returns_stored_refund_without_second_call(
        gw: RefundGateway, channel: FakeChannel) -> None:
    first = gw.refund(request())
    again = gw.refund(request())
    assert again.id == first.id
    assert [c for c in channel.ledger.calls if c[0] == "submit"] == [
        ("submit", first.channel_refund_no)]


def test_same_key_different_request_names_the_fields(gw: RefundGateway) -> None:
    gw.refund(request())
    with pytest.raises(IdempotencyConflict) as err:
        gw.refund(request(amount=2_600, reason="other"))
    assert set(err.value.fields) == {"amount_minor", "reason"}


def test_over_refund_refused_and_failed_refunds_release(gw: RefundGateway,
                                                       channel: FakeChannel) -> None:
    gw.refund(request("a", 6_000))
    with pytest.raises(OverRefund) as err:
        gw.refund(request("b", 5_000))
    assert err.value.remaining_minor == 4_000
    channel.submit_script = ["refuse"]
    failed = gw.refund(request("c", 4_000))
    assert failed.status is S.FAILED and failed.failure_code == "NOT_ENOUGH"
    # The failed refund does not count: 4,000 is still refundable.
    assert gw.refund(request("d", 4_000)).status is S.PROCESSING


@pytest.mark.parametrize("amount", [0, -1])
def test_bad_amounts_fail_before_io(gw: RefundGateway, channel: FakeChannel,
                                    amount: int) -> None:
    with pytest.raises(InvalidRequest):
        gw.refund(request(amount=amount))
    assert channel.ledger.calls == []


def test_wrong_currency_and_route_without_settings(gw: RefundGateway) -> None:
    req = request()
    bad = type(req)(req.idempotency_key, req.payment, Money(100, "USD"), req.reason)
    with pytest.raises(InvalidRequest, match="currency"):
        gw.refund(bad)
    with pytest.raises(ConfigurationError, match="alipay"):
        gw.refund(request(route=Route.ALIPAY))


def test_timeout_after_commit_is_unknown_then_resolved_by_query(
        gw: RefundGateway, channel: FakeChannel, clock: FakeClock) -> None:
    channel.submit_script = ["timeout_after_commit"]
    refund = gw.refund(request())
    assert refund.status is S.PROCESSING      # unknown is never failure
    assert refund.next_check_at is not None
    assert refund.next_check_at - clock.now <= timedelta(seconds=60)
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.SUCCEEDED
    clock.advance(seconds=61)
    gw.resolve_due()
    assert gw.get(refund.id).status is S.SUCCEEDED
    assert channel.ledger.executed[refund.channel_refund_no] == 1
    assert ("submit", refund.channel_refund_no) in channel.ledger.calls
    assert channel.ledger.calls.count(("submit", refund.channel_refund_no)) == 1


def test_unavailable_is_retried_inline_then_left_pending(gw: RefundGateway,
                                                        channel: FakeChannel,
                                                        clock: FakeClock) -> None:
    channel.submit_script = ["unavailable", "ok"]
    assert gw.refund(request("a")).status is S.PROCESSING
    channel.submit_script = ["unavailable"] * 3
    stuck = gw.refund(request("b", 100))
    assert stuck.status is S.PENDING and stuck.next_check_at is not None
    assert len(gw.store.attempts(stuck.id)) == 3
    clock.advance(minutes=2)
    gw.resolve_due()   # query -> not found -> resend under the same number
    after = gw.get(stuck.id)
    assert after.status is S.PROCESSING
    assert channel.ledger.executed[stuck.channel_refund_no] == 1


def test_a_try_the_time_limit_ends_is_recorded_once(database_url: str, clock: FakeClock,
                                                   channel: FakeChannel,
                                                   balance: FakeBalance) -> None:
    """The inline resends stop on time before they run out of tries: every try the
    channel saw is one attempt, none twice (the last one used to be kept twice)."""
    gateway = build_gateway(
        load_settings(database_url=database_url,
                      retry={"max_attempts": 5, "max_total_seconds": 0.05}),
        clock=clock, sleep=lambda _: time.sleep(0.06), configure_logs=False,
        adapters={Route.WECHATPAY: channel, Route.BALANCE: balance})
    try:
        channel.submit_script = ["unavailable"] * 5
        stuck = gateway.refund(request("t", 100))
        submits = [c for c in channel.ledger.calls if c[0] == "submit"]
        assert len(submits) == 2                        # the second try is past 0.05 s
        assert stuck.status is S.PENDING
        assert len(gateway.store.attempts(stuck.id)) == len(submits)
    finally:
        gateway.close()


def test_query_not_found_resends_same_number(gw: RefundGateway, channel: FakeChannel,
                                             clock: FakeClock) -> None:
    channel.submit_script = ["unavailable"] * 3
    refund = gw.refund(request())
    clock.advance(minutes=2)
    gw.resolve_due()
    submits = [c for c in channel.ledger.calls if c[0] == "submit"]
    assert {no for _, no in submits} == {refund.channel_refund_no}


def test_resolver_backoff_follows_schedule(gw: RefundGateway, channel: FakeChannel,
                                           clock: FakeClock) -> None:
    refund = gw.refund(request())
    checks = []
    for _ in range(3):
        current = gw.get(refund.id)
        assert current.next_check_at is not None
        clock.now = current.next_check_at
        gw.resolve_due()
        checks.append(gw.get(refund.id).next_check_at - clock.now)  # type: ignore[operator]
    assert checks == [timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=10)]
    assert gw.get(refund.id).status is S.PROCESSING   # age never closes a refund


def test_query_errors_keep_refund_open(gw: RefundGateway, channel: FakeChannel,
                                       clock: FakeClock) -> None:
    refund = gw.refund(request())
    channel.query_script = ["unknown"]
    clock.advance(minutes=1)
    gw.resolve_due()
    after = gw.get(refund.id)
    assert after.status is S.PROCESSING and after.next_check_at is not None
    assert after.next_check_at > clock.now


def test_refusal_is_failed_only_on_explicit_answer(gw: RefundGateway,
                                                  channel: FakeChannel) -> None:
    channel.submit_script = ["bad_signature"]
    refund = gw.refund(request())
    assert refund.status is S.PROCESSING   # unverifiable answer is unknown, not failure


def test_abnormal_rerouted_to_balance_keeps_total(gw: RefundGateway, channel: FakeChannel,
                                                  balance: FakeBalance,
                                                  clock: FakeClock) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(request(amount=10_000))
    assert refund.status is S.ABNORMAL
    with pytest.raises(InvalidRequest):
        gw.reroute(refund.id, Route.WECHATPAY)
    linked = gw.reroute(refund.id, Route.BALANCE, note="card cancelled")
    assert linked.route is Route.BALANCE and linked.rerouted_from == refund.id
    assert linked.status is S.SUCCEEDED
    original = gw.get(refund.id)
    assert original.status is S.REROUTED and original.rerouted_to == linked.id
    assert gw.reroute(refund.id).id == linked.id            # idempotent
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(10_000)
    with pytest.raises(OverRefund):
        gw.refund(request("more", 1))
    assert balance.ledger.executed == {linked.channel_refund_no: 1}


def test_reroute_through_channel_api(gw: RefundGateway, channel: FakeChannel,
                                     clock: FakeClock) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    refund = gw.refund(request())
    after = gw.reroute(refund.id, instruction=AbnormalRefundInstruction(
        AbnormalTarget.MERCHANT_BANK_CARD))
    assert after.status is S.PROCESSING and after.id == refund.id
    assert ("abnormal", refund.channel_refund_no) in channel.ledger.calls
    assert any(e.kind is EventKind.REROUTED for e in gw.events(refund.id))


def test_reroute_only_abnormal(gw: RefundGateway) -> None:
    refund = gw.refund(request())
    with pytest.raises(InvalidRequest, match="only abnormal"):
        gw.reroute(refund.id)


def test_notification_drives_status_and_duplicates_change_nothing(
        gw: RefundGateway, channel: FakeChannel) -> None:
    refund = gw.refund(request())
    body = f"{refund.channel_refund_no}:succeeded:2500".encode()
    ack = gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-nonce": "n1"},
                                 body)
    assert ack.accepted and ack.refund_id == refund.id
    assert gw.get(refund.id).status is S.SUCCEEDED
    events_before = len(gw.events(refund.id))
    again = gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-nonce": "n2"},
                                   body)
    assert again.accepted and gw.get(refund.id).status is S.SUCCEEDED
    assert len(gw.events(refund.id)) == events_before + 1   # recorded, nothing changed


def test_hostile_notifications_change_nothing(gw: RefundGateway) -> None:
    refund = gw.refund(request())
    good = f"{refund.channel_refund_no}:succeeded:2500".encode()
    before = gw.get(refund.id)
    assert not gw.handle_notification("wechatpay", {"x-signature": "forged"}, good).accepted
    wrong_amount = f"{refund.channel_refund_no}:succeeded:9999".encode()
    assert not gw.handle_notification("wechatpay", {"x-signature": "good", "x-nonce": "a"},
                                      wrong_amount).accepted
    assert gw.handle_notification("wechatpay", {"x-signature": "good", "x-nonce": "b"},
                                  b"RFUNKNOWN:succeeded:2500").accepted is False
    assert gw.handle_notification("nosuchroute", {}, good).http_status == 404
    assert gw.get(refund.id) == before
    # A replayed nonce is refused even with a valid body.
    ok = gw.handle_notification("wechatpay", {"x-signature": "good", "x-nonce": "c"}, good)
    assert ok.accepted
    assert not gw.handle_notification("wechatpay", {"x-signature": "good", "x-nonce": "c"},
                                      good).accepted


def test_success_after_a_refusal_is_paid_after_release_not_a_move(
        gw: RefundGateway, channel: FakeChannel) -> None:
    channel.submit_script = ["refuse"]
    refund = gw.refund(request())
    assert refund.status is S.FAILED
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(0)
    body = f"{refund.channel_refund_no}:succeeded:2500".encode()
    gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-nonce": "z"}, body)
    after = gw.get(refund.id)
    assert after.status is S.FAILED and after.paid_after_release_at is not None
    assert [e for e in gw.events(refund.id) if e.kind is EventKind.PAID_AFTER_RELEASE]
    # the money really left: it counts against the payment's cap again
    assert gw.store.sum_counting(Route.WECHATPAY, "ORD1") == Money(2500)


def test_sync_queries_now(gw: RefundGateway, channel: FakeChannel) -> None:
    refund = gw.refund(request())
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.CLOSED
    assert gw.sync(refund.id).status is S.CLOSED
    queries = len([c for c in channel.ledger.calls if c[0] == "query"])
    assert gw.sync(refund.id).status is S.CLOSED        # final: not asked again
    assert len([c for c in channel.ledger.calls if c[0] == "query"]) == queries


def test_sync_of_succeeded_refreshes_evidence_only(gw: RefundGateway,
                                                  channel: FakeChannel) -> None:
    channel.settle = ChannelStatus.SUCCEEDED
    refund = gw.refund(request())
    assert refund.status is S.SUCCEEDED
    after = gw.sync(refund.id)
    assert after.status is S.SUCCEEDED
    assert ("query", refund.channel_refund_no) in channel.ledger.calls


def test_max_refunds_per_payment(gw: RefundGateway) -> None:
    for i in range(50):
        gw.refund(request(f"k{i}", 1))
    with pytest.raises(InvalidRequest, match="at most 50"):
        gw.refund(request("k50", 1))


def test_balance_needs_a_user_before_any_io(gw: RefundGateway, balance: FakeBalance) -> None:
    from gateway import Payment

    req = request(route=Route.BALANCE)
    anonymous = type(req)(req.idempotency_key, Payment(
        Route.BALANCE, "ORDB", "TB", Money(10_000), user_id=None), req.amount, req.reason)
    with pytest.raises(InvalidRequest, match="user_id"):
        gw.refund(anonymous)
    assert balance.ledger.calls == []
    assert gw.store.find_by_key(req.idempotency_key) is None


def test_stale_processing_after_final_is_not_a_conflict(gw: RefundGateway,
                                                        channel: FakeChannel) -> None:
    refund = gw.refund(request())
    body = f"{refund.channel_refund_no}:succeeded:2500".encode()
    gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-nonce": "s1"}, body)
    gw.sync(refund.id)   # the channel's ledger still says PROCESSING
    assert not any(e.kind is EventKind.CONFLICT for e in gw.events(refund.id))
