"""``gateway.lifecycle`` from tables: (current refund, evidence) -> the change. No database.

Each row names the rule it pins; the paths that paid customers twice (issue 15) are rows
here: a stale ABNORMAL notification after an abnormal-refund application, a success for a
refund whose amount was released, a reroute the channel does not confirm.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway import lifecycle
from gateway.lifecycle import KEEP, Failure, InvalidTransition, Source
from gateway.models import (
    ChannelResult,
    ChannelStatus,
    EventKind,
    Payment,
    Refund,
    RefundStatus,
    Route,
)
from gateway.money import Money
from gateway.ports import Capabilities

S, C = RefundStatus, ChannelStatus
NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
CAPS = Capabilities(idempotent_submit=True, refund_query=True, notifications=True,
                    statements=True, partial_refunds=True, max_refunds=50,
                    refund_window=None, arrival_working_days=(0, 3),
                    query_schedule=(timedelta(seconds=30), timedelta(minutes=5)))


def refund(status: RefundStatus, **kw: object) -> Refund:
    base = Refund(
        id="RF1", idempotency_key="k1", route=Route.WECHATPAY,
        payment=Payment(Route.WECHATPAY, "ORD1", "T1", Money(10_000)),
        amount=Money(2_500), reason="", status=status, channel_refund_no="RF1",
        created_at=NOW - timedelta(hours=1), updated_at=NOW - timedelta(hours=1))
    return replace(base, **kw)  # type: ignore[arg-type]


def answer(status: ChannelStatus, **kw: object) -> ChannelResult:
    return replace(ChannelResult(status, "RF1", amount=Money(2_500)), **kw)  # type: ignore[arg-type]


# (current status, channel says, source, status after (None: unchanged), durable)
ANSWERS = [
    (S.PENDING, C.PROCESSING, Source.SUBMIT, S.PROCESSING, False),
    (S.PENDING, C.SUCCEEDED, Source.SUBMIT, S.SUCCEEDED, True),
    (S.PENDING, C.FAILED, Source.SUBMIT, S.FAILED, True),
    (S.PENDING, C.NOT_FOUND, Source.QUERY, None, False),      # never failed: resend
    (S.PROCESSING, C.PROCESSING, Source.QUERY, None, False),
    (S.PROCESSING, C.SUCCEEDED, Source.QUERY, S.SUCCEEDED, True),
    (S.PROCESSING, C.CLOSED, Source.QUERY, S.CLOSED, True),
    (S.PROCESSING, C.ABNORMAL, Source.QUERY, S.ABNORMAL, True),
    (S.PROCESSING, C.NOT_FOUND, Source.QUERY, None, False),
    (S.ABNORMAL, C.PROCESSING, Source.QUERY, None, False),    # does not pull it back
    (S.ABNORMAL, C.FAILED, Source.QUERY, None, False),        # waits for reroute()
    (S.ABNORMAL, C.SUCCEEDED, Source.QUERY, S.SUCCEEDED, True),
    (S.SUCCEEDED, C.PROCESSING, Source.QUERY, None, False),   # stale: no conflict
    (S.SUCCEEDED, C.FAILED, Source.QUERY, None, False),       # conflict event only
    (S.FAILED, C.FAILED, Source.QUERY, None, False),
    (S.FAILED, C.NOT_FOUND, Source.QUERY, None, False),
]


@pytest.mark.parametrize("status,channel,source,after,durable", ANSWERS)
def test_answers(status: RefundStatus, channel: ChannelStatus, source: Source,
                 after: RefundStatus | None, durable: bool) -> None:
    change = lifecycle.on_answer(refund(status), answer(channel), source=source, now=NOW,
                                 caps=CAPS)
    assert change.status is after or (after is None and change.status in (None, status))
    assert change.durable is durable
    if after is not None:
        lifecycle.check(status, after)   # every decided edge is in the machine


def test_not_found_is_resent_at_once_and_hidden_from_peers_meanwhile() -> None:
    change = lifecycle.on_answer(refund(S.PROCESSING), answer(C.NOT_FOUND),
                                 source=Source.QUERY, now=NOW, caps=CAPS)
    # The check that asked resends at once; another resolver must not claim the refund
    # while that resend is in flight (a process that dies mid-resend: due after the grace).
    assert change.update.next_check_at == NOW + lifecycle.SUBMIT_GRACE
    assert change.status is None


def test_processing_backs_off_by_the_schedule() -> None:
    change = lifecycle.on_answer(refund(S.PROCESSING, check_count=1), answer(C.PROCESSING),
                                 source=Source.QUERY, now=NOW, caps=CAPS)
    assert change.update.next_check_at == NOW + timedelta(minutes=5)
    assert change.update.check_count == 2


def test_success_sets_time_and_arrival_and_clears_failure() -> None:
    at = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    change = lifecycle.on_answer(refund(S.PROCESSING, failure_code="X"),
                                 answer(C.SUCCEEDED, succeeded_at=at),
                                 source=Source.QUERY, now=NOW, caps=CAPS)
    assert change.update.succeeded_at == at
    assert change.update.failure_code is None and change.update.next_check_at is None
    assert change.update.expected_arrival is not KEEP


def test_a_contradicting_final_answer_is_a_conflict_note() -> None:
    change = lifecycle.on_answer(refund(S.SUCCEEDED), answer(C.FAILED),
                                 source=Source.QUERY, now=NOW, caps=CAPS)
    assert [n.kind for n in change.notes] == [EventKind.CONFLICT]
    assert change.status is None


def test_another_amount_is_a_conflict_note() -> None:
    change = lifecycle.on_answer(refund(S.PROCESSING), answer(C.SUCCEEDED,
                                                              amount=Money(9)),
                                 source=Source.QUERY, now=NOW, caps=CAPS)
    assert EventKind.CONFLICT in [n.kind for n in change.notes]


# -- paid after release (issue 15 behaviour 8) -----------------------------------------
@pytest.mark.parametrize("released", [S.FAILED, S.CLOSED, S.REROUTED])
@pytest.mark.parametrize("source", [Source.QUERY, Source.NOTIFICATION])
def test_success_after_release_raises_the_alarm(released: RefundStatus,
                                                source: Source) -> None:
    current = refund(released, rerouted_to="RF2" if released is S.REROUTED else None,
                     linked_refunds=("RF2",) if released is S.REROUTED else ())
    change = lifecycle.on_answer(current, answer(C.SUCCEEDED), source=source, now=NOW,
                                 caps=CAPS)
    assert change.alarm is not None and change.alarm.released_as is released
    assert change.update.paid_after_release_at == NOW      # counts against the payment
    assert change.durable
    assert [n.kind for n in change.notes] == [EventKind.PAID_AFTER_RELEASE]
    if released is S.REROUTED:
        assert change.alarm.linked_refunds == ("RF2",)
    assert change.status is None   # the record of what happened stays as it was


def test_paid_after_release_alarms_once() -> None:
    current = refund(S.FAILED, paid_after_release_at=NOW)
    change = lifecycle.on_answer(current, answer(C.SUCCEEDED), source=Source.QUERY,
                                 now=NOW, caps=CAPS)
    assert change.alarm is None and change.update.paid_after_release_at is KEEP


def test_released_refund_counts_again_once_paid() -> None:
    assert not refund(S.FAILED).counts_against_payment
    assert refund(S.FAILED, paid_after_release_at=NOW).counts_against_payment


# -- notifications (issue 15 behaviour 3) ----------------------------------------------
APPLIED = NOW - timedelta(minutes=10)


@pytest.mark.parametrize("notified_at,reopens", [
    (None, False),                                # no time: cannot postdate
    (APPLIED - timedelta(hours=1), False),        # the old REFUND.ABNORMAL redelivered
    (APPLIED, False),                             # not after the application
    (APPLIED + timedelta(minutes=1), True),       # news after the application
])
def test_abnormal_notification_after_an_application(notified_at: datetime | None,
                                                    reopens: bool) -> None:
    current = refund(S.PROCESSING, abnormal_applied_at=APPLIED)
    change = lifecycle.on_notification(current, answer(C.ABNORMAL, occurred_at=notified_at),
                                       now=NOW, caps=CAPS)
    assert (change.status is S.ABNORMAL) is reopens
    kinds = [n.kind for n in change.notes]
    assert kinds[0] is EventKind.NOTIFICATION
    assert (EventKind.IGNORED in kinds) is not reopens


def test_a_query_after_the_application_is_current_evidence() -> None:
    current = refund(S.PROCESSING, abnormal_applied_at=APPLIED)
    change = lifecycle.on_answer(current, answer(C.ABNORMAL), source=Source.QUERY,
                                 now=NOW, caps=CAPS)
    assert change.status is S.ABNORMAL


def test_duplicate_notification_is_only_a_note() -> None:
    change = lifecycle.duplicate_notification(answer(C.ABNORMAL, event_id="EV1"))
    assert change.status is None and not change.update.written()
    assert [n.kind for n in change.notes] == [EventKind.DUPLICATE_NOTIFICATION]


# -- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("status,failure,after,delay", [
    (S.PENDING, Failure.UNKNOWN, S.PROCESSING, timedelta(seconds=20)),
    (S.PENDING, Failure.UNAVAILABLE, None, timedelta(seconds=30)),
    (S.PENDING, Failure.AUTH, None, lifecycle.AUTH_RECHECK),
    (S.PROCESSING, Failure.UNKNOWN, None, timedelta(seconds=20)),
])
def test_errors_keep_the_refund_open(status: RefundStatus, failure: Failure,
                                     after: RefundStatus | None, delay: timedelta) -> None:
    change = lifecycle.on_error(refund(status), failure, now=NOW, caps=CAPS,
                                first_check=timedelta(seconds=20))
    assert change.status is after
    assert change.update.next_check_at == NOW + delay
    assert change.status not in (S.FAILED, S.CLOSED)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED, S.ABNORMAL, S.REROUTED])
def test_errors_do_not_touch_final_or_abnormal(status: RefundStatus) -> None:
    assert lifecycle.on_error(refund(status), Failure.UNKNOWN, now=NOW, caps=CAPS,
                              first_check=timedelta(seconds=20)).is_empty


# -- reroutes (issue 15 behaviours 4 and 5) --------------------------------------------
@pytest.mark.parametrize("status,confirmed,allowed", [
    (S.ABNORMAL, C.ABNORMAL, True),
    (S.ABNORMAL, C.FAILED, True),
    (S.ABNORMAL, C.CLOSED, True),
    (S.ABNORMAL, C.PROCESSING, False),   # may still pay out on the original route
    (S.ABNORMAL, C.SUCCEEDED, False),
    (S.ABNORMAL, C.NOT_FOUND, False),
    (S.ABNORMAL, None, False),           # the channel could not be asked
    (S.PROCESSING, C.ABNORMAL, False),
    (S.FAILED, C.FAILED, False),
    (S.REROUTED, None, True),            # its linked refund failed: a new one
])
def test_reroute_needs_the_channels_confirmation(status: RefundStatus,
                                                 confirmed: ChannelStatus | None,
                                                 allowed: bool) -> None:
    assert (lifecycle.reroute_refusal(refund(status), confirmed) is None) is allowed


def test_reroute_keeps_the_chain() -> None:
    first = lifecycle.reroute(refund(S.ABNORMAL), linked_id="RF2", route="balance",
                              note="", confirmed=C.ABNORMAL)
    assert first.status is S.REROUTED and first.update.linked_refunds == ("RF2",)
    again = lifecycle.reroute(refund(S.REROUTED, rerouted_to="RF2", linked_refunds=("RF2",)),
                              linked_id="RF3", route="balance", note="", confirmed=None)
    assert again.update.linked_refunds == ("RF2", "RF3")
    assert again.update.rerouted_to == "RF3"
    lifecycle.check(S.REROUTED, S.REROUTED)


def test_abnormal_application_remembers_when() -> None:
    change = lifecycle.abnormal_application(refund(S.ABNORMAL), target="MERCHANT_BANK_CARD",
                                            note="", now=NOW, confirmed=C.ABNORMAL)
    assert change.status is S.PROCESSING
    assert change.update.abnormal_applied_at == NOW


# -- the machine ------------------------------------------------------------------------
def test_final_states_have_no_exits_but_rerouted_relinks() -> None:
    for status in (S.SUCCEEDED, S.FAILED, S.CLOSED):
        assert lifecycle.ALLOWED[status] == frozenset()
        with pytest.raises(InvalidTransition):
            lifecycle.check(status, S.PROCESSING)
    assert lifecycle.ALLOWED[S.REROUTED] == frozenset({S.REROUTED})


def test_no_edge_leads_back_to_pending() -> None:
    for status, targets in lifecycle.ALLOWED.items():
        if status is not S.PENDING:
            assert S.PENDING not in targets
