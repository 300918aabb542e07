"""The relays' persistence: deliveries queued from the outbox, leases, attempts.

Only this module reads or writes ``relay_deliveries`` and ``relay_attempts``. Writes go
through one short transaction each (on SQLite in the writer queue the refund store
uses), and a database failure is ``StoreUnavailable``, as everywhere in the gateway.
A delivery is leased to one dispatcher at a time (``claim_due``), so several relay
processes on PostgreSQL never send one event twice at once; an attempt is recorded only
by the lease's owner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import GatewayError, StoreUnavailable
from gateway.models import OutboxEvent
from gateway.relay.schema import relay_attempts, relay_deliveries
from gateway.store.engine import sqlite_writer_turn

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
_TEXT = 500   # error and response excerpts kept (columns hold 512)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    relay: str
    event_id: str
    cursor: int
    refund_id: str
    body: bytes
    status: str
    attempts: int
    failures: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str               # delivered | http_error | timeout | connect_error | error
    http_status: int | None = None
    error: str | None = None
    response: str | None = None


def _delivery(row: Any) -> Delivery:
    return Delivery(id=int(row.id), relay=row.relay, event_id=row.event_id,
                    cursor=int(row.outbox_cursor), refund_id=row.refund_id,
                    body=row.body.encode("utf-8"), status=row.status,
                    attempts=int(row.attempts), failures=int(row.failures),
                    next_attempt_at=row.next_attempt_at, last_error=row.last_error,
                    created_at=row.created_at, delivered_at=row.delivered_at)


class RelayStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._pg = engine.dialect.name == "postgresql"
        self._my = engine.dialect.name == "mysql"

    @contextmanager
    def _tx(self, *, readonly: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect() as opened:
                conn = (opened.execution_options(sqlite_begin="DEFERRED")
                        if readonly and self._sqlite else opened)
                turn: AbstractContextManager[Any] = (
                    sqlite_writer_turn(conn) if self._sqlite and not readonly
                    else nullcontext())
                with turn, conn.begin():
                    yield conn
        except GatewayError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            cause = getattr(exc, "orig", None) or exc
            raise StoreUnavailable(f"the database failed ({type(cause).__name__}: "
                                   f"{str(cause).strip()[:200]})",
                                   operation="relay") from exc

    # -- queueing -----------------------------------------------------------------------
    def enqueue(self, relay: str, events: Sequence[tuple[OutboxEvent, bytes]], *,
                now: datetime) -> int:
        """Queue one delivery per event not queued before for ``relay`` (an event the
        outbox delivers again is not queued twice); returns how many were new."""
        if not events:
            return 0
        d = relay_deliveries.c
        with self._tx() as conn:
            known = set(conn.execute(select(d.event_id).where(
                d.relay == relay, d.event_id.in_([e.event_id for e, _ in events]))).scalars())
            rows = [{"relay": relay, "event_id": e.event_id, "outbox_cursor": e.cursor,
                     "refund_id": e.refund_id, "body": body.decode("utf-8"),
                     "status": PENDING, "attempts": 0, "failures": 0,
                     "next_attempt_at": now, "created_at": now, "updated_at": now}
                    for e, body in events if e.event_id not in known]
            if rows:
                conn.execute(relay_deliveries.insert(), rows)
        return len(rows)

    def claim_due(self, relay: str, *, now: datetime, owner: str, lease: timedelta,
                  limit: int, ids: Sequence[int] | None = None) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries, oldest first. A refund's events go out
        in order: one waits while an earlier event of the same refund is undelivered
        (pending), so a receiver never sees ``succeeded`` before ``processing``."""
        d = relay_deliveries.c
        earlier = relay_deliveries.alias("earlier")
        e = earlier.c
        blocked = exists().where(e.relay == d.relay, e.refund_id == d.refund_id,
                                 e.outbox_cursor < d.outbox_cursor, e.status == PENDING)
        q = (select(relay_deliveries)
             .where(d.relay == relay, d.status == PENDING, d.next_attempt_at <= now,
                    (d.lease_until.is_(None)) | (d.lease_until <= now) | (d.lease_owner == owner),
                    ~blocked)
             .order_by(d.outbox_cursor).limit(limit))
        if ids is not None:
            q = q.where(d.id.in_(list(ids)))
        if self._pg:
            q = q.with_for_update(skip_locked=True, of=relay_deliveries)
        elif self._my:   # MySQL 8 / MariaDB 10.6+: SKIP LOCKED, no OF
            q = q.with_for_update(skip_locked=True)
        with self._tx() as conn:
            rows = conn.execute(q).all()
            if rows:
                conn.execute(update(relay_deliveries).where(
                    d.id.in_([r.id for r in rows])).values(
                    lease_owner=owner, lease_until=now + lease, updated_at=now))
        return [_delivery(r) for r in rows]

    def record(self, delivery: Delivery, attempt: AttemptRecord, *, owner: str,
               status: str, next_attempt_at: datetime | None) -> bool:
        """One attempt and what follows from it (``delivered``, ``pending`` again at
        ``next_attempt_at``, or ``dead``), in one transaction; False when ``owner`` no
        longer holds the lease (nothing is changed then)."""
        d = relay_deliveries.c
        failed = status != DELIVERED
        with self._tx() as conn:
            done = conn.execute(update(relay_deliveries).where(
                d.id == delivery.id, d.lease_owner == owner).values(
                status=status, attempts=d.attempts + 1,
                failures=d.failures + 1 if failed else d.failures,
                next_attempt_at=next_attempt_at or attempt.finished_at,
                lease_owner=None, lease_until=None,
                last_error=(attempt.error or f"HTTP {attempt.http_status}")[:_TEXT]
                if failed else None,
                delivered_at=attempt.finished_at if not failed else d.delivered_at,
                updated_at=attempt.finished_at))
            if not done.rowcount:
                return False
            conn.execute(relay_attempts.insert().values(
                delivery_id=delivery.id, attempt=attempt.attempt,
                started_at=attempt.started_at, finished_at=attempt.finished_at,
                outcome=attempt.outcome, http_status=attempt.http_status,
                error=attempt.error[:_TEXT] if attempt.error else None,
                response=attempt.response[:_TEXT] if attempt.response else None))
        return True

    def release(self, ids: Sequence[int], *, owner: str, now: datetime) -> None:
        """Hand leased deliveries back unattempted (a relay stopping)."""
        if not ids:
            return
        d = relay_deliveries.c
        with self._tx() as conn:
            conn.execute(update(relay_deliveries).where(
                d.id.in_(list(ids)), d.lease_owner == owner).values(
                lease_owner=None, lease_until=None, updated_at=now))

    def requeue(self, relay: str, *, now: datetime, event_ids: Sequence[str] | None = None,
                dead: bool = False) -> list[int]:
        """Queue deliveries again from the start of the schedule (``relay replay``):
        the given events (delivered or dead alike: a receiver that lost them), or with
        ``dead`` every dead letter. Returns their ids."""
        d = relay_deliveries.c
        cond = d.relay == relay
        if event_ids is not None:
            cond = and_(cond, d.event_id.in_(list(event_ids)))
        elif dead:
            cond = and_(cond, d.status == DEAD)
        else:
            return []
        with self._tx() as conn:
            ids = [int(i) for i in conn.execute(select(d.id).where(cond)).scalars()]
            if ids:
                conn.execute(update(relay_deliveries).where(d.id.in_(ids)).values(
                    status=PENDING, failures=0, next_attempt_at=now, lease_owner=None,
                    lease_until=None, updated_at=now))
        return ids

    # -- reading ------------------------------------------------------------------------
    def deliveries(self, relay: str, *, status: str | None = None,
                   event_ids: Sequence[str] | None = None,
                   limit: int = 1000) -> list[Delivery]:
        d = relay_deliveries.c
        q = select(relay_deliveries).where(d.relay == relay)
        if status is not None:
            q = q.where(d.status == status)
        if event_ids is not None:
            q = q.where(d.event_id.in_(list(event_ids)))
        with self._tx(readonly=True) as conn:
            return [_delivery(r) for r in conn.execute(q.order_by(d.outbox_cursor)
                                                         .limit(limit)).all()]

    def attempts(self, delivery_id: int) -> list[AttemptRecord]:
        a = relay_attempts.c
        with self._tx(readonly=True) as conn:
            rows = conn.execute(select(relay_attempts).where(a.delivery_id == delivery_id)
                                .order_by(a.id)).all()
        return [AttemptRecord(delivery_id=int(r.delivery_id), attempt=int(r.attempt),
                              started_at=r.started_at, finished_at=r.finished_at,
                              outcome=r.outcome, http_status=r.http_status, error=r.error,
                              response=r.response) for r in rows]

    def counts(self, relay: str | None = None) -> dict[tuple[str, str], int]:
        """(relay, status) -> deliveries."""
        d = relay_deliveries.c
        q = select(d.relay, d.status, func.count()).group_by(d.relay, d.status)
        if relay is not None:
            q = q.where(d.relay == relay)
        with self._tx(readonly=True) as conn:
            return {(r[0], r[1]): int(r[2]) for r in conn.execute(q).all()}
