"""Which transactions wait for the disk (``RefundStore``'s docstring).

Reservations and final refusals are synced before they return; records the channel
will tell again (accepted, succeeded, errors) may commit without waiting. On SQLite the
statements the driver ran are traced (``set_trace_callback``): the relaxed commit is a
``PRAGMA synchronous=NORMAL`` before ``BEGIN`` and ``FULL`` again after ``COMMIT``. On
PostgreSQL the same calls are checked for their effect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway import RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.errors import StoreUnavailable
from gateway.lifecycle import Change, Update
from gateway.models import Refund
from gateway.settings import load_settings
from gateway.store import RefundStore, make_engine, upgrade
from tests.fakes import FakeChannel
from tests.helpers import FakeClock, request

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
NORMAL = "PRAGMA synchronous=NORMAL"


def traced_engine(url: str) -> tuple[Engine, list[str]]:
    engine = make_engine(url, pool_size=1)
    upgrade(engine)
    engine.dispose()
    statements: list[str] = []

    def keep(sql: str) -> None:
        # the writer turn's busy timeout (what is left of the lock wait) is not a commit
        # mode; leave it out so the order of the durability statements stays readable
        if not sql.startswith("PRAGMA busy_timeout"):
            statements.append(sql)

    @event.listens_for(engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(keep)

    return engine, statements


@pytest.fixture
def traced(sqlite_url: str) -> Iterator[tuple[RefundStore, list[str]]]:
    engine, statements = traced_engine(sqlite_url)
    yield RefundStore(engine), statements
    engine.dispose()


def reserve(store: RefundStore, key: str = "k", rid: str = "RF1") -> None:
    store.reserve(request(key, 100), refund_id=rid, channel_refund_no=rid, now=NOW,
                  next_check_at=NOW, arrival=None, max_refunds=None)


def apply(store: RefundStore, rid: str, change: Change, *, relaxed: bool = False) -> Refund:
    with store.locked(rid, now=NOW, relaxed=relaxed) as tx:
        return tx.apply(change)


def synchronous(store: RefundStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "PRAGMA synchronous").fetchone()[0])


def test_reservation_always_syncs(traced: tuple[RefundStore, list[str]]) -> None:
    store, statements = traced
    reserve(store)
    assert "BEGIN IMMEDIATE" in statements and NORMAL not in statements
    assert synchronous(store) == 2   # FULL


def test_relearnable_outcome_commits_unsynced_then_restores_full(
        traced: tuple[RefundStore, list[str]]) -> None:
    store, statements = traced
    reserve(store)
    statements.clear()
    after = apply(store, "RF1", Change(status=RefundStatus.PROCESSING), relaxed=True)
    assert after.status is RefundStatus.PROCESSING
    assert statements[0] == NORMAL and statements[1] == "BEGIN IMMEDIATE"
    assert statements[-1] == "PRAGMA synchronous=FULL"
    assert store.get("RF1").status is RefundStatus.PROCESSING
    assert synchronous(store) == 2


def test_refusal_is_synced_even_when_the_caller_expected_otherwise(
        traced: tuple[RefundStore, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = traced
    reserve(store)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    apply(store, "RF1", Change(status=RefundStatus.PROCESSING), relaxed=True)
    assert synced == []                     # relearnable: not synced
    apply(store, "RF1", Change(status=RefundStatus.FAILED), relaxed=True)
    assert synced == [f"{store.engine.url.database}-wal"]   # the WAL, after the commit
    assert store.get("RF1").status is RefundStatus.FAILED


def test_failed_transaction_leaves_the_connection_synced(
        traced: tuple[RefundStore, list[str]]) -> None:
    store, _ = traced
    reserve(store)

    with pytest.raises(RuntimeError), store.locked("RF1", now=NOW, relaxed=True) as tx:
        tx.apply(Change(status=RefundStatus.PROCESSING))
        raise RuntimeError("the block broke after deciding")
    assert synchronous(store) == 2
    assert store.get("RF1").status is RefundStatus.PENDING


def test_sync_every_outcome_turns_relaxing_off(sqlite_url: str) -> None:
    engine, statements = traced_engine(sqlite_url)
    store = RefundStore(engine, sync_every_outcome=True)
    reserve(store)
    apply(store, "RF1", Change(status=RefundStatus.PROCESSING), relaxed=True)
    assert NORMAL not in statements
    engine.dispose()


@pytest.mark.parametrize(("script", "relaxed"), [("ok", True), ("refuse", False)])
def test_service_relaxes_only_what_the_channel_will_tell_again(
        sqlite_url: str, script: str, relaxed: bool) -> None:
    engine, statements = traced_engine(sqlite_url)
    engine.dispose()
    channel = FakeChannel()
    gw = build_gateway(load_settings(database_url=sqlite_url), clock=FakeClock(),
                       sleep=lambda _: None, configure_logs=False,
                       adapters={Route.WECHATPAY: channel})
    event.listen(gw.store.engine, "connect",
                 lambda conn, _: conn.set_trace_callback(statements.append))
    gw.store.engine.dispose()
    channel.submit_script = [script]
    refund = gw.refund(request())
    assert refund.status is (RefundStatus.PROCESSING if relaxed else RefundStatus.FAILED)
    assert (NORMAL in statements) is relaxed
    gw.close()


def test_both_commit_modes_persist(database_url: str) -> None:
    """On either store, relaxed and synced outcomes are committed and read back alike,
    from another engine (another process would see the same)."""
    engine = make_engine(database_url)
    upgrade(engine)
    store = RefundStore(engine)
    reserve(store, "a", "RF1")
    reserve(store, "b", "RF2")
    apply(store, "RF1", Change(status=RefundStatus.SUCCEEDED,
                               update=Update(succeeded_at=NOW, next_check_at=None)),
          relaxed=True)
    apply(store, "RF2", Change(status=RefundStatus.FAILED,
                               update=Update(failure_code="NOT_ENOUGH")), relaxed=True)
    engine.dispose()
    other = make_engine(database_url)
    reader = RefundStore(other)
    first, second = reader.get("RF1"), reader.get("RF2")
    assert first.status is RefundStatus.SUCCEEDED and first.succeeded_at == NOW
    assert second.status is RefundStatus.FAILED and second.failure_code == "NOT_ENOUGH"
    other.dispose()


def test_driver_errors_surface_as_store_unavailable(database_url: str) -> None:
    """Statements run on the driver cursor raise SQLAlchemy's classes inside the store
    (``reserve`` tells a same-key race apart by ``IntegrityError``), without the
    parameters in the message; none leaves the store: callers get ``StoreUnavailable``."""
    engine = make_engine(database_url)
    upgrade(engine)
    store = RefundStore(engine)
    reserve(store, "a", "RF1")
    with pytest.raises(StoreUnavailable) as err:   # same refund id under another key
        reserve(store, "b", "RF1")
    cause = err.value.__context__
    assert isinstance(cause, IntegrityError)
    assert cause.params is None   # never the values (names, accounts) in a message
    assert isinstance(cause.orig, engine.dialect.loaded_dbapi.IntegrityError)
    assert store.get("RF1").idempotency_key == "a"
    engine.dispose()


@pytest.mark.postgres
def test_connection_lost_mid_transaction_is_invalidated(pg_url: str) -> None:
    """A connection that dies between two statements fails that call and is dropped from
    the pool: the next call works on a fresh one."""
    engine = make_engine(pg_url, pool_size=1)
    upgrade(engine)
    store = RefundStore(engine)
    reserve(store)
    with engine.connect() as conn:   # the pooled connection the next call will use
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    admin = make_engine(pg_url)

    with pytest.raises(StoreUnavailable) as err, store.locked("RF1", now=NOW) as tx:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                {"pid": pid}).scalar()
            conn.commit()
        tx.apply(Change(status=RefundStatus.PROCESSING))
    cause = err.value.__cause__
    assert isinstance(cause, OperationalError) and cause.connection_invalidated
    after = apply(store, "RF1", Change(status=RefundStatus.PROCESSING))
    assert after.status is RefundStatus.PROCESSING
    admin.dispose()
    engine.dispose()
