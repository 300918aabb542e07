"""``RefundStore``: every read and write of refunds, payments, events and attempts.

Each public method is one short transaction; none spans channel I/O (DESIGN.md
invariant 5). Writers lock what they decide on: on PostgreSQL the payment row
(``SELECT ... FOR UPDATE``) when reserving, the refund row when applying an outcome;
on SQLite every transaction is ``BEGIN IMMEDIATE`` (see ``engine.py``). Events are
inserted, never updated (the database refuses edits as well).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Row, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.errors import (
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    OverRefund,
    RefundNotFound,
    StoreUnavailable,
)
from gateway.lifecycle import Change, check
from gateway.logging import mask_stored_account, redact_mapping
from gateway.models import (
    ArrivalWindow,
    Attempt,
    EventKind,
    OutboxEvent,
    Payment,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.money import Money
from gateway.store.engine import sqlite_writer_turn
from gateway.store.schema import (
    attempts,
    outbox_consumers,
    payments,
    refund_events,
    refund_events_outbox,
    refunds,
)
from gateway.store.statements import (
    Prepared,
    counting_clause,
    read_date_pg,
    read_date_sqlite,
    read_ts_mysql,
    read_ts_pg,
    read_ts_sqlite,
    select_refund,
)
from gateway.store.statements import build as build_statements

_TS_COLUMNS = ("created_at", "updated_at", "succeeded_at", "next_check_at",
               "abnormal_applied_at", "paid_after_release_at")
_DATE_COLUMNS = ("arrival_earliest", "arrival_latest")

_DUE = [RefundStatus.PENDING.value, RefundStatus.PROCESSING.value]
_DEADLOCK_RETRIES = 5
# MySQL/MariaDB: 1213 deadlock, 1205 lock wait timeout; PostgreSQL: deadlock_detected,
# serialization_failure.
_DEADLOCK_CODES = frozenset({1213, 1205})
_DEADLOCK_STATES = frozenset({"40P01", "40001"})


def _is_deadlock(exc: BaseException | None) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    code = orig.args[0] if getattr(orig, "args", None) else None
    return code in _DEADLOCK_CODES or getattr(orig, "sqlstate", None) in _DEADLOCK_STATES
# How far ahead of this clock a refund's last write may be before its schedule is
# distrusted (claim_due): NTP slews by far less; a step of minutes is an anomaly.
CLOCK_TOLERANCE = timedelta(minutes=5)

log = structlog.get_logger("gateway.store")

# kind, data, status_from, status_to
_EventRow = tuple[EventKind, Mapping[str, Any], RefundStatus | None, RefundStatus | None]


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)


_SYNC_WANTED = "refund_gateway.sync_wanted"


class RefundStore:
    """All reads and writes of the gateway's state.

    Commit durability: reservations, reroutes and operator actions always commit with a
    full sync (SQLite ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``). A
    transaction that only records what the channel will tell again (an accepted,
    succeeded or abnormal answer, an error, a notification saying so) may be committed
    without waiting for the sync (``relaxed=True``; off when ``sync_every_outcome``):
    a process crash loses none of it (the write is in the OS), and an OS crash or power
    loss can lose the last such records, which leaves those refunds PENDING/PROCESSING
    with a due check, so the resolver asks the channel and records the answer again. A
    final refusal (FAILED, CLOSED) always syncs: it releases the amount, and the refund
    service may act on it by refunding another way.
    """

    def __init__(self, engine: Engine, *, sync_every_outcome: bool = False) -> None:
        self.engine = engine
        self.sync_every_outcome = sync_every_outcome
        self._pg = engine.dialect.name == "postgresql"
        self._sqlite = engine.dialect.name == "sqlite"
        self._s = build_statements(engine.dialect)
        self._my = engine.dialect.name == "mysql"
        self._read_ts = (read_ts_pg if self._pg else read_ts_mysql if self._my
                         else read_ts_sqlite)
        self._read_date = read_date_sqlite if self._sqlite else read_date_pg

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, readonly: bool = False, relaxed: bool = False,
            pipelined: bool = False, keep_integrity_errors: bool = False
            ) -> Iterator[Connection]:
        """One transaction (``_transaction``), with every database failure raised as
        ``StoreUnavailable``: no SQLAlchemy or driver exception (``psycopg`` from a
        pipeline's exit, ``sqlite3`` from ``BEGIN IMMEDIATE``) and no I/O error of the
        file leaves the store. ``keep_integrity_errors``: the block tells a unique-key
        race apart itself (``reserve``)."""
        try:
            with self._transaction(readonly=readonly, relaxed=relaxed,
                                   pipelined=pipelined) as conn:
                yield conn
        except GatewayError:
            raise
        except IntegrityError as exc:
            if keep_integrity_errors:
                raise
            raise self.unavailable(exc) from exc
        except (SQLAlchemyError, OSError) as exc:
            raise self.unavailable(exc) from exc
        except Exception as exc:
            if isinstance(exc, self.engine.dialect.loaded_dbapi.Error):
                raise self.unavailable(exc) from exc
            raise

    @staticmethod
    def unavailable(exc: BaseException) -> StoreUnavailable:
        """``StoreUnavailable`` for a database or driver error: its class and first line
        (no parameters, no URL)."""
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
        return StoreUnavailable(f"the database failed ({type(cause).__name__}: {first})",
                                operation="store")

    @contextmanager
    def _transaction(self, *, readonly: bool = False, relaxed: bool = False,
                     pipelined: bool = False) -> Iterator[Connection]:
        """One transaction. ``relaxed``: see the class docstring. ``pipelined``: on
        PostgreSQL, psycopg's pipeline mode, so statements whose results are not read
        (BEGIN, SET LOCAL, the inserts and the update after the lookup, COMMIT) share
        round trips; only for blocks that run ``Prepared`` statements alone (Core's
        ``Connection.execute`` reads results at once, which a pipeline defers). The
        error of a statement whose result is not read surfaces at a later read or at
        the commit, possibly as ``PipelineAborted``: a block that tells errors apart
        reads the result of each statement whose error it handles (``reserve``)."""
        conn = self.engine.connect()
        relax = relaxed and not readonly and not self.sync_every_outcome
        # MySQL/MariaDB: never relaxed (its flush policy is server-wide, not per commit)
        pg_relax, sqlite_relax = relax and self._pg, relax and self._sqlite
        try:
            if readonly and self._sqlite:
                conn = conn.execution_options(sqlite_begin="DEFERRED")
            driver: Any = conn.connection.driver_connection
            if sqlite_relax:   # SQLite takes this only outside a transaction
                driver.execute("PRAGMA synchronous=NORMAL")
            conn.info[_SYNC_WANTED] = False
            # SQLite: queue for the write lock. PostgreSQL: pipeline mode if asked.
            turn: AbstractContextManager[Any] = (
                (driver.pipeline() if pipelined else nullcontext()) if self._pg
                else sqlite_writer_turn(conn) if self._sqlite and not readonly
                else nullcontext())
            try:
                with turn, conn.begin():
                    if pg_relax:
                        driver.execute("SET LOCAL synchronous_commit = off")
                    yield conn
                    if pg_relax and conn.info[_SYNC_WANTED]:
                        driver.execute("SET LOCAL synchronous_commit = on")
            finally:
                if sqlite_relax:
                    driver.execute("PRAGMA synchronous=FULL")
            if sqlite_relax and conn.info[_SYNC_WANTED]:
                # Committed unsynced but turned out to need it: sync the WAL file itself
                # (every frame in it, this commit's included), as a FULL commit would.
                self._sync_wal()
        finally:
            conn.close()

    def _sync_wal(self) -> None:
        wal = f"{self.engine.url.database}-wal"
        fd = os.open(wal, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _want_sync(conn: Connection) -> None:
        """This transaction must be durable whatever its caller expected."""
        conn.info[_SYNC_WANTED] = True

    # -- reads ------------------------------------------------------------------------
    def _select_refund(self) -> Any:
        return select_refund()

    @staticmethod
    def _to_refund(row: Row[Any] | Mapping[str, Any]) -> Refund:
        m = row._mapping if isinstance(row, Row) else row
        arrival = (ArrivalWindow(m["arrival_earliest"], m["arrival_latest"])
                   if m["arrival_earliest"] is not None else None)
        return Refund(
            id=m["id"], idempotency_key=m["idempotency_key"], route=Route(m["route"]),
            payment=Payment(route=Route(m["p_route"]),
                            merchant_order_no=m["merchant_order_no"],
                            channel_trade_no=m["channel_trade_no"],
                            amount=Money(m["p_amount_minor"], m["p_currency"]),
                            user_id=m["user_id"],
                            merchant_account=m["merchant_account"] or "default"),
            amount=Money(m["amount_minor"], m["currency"]), reason=m["reason"],
            status=RefundStatus(m["status"]), channel_refund_no=m["channel_refund_no"],
            created_at=m["created_at"], updated_at=m["updated_at"],
            channel_refund_id=m["channel_refund_id"], succeeded_at=m["succeeded_at"],
            next_check_at=m["next_check_at"], check_count=m["check_count"],
            failure_code=m["failure_code"], failure_message=m["failure_message"],
            received_account=m["received_account"], bank_ack=json.loads(m["bank_ack"]),
            expected_arrival=arrival, rerouted_from=m["rerouted_from"],
            rerouted_to=m["rerouted_to"],
            linked_refunds=tuple(json.loads(m["linked_refunds"] or "[]")),
            abnormal_applied_at=m["abnormal_applied_at"],
            paid_after_release_at=m["paid_after_release_at"], version=m["version"],
        )

    def _driver_row(self, prepared: Prepared, row: tuple[Any, ...]) -> dict[str, Any]:
        """A refund row read on the driver's cursor, with the column types applied."""
        m = dict(zip(prepared.columns, row, strict=True))
        for name in _TS_COLUMNS:
            m[name] = self._read_ts(m[name])
        for name in _DATE_COLUMNS:
            m[name] = self._read_date(m[name])
        return m

    def _fetch_refund(self, conn: Connection, prepared: Prepared,
                      values: Mapping[str, Any]) -> dict[str, Any] | None:
        row = prepared.one(conn, values)
        return None if row is None else self._driver_row(prepared, row)

    def _load(self, conn: Connection, refund_id: str, *, lock: bool = False) -> Refund:
        q = self._s.refund_by_id_locked if lock else self._s.refund_by_id
        row = self._fetch_refund(conn, q, {"rid": refund_id})
        if row is None:
            raise RefundNotFound(f"no refund {refund_id!r}")
        return self._to_refund(row)

    def get(self, refund_id: str) -> Refund:
        with self._tx(readonly=True) as conn:
            return self._load(conn, refund_id)

    def find_by_key(self, idempotency_key: str) -> Refund | None:
        with self._tx(readonly=True) as conn:
            row = conn.execute(self._select_refund().where(
                refunds.c.idempotency_key == idempotency_key)).first()
            return self._to_refund(row) if row else None

    def list_refunds(self, *, created_from: datetime | None = None,
                     created_to: datetime | None = None,
                     route: Route | None = None) -> list[Refund]:
        q = self._select_refund().order_by(refunds.c.created_at, refunds.c.id)
        if created_from is not None:
            q = q.where(refunds.c.created_at >= created_from)
        if created_to is not None:
            q = q.where(refunds.c.created_at < created_to)
        if route is not None:
            q = q.where(refunds.c.route == route.value)
        with self._tx(readonly=True) as conn:
            return [self._to_refund(r) for r in conn.execute(q)]

    def refunds_of_payment(self, route: Route, merchant_order_no: str) -> list[Refund]:
        q = self._select_refund().where(and_(
            payments.c.route == route.value,
            payments.c.merchant_order_no == merchant_order_no)).order_by(refunds.c.created_at)
        with self._tx(readonly=True) as conn:
            return [self._to_refund(r) for r in conn.execute(q)]

    def events(self, refund_id: str) -> list[RefundEvent]:
        q = select(refund_events).where(refund_events.c.refund_id == refund_id).order_by(
            refund_events.c.seq)
        with self._tx(readonly=True) as conn:
            return [RefundEvent(refund_id=r.refund_id, seq=r.seq, at=r.at,
                                kind=EventKind(r.kind),
                                status_from=RefundStatus(r.status_from) if r.status_from
                                else None,
                                status_to=RefundStatus(r.status_to) if r.status_to else None,
                                data=json.loads(r.data))
                    for r in conn.execute(q)]

    def attempts(self, refund_id: str) -> list[Attempt]:
        q = select(attempts).where(attempts.c.refund_id == refund_id).order_by(attempts.c.id)
        with self._tx(readonly=True) as conn:
            return [Attempt(refund_id=r.refund_id, operation=r.operation,
                            started_at=r.started_at, finished_at=r.finished_at,
                            outcome=r.outcome, http_status=r.http_status, code=r.code,
                            request_id=r.request_id, raw=json.loads(r.raw))
                    for r in conn.execute(q)]

    # -- writes -----------------------------------------------------------------------
    def _append_events(self, conn: Connection, refund_id: str, at: datetime,
                       events: Sequence[_EventRow],
                       *, first_seq: int | None = None) -> None:
        """Insert events; ``seq`` continues the refund's numbering (the refund row is
        locked by the caller, so no other writer numbers concurrently). ``first_seq``
        when the caller knows it (a new refund), else each row takes the last + 1."""
        if not events:
            return
        rows: list[dict[str, Any]] = [{"refund_id": refund_id, "at": at, "kind": kind.value,
                 "status_from": status_from.value if status_from else None,
                 "status_to": status_to.value if status_to else None,
                 "data": _dumps(redact_mapping(data))}
                for kind, data, status_from, status_to in events]
        if first_seq is None:
            self._s.append_event.run_many(conn, rows)
            return
        for i, row in enumerate(rows):
            row["seq"] = first_seq + i
        self._s.insert_events.run_many(conn, rows)

    @staticmethod
    def _payment_id(row: tuple[Any, ...] | None, payment: Payment) -> int:
        """The stored payment's id, once it is known to be the payment given.

        A payment is its channel trade (route, channel_trade_no): the same trade under
        another order number is the same money, so it is refused rather than given a
        second cap (a case change or a typo must not refund the trade twice)."""
        assert row is not None  # noqa: S101 - an upsert with RETURNING returns the row
        payment_id, order_no, amount_minor, currency = row
        if order_no != payment.merchant_order_no:
            raise InvalidRequest(
                f"{payment.route.value} trade {payment.channel_trade_no} is already "
                f"recorded as merchant order {order_no!r}, not "
                f"{payment.merchant_order_no!r}: one trade is one payment; refund it "
                f"under {order_no!r}", field="payment.merchant_order_no")
        differs = [name for name, stored, given in (
            ("amount", amount_minor, payment.amount.minor),
            ("currency", currency, payment.amount.currency)) if stored != given]
        if differs:
            raise InvalidRequest(
                f"{payment.route.value} trade {payment.channel_trade_no} was recorded with "
                f"a different {', '.join(differs)}", field="payment")
        return int(payment_id)

    @staticmethod
    def _count_args(payment: Payment, key: str | None) -> dict[str, Any]:
        return {"route": payment.route.value, "account": payment.merchant_account,
                "trade": payment.channel_trade_no, "key": key}

    @staticmethod
    def _counted(row: tuple[Any, ...] | None) -> tuple[int, int, str | None]:
        assert row is not None  # noqa: S101 - an aggregate always returns a row
        total, count, with_key = row
        return int(total), int(count), with_key

    def _existing(self, conn: Connection, request: RefundRequest) -> Refund | None:
        return self._stored_under_key(
            self._s.refund_by_key.one(conn, {"key": request.idempotency_key}), request)

    def _stored_under_key(self, found: tuple[Any, ...] | None, request: RefundRequest
                          ) -> Refund | None:
        """The refund a ``refund_by_key`` row holds, if it is this same request."""
        if found is None:
            return None
        row = self._driver_row(self._s.refund_by_key, found)
        if row["fp"] != request.fingerprint():
            stored = json.loads(row["req"])
            given = request.canonical()
            fields = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used for a different "
                f"request (differs in: {', '.join(fields)})",
                key=request.idempotency_key, fields=fields)
        return self._to_refund(row)

    def _reservation_state(self, conn: Connection, request: RefundRequest, now: datetime
                           ) -> tuple[Refund | None, int, tuple[int, int, str | None]]:
        """Under the payment's lock: the refund already stored under the request's key
        (if any), the payment's id, and ``_refunded_minor`` of the payment.

        The three statements (key lookup, payment upsert that locks its row, the count)
        are sent together and read in that order: one round trip in a PostgreSQL
        pipeline. The server runs them in order, so the count is taken holding the lock.
        The key is read first, so a retry is answered (or a reused key refused) before
        the payment's details are compared."""
        s, payment = self._s, request.payment
        sent = [
            s.refund_by_key.run(conn, {"key": request.idempotency_key}),
            s.upsert_payment.run(conn, {
                "route": payment.route.value, "merchant_order_no": payment.merchant_order_no,
                "channel_trade_no": payment.channel_trade_no,
                "amount_minor": payment.amount.minor, "currency": payment.amount.currency,
                "user_id": payment.user_id, "created_at": now,
                "account": payment.merchant_account})]
        locked = s.payment_locked   # MySQL: the upsert returns nothing; read it, locked
        if locked is not None:
            sent.append(locked.run(conn, {"route": payment.route.value,
                                          "account": payment.merchant_account,
                                          "channel_trade_no": payment.channel_trade_no}))
        sent.append(s.counting_total.run(conn, self._count_args(
            payment, request.idempotency_key)))
        try:
            existing = self._stored_under_key(s.refund_by_key.fetch(conn, sent[0]), request)
            if existing is not None:
                return existing, 0, (0, 0, None)
            stored = s.upsert_payment.fetch(conn, sent[1])
            if locked is not None:
                stored = locked.fetch(conn, sent[2])
            payment_id = self._payment_id(stored, payment)
            return None, payment_id, self._counted(s.counting_total.fetch(conn, sent[-1]))
        finally:
            for cursor in sent:
                cursor.close()

    def reserve(self, request: RefundRequest, *, refund_id: str, channel_refund_no: str,
                now: datetime, next_check_at: datetime, arrival: ArrivalWindow | None,
                max_refunds: int | None) -> tuple[Refund, bool]:
        """Store the refund as PENDING, or return the one stored under the same key.

        Returns ``(refund, created)``. Raises ``IdempotencyConflict`` or ``OverRefund``.
        A deadlock the database broke (InnoDB's concurrent upserts of one payment;
        PostgreSQL 40P01) rolled the whole reservation back, before any channel call:
        it is simply run again, a few times, before it is ``StoreUnavailable``.
        """
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return self._reserve_once(request, refund_id=refund_id,
                                          channel_refund_no=channel_refund_no, now=now,
                                          next_check_at=next_check_at, arrival=arrival,
                                          max_refunds=max_refunds)
            except StoreUnavailable as exc:
                if attempt + 1 == _DEADLOCK_RETRIES or not _is_deadlock(exc.__cause__):
                    raise
                log.info("store.deadlock_retried", operation="reserve", attempt=attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reserve_once(self, request: RefundRequest, *, refund_id: str,
                      channel_refund_no: str, now: datetime, next_check_at: datetime,
                      arrival: ArrivalWindow | None, max_refunds: int | None
                      ) -> tuple[Refund, bool]:
        try:
            # Pipelined on PostgreSQL (BEGIN rides with the first read, the events with
            # the COMMIT). Every statement whose failure matters is read at once: the
            # refund insert returns its id, so a same-key race fails right there with
            # its IntegrityError (told apart below), never later as PipelineAborted.
            with self._tx(pipelined=True, keep_integrity_errors=True) as conn:
                existing, payment_id, (refunded, count, racer) = self._reservation_state(
                    conn, request, now)
                if existing is not None:
                    return existing, False
                if racer is not None:
                    # PostgreSQL: a request with this key won the payment lock meanwhile
                    # (SQLite's BEGIN IMMEDIATE rules that out). A racer with this key on
                    # another payment fails our insert instead (handled below).
                    existing = self._existing(conn, request)
                    if existing is not None:
                        return existing, False
                paid = request.payment.amount
                if refunded + request.amount.minor > paid.minor:
                    raise OverRefund(
                        f"refund of {request.amount} would exceed what is left of "
                        f"{paid} paid ({Money(paid.minor - refunded, paid.currency)} left)",
                        paid_minor=paid.minor, refunded_minor=refunded,
                        requested_minor=request.amount.minor, currency=paid.currency)
                if max_refunds is not None and count >= max_refunds:
                    raise InvalidRequest(
                        f"{request.payment.route.value} allows at most {max_refunds} "
                        f"refunds per payment", field="payment")
                self._insert_refund(
                    conn, refund_id=refund_id, key=request.idempotency_key,
                    fingerprint=request.fingerprint(),
                    request_json=_dumps(request.canonical()), payment_id=payment_id,
                    route=request.payment.route, amount=request.amount,
                    reason=request.reason, channel_refund_no=channel_refund_no,
                    merchant_order_no=request.payment.merchant_order_no,
                    next_check_at=next_check_at, arrival=arrival, rerouted_from=None,
                    now=now, first_event=(EventKind.REQUESTED, {
                        "idempotency_key": request.idempotency_key,
                        "amount_minor": request.amount.minor,
                        "currency": request.amount.currency, "paid_minor": paid.minor,
                        "refunded_before_minor": refunded, "reason": request.reason,
                        "channel_refund_no": channel_refund_no}))
                return Refund(
                    id=refund_id, idempotency_key=request.idempotency_key,
                    route=request.payment.route, payment=request.payment,
                    amount=request.amount, reason=request.reason,
                    status=RefundStatus.PENDING, channel_refund_no=channel_refund_no,
                    created_at=now, updated_at=now, next_check_at=next_check_at,
                    expected_arrival=arrival), True
        except IntegrityError:
            # Two callers with one key on PostgreSQL: the loser re-reads the winner's row.
            with self._tx() as conn:
                existing = self._existing(conn, request)
            if existing is None:
                # Not a same-key race: the new refund id collided (64 random bits), or
                # another unique rule broke. Nothing was stored and nothing sent.
                raise StoreUnavailable("the reservation hit a uniqueness conflict that "
                                       "is not this key; retry the request",
                                       operation="reserve") from None
            return existing, False

    # -- units of work ----------------------------------------------------------------
    @contextmanager
    def locked(self, refund_id: str, *, now: datetime, relaxed: bool = False,
               pipelined: bool = True) -> Iterator[UnitOfWork]:
        """One refund, locked, in one transaction: ``tx.current``, ``tx.record(attempt)``,
        ``tx.apply(change)``; committed when the block ends, rolled back if it raises.

        ``relaxed``: the caller records something the channel will tell again (see the
        class docstring); a ``Change`` marked ``durable`` is synced regardless.
        ``pipelined`` (PostgreSQL): only the refund's read waits for an answer; a unit
        that adds a linked refund (Core statements, read at once) passes False."""
        with self._tx(relaxed=relaxed, pipelined=pipelined) as conn:
            tx = UnitOfWork(self, conn, self._load(conn, refund_id, lock=True), now)
            yield tx
            tx.flush()

    @contextmanager
    def notifications(self, *, relaxed: bool = False) -> Iterator[NotificationBatch]:
        """Notifications in one transaction (one commit for a queue consumer's batch or
        a group commit; a batch of one for a lone one): ``batch.one(...)`` is each one's
        unit of work. In it the replay guard (nonce), the event-id guard and the refund's
        lookup go out together (one round trip in a PostgreSQL pipeline). ``tx.outcome``
        is ``replayed``, ``unknown_refund``, ``duplicate`` (the event id was applied
        before) or None (``tx.current`` is locked, to decide on). An event id is kept
        only once a change was applied: a refused notification leaves it unused, so its
        genuine redelivery is judged again."""
        with self._tx(relaxed=relaxed, pipelined=True) as conn:
            batch = NotificationBatch(self, conn)
            yield batch
            batch.close()

    def _open_notification(self, conn: Connection, route: Route, *,
                           channel_refund_no: str | None, replay_key: str | None,
                           event_id: str | None, now: datetime) -> NotificationWork:
        s = self._s
        nonce = None if not replay_key else s.insert_notification.run(
            conn, self._notice(route, "nonce", replay_key, now=now, refund_id=None,
                               outcome="received"))
        event = None if not event_id else s.insert_notification.run(
            conn, self._notice(route, "event", event_id, now=now, refund_id=None,
                               outcome="applied"))
        lookup = None if not channel_refund_no else s.refund_by_channel_no_locked.run(
            conn, {"no": channel_refund_no})
        fresh_nonce = nonce is None or s.insert_notification.fetch(conn, nonce) is not None
        event_row = None if event is None else s.insert_notification.fetch(conn, event)
        found = (None if lookup is None
                 else s.refund_by_channel_no_locked.fetch(conn, lookup))
        current = None if found is None else self._to_refund(
            self._driver_row(s.refund_by_channel_no_locked, found))
        outcome = ("replayed" if not fresh_nonce else "unknown_refund" if current is None
                   else "duplicate" if event is not None and event_row is None else None)
        tx = NotificationWork(self, conn, current, now, outcome)
        tx.event_row = event_row
        return tx

    def _close_notification(self, tx: NotificationWork) -> None:
        tx.flush()
        if tx.event_row is not None and not tx.applied:
            self._s.delete_notification.run(tx.conn, {"nid": tx.event_row[0]}).close()

    def _insert_refund(self, conn: Connection, *, refund_id: str, key: str, fingerprint: str,
                       request_json: str, payment_id: int, route: Route, amount: Money,
                       reason: str, channel_refund_no: str, next_check_at: datetime,
                       merchant_order_no: str,
                       arrival: ArrivalWindow | None, rerouted_from: str | None,
                       now: datetime, first_event: tuple[EventKind, Mapping[str, Any]]
                       ) -> None:
        """The one refund insert (a reservation and a reroute's linked refund), PENDING,
        with its first event. The insert returns its id and is read at once, so a unique
        key race surfaces right here as ``IntegrityError``."""
        self._s.insert_refund.one(conn, {
            "id": refund_id, "idempotency_key": key, "fingerprint": fingerprint,
            "request_json": request_json, "payment_id": payment_id, "route": route.value,
            "amount_minor": amount.minor, "currency": amount.currency, "reason": reason,
            "status": RefundStatus.PENDING.value, "channel_refund_no": channel_refund_no,
            "next_check_at": next_check_at, "check_count": 0, "bank_ack": "{}",
            "arrival_earliest": arrival.earliest if arrival else None,
            "arrival_latest": arrival.latest if arrival else None,
            "channel_refund_id": None, "succeeded_at": None, "failure_code": None,
            "failure_message": None, "received_account": None,
            "rerouted_from": rerouted_from, "rerouted_to": None, "linked_refunds": "[]",
            "abnormal_applied_at": None, "paid_after_release_at": None,
            "created_at": now, "updated_at": now, "version": 0})
        kind, data = first_event
        self._append_events(conn, refund_id, now, [(kind, data, None, RefundStatus.PENDING)],
                            first_seq=1)
        self._outbox(conn, refund_id=refund_id, key=key, merchant_order_no=merchant_order_no,
                     route=route, status_from=None, status_to=RefundStatus.PENDING,
                     amount=amount, now=now)

    def _outbox(self, conn: Connection, *, refund_id: str, key: str, merchant_order_no: str,
                route: Route, status_from: RefundStatus | None, status_to: RefundStatus,
                amount: Money, now: datetime) -> None:
        """The refund service's copy of a status change, in the change's transaction."""
        self._s.insert_outbox.run(conn, {
            "event_id": str(uuid.uuid4()), "refund_id": refund_id, "idempotency_key": key,
            "merchant_order_no": merchant_order_no, "route": route.value,
            "status_from": status_from.value if status_from else None,
            "status_to": status_to.value, "amount_minor": amount.minor,
            "currency": amount.currency, "at": now}).close()

    def _apply(self, conn: Connection, current: Refund, change: Change, now: datetime,
               events: list[_EventRow]) -> Refund:
        """Write ``change`` to a refund the caller has locked: the only map from a
        ``Change`` to columns. Returns the refund as it now is (no re-read)."""
        written = change.update.written()
        if "received_account" in written:
            written["received_account"] = mask_stored_account(
                written["received_account"])[:128]
        columns: dict[str, Any] = {}
        for name, value in written.items():
            if name == "expected_arrival":
                columns["arrival_earliest"] = value.earliest
                columns["arrival_latest"] = value.latest
            elif name == "bank_ack":
                columns[name] = _dumps(value)
            elif name == "linked_refunds":
                columns[name] = json.dumps(list(value))
            else:
                columns[name] = value
        moved = change.moves(current.status)
        target = change.status if moved else None
        if target is not None:
            check(current.status, target)
            columns["status"] = target.value
        if change.durable or (target is not None and not target.counts_against_payment):
            # a released amount may be refunded another way at once: never unsynced
            self._want_sync(conn)
        if columns:
            columns.update(updated_at=now, version=current.version + 1)
            self._s.update_refund(frozenset(columns)).run(
                conn, {**columns, "_rid": current.id}).close()
        events.extend((note.kind, note.data, None, None) for note in change.notes)
        if target is not None:
            events.append((EventKind.STATUS_CHANGED,
                           {"reason": written.get("failure_code") or ""},
                           current.status, target))
            self._outbox(conn, refund_id=current.id, key=current.idempotency_key,
                         merchant_order_no=current.payment.merchant_order_no,
                         route=current.route, status_from=current.status, status_to=target,
                         amount=current.amount, now=now)
        if not columns:
            return current
        after: dict[str, Any] = {**written, "updated_at": now,
                                 "version": current.version + 1}
        if target is not None:
            after["status"] = target
        return replace(current, **after)

    def _add_linked(self, conn: Connection, original: Refund, *, new_id: str, route: Route,
                    arrival: ArrivalWindow | None, note: str, now: datetime) -> Refund:
        """A reroute's linked refund, under the payment's lock and its cap: the original's
        amount moves to it (a failed linked refund is replaced by a new one, which fits
        only if nothing else took the released amount meanwhile)."""
        payment_id, paid_minor, currency = conn.execute(
            select(payments.c.id, payments.c.amount_minor, payments.c.currency)
            .join(refunds, refunds.c.payment_id == payments.c.id)
            .where(refunds.c.id == original.id)).one()
        if not self._sqlite:
            conn.execute(select(payments.c.id).where(payments.c.id == payment_id)
                         .with_for_update())
        counted = conn.execute(select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
                               .where(refunds.c.payment_id == payment_id,
                                      counting_clause())).scalar_one()
        others = int(counted) - (original.amount.minor if original.counts_against_payment
                                 else 0)
        if others + original.amount.minor > paid_minor:
            raise OverRefund(
                f"rerouting {original.id} would exceed what is left of the payment: "
                f"{Money(paid_minor - others, currency)} left, {original.amount} needed",
                paid_minor=paid_minor, refunded_minor=others,
                requested_minor=original.amount.minor, currency=currency)
        attempt_no = len(original.linked_refunds) + 1
        key = (f"reroute:{original.id}" if attempt_no == 1
               else f"reroute:{original.id}:{attempt_no}")
        self._insert_refund(
            conn, refund_id=new_id, key=key, fingerprint=key,
            request_json=_dumps({"reroute_of": original.id, "route": route.value,
                                 "amount_minor": str(original.amount.minor)}),
            payment_id=int(payment_id), route=route, amount=original.amount,
            reason=original.reason, channel_refund_no=new_id, next_check_at=now,
            merchant_order_no=original.payment.merchant_order_no,
            arrival=arrival, rerouted_from=original.id, now=now,
            first_event=(EventKind.REROUTE_OF, {
                "original": original.id, "original_route": original.route.value,
                "note": note, "attempt_no": attempt_no}))
        return self._load(conn, new_id)

    def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[Refund]:
        """Refunds due for a check, hidden from other resolvers for ``lease``.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so several resolvers split the work.
        A refund last written "in the future" (its ``updated_at`` beyond
        ``CLOCK_TOLERANCE`` from now) was scheduled by a clock that ran ahead and was
        stepped back since: its ``next_check_at`` carries the step, so it is due now
        (a first check promised within a minute must not wait out a day's step).
        """
        scheduled_ahead = refunds.c.updated_at > now + CLOCK_TOLERANCE
        q = (select(refunds.c.id).where(and_(
            refunds.c.status.in_(_DUE),
            or_(refunds.c.next_check_at <= now, scheduled_ahead)))
             .order_by(refunds.c.next_check_at, refunds.c.id).limit(limit))
        if not self._sqlite:   # several resolvers split the work
            q = q.with_for_update(skip_locked=True)
        with self._tx() as conn:
            ids = [r.id for r in conn.execute(q)]
            if not ids:
                return []
            ahead = conn.execute(select(func.count()).where(
                refunds.c.id.in_(ids), scheduled_ahead)).scalar_one()
            if ahead:
                log.warning("clock.anomaly", reason="refunds written by a clock ahead of "
                            "this one are checked now", refunds=int(ahead))
            # updated_at too: a refund written by a clock that ran ahead is now this
            # clock's, so the anomaly is handled once
            conn.execute(update(refunds).where(refunds.c.id.in_(ids)).values(
                next_check_at=now + lease, updated_at=func.least(refunds.c.updated_at, now)
                if not self._sqlite else func.min(refunds.c.updated_at, now)))
            rows = conn.execute(self._select_refund().where(refunds.c.id.in_(ids))
                                .order_by(refunds.c.id))
            return [self._to_refund(r) for r in rows]

    def renew_lease(self, ids: Sequence[str], *, held_until: datetime,
                    until: datetime) -> int:
        """Extend this resolver's lease on ``ids`` that it still holds (their
        ``next_check_at`` is still the lease it set: a refund already checked, or taken
        by a peer after an expiry, is left alone). Returns how many were renewed."""
        return self._move_lease(ids, held_until=held_until, to=until)

    def release(self, ids: Sequence[str], *, held_until: datetime, now: datetime) -> int:
        """Hand claimed refunds back, due at ``now`` (a resolver asked to stop)."""
        return self._move_lease(ids, held_until=held_until, to=now)

    def _move_lease(self, ids: Sequence[str], *, held_until: datetime, to: datetime) -> int:
        if not ids:
            return 0
        with self._tx() as conn:
            result = conn.execute(update(refunds).where(
                refunds.c.id.in_(list(ids)), refunds.c.status.in_(_DUE),
                refunds.c.next_check_at == held_until).values(next_check_at=to))
            return int(result.rowcount)

    def remember_notification(self, route: Route, kind: str, key: str, *, now: datetime,
                              refund_id: str | None, outcome: str) -> bool:
        """Record a notification key; False when it was seen before (replay/duplicate)."""
        with self._tx() as conn:
            return self._remember(conn, route, kind, key, now=now, refund_id=refund_id,
                                  outcome=outcome)

    def _remember(self, conn: Connection, route: Route, kind: str, key: str, *,
                  now: datetime, refund_id: str | None, outcome: str,
                  read: bool = True) -> bool:
        """Insert a notification key unless seen; True when it was new. ``read=False``
        does not wait for the answer (pipelined) and returns True."""
        values = self._notice(route, kind, key, now=now, refund_id=refund_id, outcome=outcome)
        if not read:
            self._s.insert_notification.run(conn, values).close()
            return True
        return self._s.insert_notification.one(conn, values) is not None

    @staticmethod
    def _notice(route: Route, kind: str, key: str, *, now: datetime, refund_id: str | None,
                outcome: str) -> dict[str, Any]:
        """The ``notifications`` row of one key (kept to 128 characters)."""
        return {"route": route.value, "dedupe_kind": kind, "dedupe_key": key[:128],
                "refund_id": refund_id, "received_at": now, "outcome": outcome}

    # -- the outbox -------------------------------------------------------------------
    def events_since(self, cursor: int, limit: int) -> list[OutboxEvent]:
        """Status changes after ``cursor``, oldest first (at most ``limit``)."""
        o = refund_events_outbox.c
        with self._tx(readonly=True) as conn:
            rows = conn.execute(select(refund_events_outbox).where(o.id > cursor)
                                .order_by(o.id).limit(limit)).all()
        return [OutboxEvent(
            cursor=int(r.id), event_id=r.event_id, refund_id=r.refund_id,
            idempotency_key=r.idempotency_key, merchant_order_no=r.merchant_order_no,
            route=Route(r.route),
            status_from=RefundStatus(r.status_from) if r.status_from else None,
            status_to=RefundStatus(r.status_to), amount=Money(r.amount_minor, r.currency),
            at=r.at) for r in rows]

    def claim_consumer(self, name: str, *, owner: str, now: datetime,
                       lease: timedelta) -> int | None:
        """Take (or keep) the lease of consumer ``name``; its position, or None while
        another owner's lease runs. Several processes with one name: one owns a batch."""
        c = outbox_consumers.c
        with self._tx() as conn:
            q = select(outbox_consumers).where(c.name == name)
            row = conn.execute(q.with_for_update() if not self._sqlite else q).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(outbox_consumers.insert().values(
                            name=name, position=0, owner=owner, lease_until=now + lease,
                            updated_at=now))
                except IntegrityError:
                    return None          # another process created it this instant
                return 0
            if row.owner not in (None, owner) and row.lease_until is not None \
                    and row.lease_until > now:
                return None
            conn.execute(update(outbox_consumers).where(c.name == name).values(
                owner=owner, lease_until=now + lease, updated_at=now))
            return int(row.position)

    def advance_consumer(self, name: str, *, owner: str, position: int, now: datetime,
                         lease: timedelta) -> bool:
        """Commit the consumer's cursor after its handler returned; False if this owner
        lost the lease meanwhile (another process will redeliver from the old cursor)."""
        c = outbox_consumers.c
        with self._tx() as conn:
            done = conn.execute(update(outbox_consumers).where(
                c.name == name, c.owner == owner).values(
                position=func.greatest(c.position, position) if not self._sqlite
                else func.max(c.position, position),
                lease_until=now + lease, updated_at=now))
            return bool(done.rowcount)

    def release_consumer(self, name: str, *, owner: str, now: datetime) -> None:
        c = outbox_consumers.c
        with self._tx() as conn:
            conn.execute(update(outbox_consumers).where(c.name == name, c.owner == owner)
                         .values(owner=None, lease_until=None, updated_at=now))

    def prune_outbox(self, *, before: datetime) -> int:
        """Delete events older than ``before`` that every consumer has read."""
        o, c = refund_events_outbox.c, outbox_consumers.c
        with self._tx() as conn:
            slowest = conn.execute(select(func.min(c.position))).scalar()
            cond = o.at < before
            if slowest is not None:
                cond = and_(cond, o.id <= slowest)
            return int(conn.execute(refund_events_outbox.delete().where(cond)).rowcount)

    def sum_counting(self, route: Route, merchant_order_no: str) -> Money | None:
        """Σ of the refunds that still count against the payments of one merchant order
        (one order may have several trades; for checks and tests)."""
        with self._tx(readonly=True) as conn:
            found = conn.execute(select(payments.c.id, payments.c.currency).where(and_(
                payments.c.route == route.value,
                payments.c.merchant_order_no == merchant_order_no))).all()
            if not found:
                return None
            total = conn.execute(select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
                                 .where(refunds.c.payment_id.in_([r.id for r in found]),
                                        counting_clause())).scalar_one()
            return Money(int(total), found[0].currency)


class UnitOfWork:
    """One locked refund inside one transaction (``RefundStore.locked``).

    ``current`` is the refund as it is now (it follows each ``apply``); ``record`` keeps
    a channel call as evidence; ``apply`` writes a ``gateway.lifecycle.Change``. Events
    are appended when the block ends, in the order they were made."""

    def __init__(self, store: RefundStore, conn: Connection, current: Refund | None,
                 now: datetime) -> None:
        self._store = store
        self._conn = conn
        self._current = current
        self._now = now
        self._events: list[_EventRow] = []

    @property
    def current(self) -> Refund:
        if self._current is None:
            raise RefundNotFound("no refund in this unit of work")
        return self._current

    def record(self, attempt: Attempt) -> None:
        """A channel call made for this refund, with its redacted answer."""
        raw = redact_mapping(attempt.raw)
        self._store._s.insert_attempt.run(self._conn, {
            "refund_id": self.current.id, "operation": attempt.operation,
            "started_at": attempt.started_at, "finished_at": attempt.finished_at,
            "outcome": attempt.outcome, "http_status": attempt.http_status,
            "code": attempt.code, "request_id": attempt.request_id,
            "raw": _dumps(raw)}).close()
        self._events.append((EventKind.ATTEMPT, {
            "operation": attempt.operation, "outcome": attempt.outcome,
            "http_status": attempt.http_status, "code": attempt.code,
            "request_id": attempt.request_id,
            "duration_ms": int((attempt.finished_at - attempt.started_at)
                               .total_seconds() * 1000),
            "answer": raw}, None, None))

    def apply(self, change: Change) -> Refund:
        if change.is_empty:
            return self.current
        self._current = self._store._apply(self._conn, self.current, change, self._now,
                                           self._events)
        return self._current

    def add_linked(self, *, new_id: str, route: Route, arrival: ArrivalWindow | None,
                   note: str) -> Refund:
        """Insert a reroute's linked refund for ``current`` under the payment's cap."""
        return self._store._add_linked(self._conn, self.current, new_id=new_id,
                                       route=route, arrival=arrival, note=note,
                                       now=self._now)

    def flush(self) -> None:
        if self._events and self._current is not None:
            self._store._append_events(self._conn, self._current.id, self._now,
                                       self._events)
        self._events = []


class NotificationWork(UnitOfWork):
    """``RefundStore.notification``'s unit of work: ``outcome`` says whether there is a
    refund to decide on; ``applied`` once a change was written."""

    def __init__(self, store: RefundStore, conn: Connection, current: Refund | None,
                 now: datetime, outcome: str | None) -> None:
        super().__init__(store, conn, current, now)
        self.outcome = outcome
        self.applied = False
        self.event_row: tuple[Any, ...] | None = None

    @property
    def conn(self) -> Connection:
        return self._conn

    def apply(self, change: Change) -> Refund:
        if self.outcome is None:
            self.applied = True
        return super().apply(change)


class NotificationBatch:
    """``RefundStore.notifications``: each ``one(...)`` is a notification's unit of
    work inside the batch's one transaction (closed before the next is opened)."""

    def __init__(self, store: RefundStore, conn: Connection) -> None:
        self._store = store
        self._conn = conn
        self._open: NotificationWork | None = None

    def one(self, route: Route, *, channel_refund_no: str | None, replay_key: str | None,
            event_id: str | None, now: datetime) -> NotificationWork:
        self.close()
        self._open = self._store._open_notification(
            self._conn, route, channel_refund_no=channel_refund_no, replay_key=replay_key,
            event_id=event_id, now=now)
        return self._open

    def close(self) -> None:
        if self._open is not None:
            self._store._close_notification(self._open)
            self._open = None
