"""The store contract, run unchanged on SQLite and PostgreSQL (getpaid-core style)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway import IdempotencyConflict, InvalidRequest, Money, OverRefund, RefundStatus
from gateway.models import EventKind, Route
from gateway.store import Decision, RefundStore, make_engine, upgrade
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
    store.apply("RF2", lambda _: Decision(status=RefundStatus.SUCCEEDED,
                                          fields={"next_check_at": None}), now=NOW)
    due = store.claim_due(NOW, limit=10, lease=timedelta(minutes=2))
    assert [r.id for r in due] == ["RF1"]
    assert store.claim_due(NOW, limit=10, lease=timedelta(minutes=2)) == []
    assert [r.id for r in store.claim_due(NOW + timedelta(minutes=3), limit=10,
                                          lease=timedelta(minutes=2))] == ["RF1"]


def test_events_are_append_only(store: RefundStore) -> None:
    reserve(store, "a", 100, "RF1")
    store.apply("RF1", lambda _: Decision(status=RefundStatus.PROCESSING), now=NOW)
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
    store.apply("RF1", lambda _: Decision(status=RefundStatus.ABNORMAL), now=NOW)
    original, linked = store.reroute("RF1", new_id="RF2", route=Route.BALANCE, now=NOW,
                                     arrival=None, note="card closed")
    assert original.status is RefundStatus.REROUTED and linked.rerouted_from == "RF1"
    assert store.sum_counting(Route.WECHATPAY, "ORD1") == Money(10_000)
    _, again = store.reroute("RF1", new_id="RF3", route=Route.BALANCE, now=NOW,
                             arrival=None, note="")
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
    after = store.apply("RF1", lambda _: Decision(
        status=RefundStatus.SUCCEEDED,
        fields={"succeeded_at": odd, "next_check_at": None, "channel_refund_id": "503",
                "bank_ack": {"bank": "ICBC"}, "arrival_earliest": date(2026, 11, 21),
                "arrival_latest": date(2026, 11, 26)}), now=odd, relaxed=True)
    fast = store.get("RF1")                                    # driver cursor
    (core,) = store.list_refunds()                             # SQLAlchemy Core types
    assert fast == core == after
    assert fast.created_at == odd and fast.created_at.tzinfo is not None
    assert fast.succeeded_at == odd and fast.next_check_at is None
    assert fast.expected_arrival == ArrivalWindow(date(2026, 11, 21), date(2026, 11, 26))
    assert first.created_at == odd
    # A row written through Core (a reroute) reads back the same on the fast path.
    store.apply("RF1", lambda _: None, now=odd)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE refunds SET status = 'abnormal' WHERE id = 'RF1'"))
    _, linked = store.reroute("RF1", new_id="RF2", route=Route.BALANCE, now=odd,
                              arrival=None, note="")
    assert store.get("RF2") == linked
    assert [e.seq for e in store.events("RF1")] == list(range(1, len(store.events("RF1")) + 1))
