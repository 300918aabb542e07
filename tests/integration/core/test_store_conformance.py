"""The store contract, run unchanged on SQLite and PostgreSQL (getpaid-core style)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway import IdempotencyConflict, InvalidRequest, Money, OverRefund, RefundStatus, lifecycle
from gateway.lifecycle import Change, Update
from gateway.models import EventKind, Refund, Route
from gateway.store import RefundStore, make_engine, upgrade
from gateway.store.engine import needs_upgrade
from tests.helpers import request

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[RefundStore]:
    engine = make_engine(database_url)
    assert needs_upgrade(engine)
    upgrade(engine)
    assert not needs_upgrade(engine)
    yield RefundStore(engine)
    engine.dispose()


def reserve(store: RefundStore, key: str, amount: int, rid: str, **kw: object):  # type: ignore[no-untyped-def]
    return store.reserve(request(key, amount, **kw), refund_id=rid,  # type: ignore[arg-type]
                         channel_refund_no=rid, now=NOW, next_check_at=NOW, arrival=None,
                         max_refunds=None)


def test_idempotent_reserve(store: RefundStore) -> None:
    first, created = reserve(store, "k", 100, "RF1")
    again, created_again = reserve(store, "k", 100, "RF2")
    assert created and not created_again and again.id == first.id == "RF1"
    assert first.status is RefundStatus.PENDING and first.amount == Money(100)
    assert first.created_at == NOW


def apply(store: RefundStore, rid: str, change: Change, *, now: datetime = NOW,
          relaxed: bool = False) -> Refund:
    with store.locked(rid, now=now, relaxed=relaxed) as tx:
        return tx.apply(change)


def reroute(store: RefundStore, rid: str, new_id: str, *, now: datetime = NOW
            ) -> tuple[Refund, Refund]:
    """What the service does for a reroute, in one unit of work."""
    with store.locked(rid, now=now, pipelined=False) as tx:
        if tx.current.status is RefundStatus.REROUTED:
            assert tx.current.rerouted_to is not None
            return tx.current, store.get(tx.current.rerouted_to)
        linked = tx.add_linked(new_id=new_id, route=Route.BALANCE, arrival=None, note="")
        original = tx.apply(lifecycle.reroute(tx.current, linked_id=linked.id,
                                              route="balance", note="", confirmed=None))
        return original, linked


def test_conflict_on_changed_request(store: RefundStore) -> None:
    reserve(store, "k", 100, "RF1")
    with pytest.raises(IdempotencyConflict) as err:
        reserve(store, "k", 200, "RF2")
    assert err.value.fields == ("amount_minor",)


def test_over_refund_refused(store: RefundStore) -> None:
    reserve(store, "a", 9_000, "RF1")
    with pytest.raises(OverRefund):
        reserve(store, "b", 1_001, "RF2")
    reserve(store, "c", 1_000, "RF3")
    assert store.sum_counting(Route.WECHATPAY, "ORD1") == Money(10_000)


def test_payment_recorded_differently_is_refused(store: RefundStore) -> None:
    reserve(store, "a", 100, "RF1")
    with pytest.raises(InvalidRequest, match="amount"):
        reserve(store, "b", 100, "RF2", paid=20_000)


def test_due_refunds_found_and_leased(store: RefundStore) -> None:
    reserve(store, "a", 100, "RF1")
    reserve(store, "b", 100, "RF2")
    apply(store, "RF2", Change(status=RefundStatus.SUCCEEDED,
                               update=Update(next_check_at=None)))
    due = store.claim_due(NOW, limit=10, lease=timedelta(minutes=2))
    assert [r.id for r in due] == ["RF1"]
    assert store.claim_due(NOW, limit=10, lease=timedelta(minutes=2)) == []
    assert [r.id for r in store.claim_due(NOW + timedelta(minutes=3), limit=10,
                                          lease=timedelta(minutes=2))] == ["RF1"]


def test_events_are_append_only(store: RefundStore) -> None:
    reserve(store, "a", 100, "RF1")
    apply(store, "RF1", Change(status=RefundStatus.PROCESSING))
    events = store.events("RF1")
    assert [e.kind for e in events] == [EventKind.REQUESTED, EventKind.STATUS_CHANGED]
    assert [e.seq for e in events] == [1, 2]
    for sql in ("UPDATE refund_events SET kind = 'x'", "DELETE FROM refund_events"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(sql))
    assert len(store.events("RF1")) == 2


def test_notification_keys_dedupe(store: RefundStore) -> None:
    assert store.remember_notification(Route.WECHATPAY, "nonce", "n1", now=NOW,
                                       refund_id=None, outcome="received")
    assert not store.remember_notification(Route.WECHATPAY, "nonce", "n1", now=NOW,
                                           refund_id=None, outcome="received")
    assert store.remember_notification(Route.ALIPAY, "nonce", "n1", now=NOW,
                                       refund_id=None, outcome="received")


def test_reroute_is_atomic_and_idempotent(store: RefundStore) -> None:
    reserve(store, "a", 10_000, "RF1")
    apply(store, "RF1", Change(status=RefundStatus.ABNORMAL))
    original, linked = reroute(store, "RF1", "RF2")
    assert original.status is RefundStatus.REROUTED and linked.rerouted_from == "RF1"
    assert store.sum_counting(Route.WECHATPAY, "ORD1") == Money(10_000)
    _, again = reroute(store, "RF1", "RF3")
    assert again.id == "RF2"


def test_timestamps_are_aware_utc(store: RefundStore) -> None:
    refund, _ = reserve(store, "a", 100, "RF1")
    assert refund.created_at.tzinfo is not None
    assert refund.created_at.utcoffset() == timedelta(0)


def test_fast_path_reads_and_writes_agree_with_sqlalchemy_core(store: RefundStore) -> None:
    """The refund path runs prebuilt statements on the driver cursor with its own type
    conversions (gateway/store/statements.py); what it writes must read back through
    SQLAlchemy Core's column types unchanged, and the other way round."""
    from datetime import date, timezone

    from gateway.models import ArrivalWindow

    odd = datetime(2026, 11, 20, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=8)))
    first, _ = store.reserve(request("k", 100), refund_id="RF1", channel_refund_no="RF1",
                             now=odd, next_check_at=odd + timedelta(seconds=1),
                             arrival=ArrivalWindow(date(2026, 11, 20), date(2026, 11, 25)),
                             max_refunds=None)
    after = apply(store, "RF1", Change(
        status=RefundStatus.SUCCEEDED,
        update=Update(succeeded_at=odd, next_check_at=None, channel_refund_id="503",
                      bank_ack={"bank": "ICBC"},
                      expected_arrival=ArrivalWindow(date(2026, 11, 21),
                                                     date(2026, 11, 26)))),
                  now=odd, relaxed=True)
    fast = store.get("RF1")                                    # driver cursor
    (core,) = store.list_refunds()                             # SQLAlchemy Core types
    assert fast == core == after
    assert fast.created_at == odd and fast.created_at.tzinfo is not None
    assert fast.succeeded_at == odd and fast.next_check_at is None
    assert fast.expected_arrival == ArrivalWindow(date(2026, 11, 21), date(2026, 11, 26))
    assert first.created_at == odd
    # A row written through Core (a reroute) reads back the same on the fast path.
    apply(store, "RF1", Change(), now=odd)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE refunds SET status = 'abnormal' WHERE id = 'RF1'"))
    _, linked = reroute(store, "RF1", "RF2", now=odd)
    assert store.get("RF2") == linked
    assert [e.seq for e in store.events("RF1")] == list(range(1, len(store.events("RF1")) + 1))


def test_a_new_linked_refund_must_fit_what_is_left(store: RefundStore) -> None:
    """A failed linked refund releases its amount; replacing it only fits if nothing else
    took that amount meanwhile (invariant 3 across a reroute chain)."""
    reserve(store, "a", 10_000, "RF1")
    apply(store, "RF1", Change(status=RefundStatus.ABNORMAL))
    reroute(store, "RF1", "RF2")
    apply(store, "RF2", Change(status=RefundStatus.FAILED))
    assert store.sum_counting(Route.WECHATPAY, "ORD1") == Money(0)
    reserve(store, "b", 5_000, "RF3")            # the refund service refunded another way
    with pytest.raises(OverRefund), store.locked("RF1", now=NOW, pipelined=False) as tx:
        tx.add_linked(new_id="RF4", route=Route.BALANCE, arrival=None, note="")
    assert store.get("RF1").rerouted_to == "RF2"


def test_one_trade_is_one_payment(store: RefundStore) -> None:
    reserve(store, "a", 100, "RF1")
    renamed = request("b", 100)
    renamed = type(renamed)(renamed.idempotency_key, type(renamed.payment)(
        renamed.payment.route, "ord1", renamed.payment.channel_trade_no,
        renamed.payment.amount), renamed.amount)
    with pytest.raises(InvalidRequest, match="'ORD1'"):
        store.reserve(renamed, refund_id="RF2", channel_refund_no="RF2", now=NOW,
                      next_check_at=NOW, arrival=None, max_refunds=None)
