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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import IdempotencyConflict, InvalidRequest, OverRefund, RefundNotFound
from gateway.logging import redact_mapping
from gateway.models import (
    ArrivalWindow,
    Attempt,
    EventKind,
    Payment,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.money import Money
from gateway.states import check
from gateway.store.engine import sqlite_writer_turn
from gateway.store.schema import attempts, payments, refund_events, refunds
from gateway.store.statements import (
    Prepared,
    read_date_pg,
    read_date_sqlite,
    read_ts_pg,
    read_ts_sqlite,
    select_refund,
)
from gateway.store.statements import build as build_statements

_TS_COLUMNS = ("created_at", "updated_at", "succeeded_at", "next_check_at")
_DATE_COLUMNS = ("arrival_earliest", "arrival_latest")

_DUE = [RefundStatus.PENDING.value, RefundStatus.PROCESSING.value]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to change on a refund, decided under its lock from its current state."""

    status: RefundStatus | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[tuple[EventKind, Mapping[str, Any]]] = ()


def _merge(current: Refund, values: Mapping[str, Any], now: datetime) -> Refund:
    """The refund after ``values`` (column names) were written: no re-read needed."""
    changes: dict[str, Any] = {k: v for k, v in values.items() if k in _PLAIN_COLUMNS}
    if "status" in values:
        changes["status"] = RefundStatus(values["status"])
    if "arrival_earliest" in values:
        changes["expected_arrival"] = ArrivalWindow(values["arrival_earliest"],
                                                    values["arrival_latest"])
    return replace(current, **changes, updated_at=now, version=current.version + 1)


_PLAIN_COLUMNS = frozenset({
    "channel_refund_id", "succeeded_at", "next_check_at", "check_count", "failure_code",
    "failure_message", "received_account", "bank_ack", "rerouted_from", "rerouted_to"})


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
        self._s = build_statements(engine.dialect)
        self._read_ts = read_ts_pg if self._pg else read_ts_sqlite
        self._read_date = read_date_pg if self._pg else read_date_sqlite

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, readonly: bool = False, relaxed: bool = False,
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
        pg_relax, sqlite_relax = relax and self._pg, relax and not self._pg
        try:
            if readonly and not self._pg:
                conn = conn.execution_options(sqlite_begin="DEFERRED")
            driver: Any = conn.connection.driver_connection
            if sqlite_relax:   # SQLite takes this only outside a transaction
                driver.execute("PRAGMA synchronous=NORMAL")
            conn.info[_SYNC_WANTED] = False
            # SQLite: queue for the write lock. PostgreSQL: pipeline mode if asked.
            turn: AbstractContextManager[Any] = (
                (driver.pipeline() if pipelined else nullcontext()) if self._pg
                else nullcontext() if readonly else sqlite_writer_turn(conn))
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
                            user_id=m["user_id"]),
            amount=Money(m["amount_minor"], m["currency"]), reason=m["reason"],
            status=RefundStatus(m["status"]), channel_refund_no=m["channel_refund_no"],
            created_at=m["created_at"], updated_at=m["updated_at"],
            channel_refund_id=m["channel_refund_id"], succeeded_at=m["succeeded_at"],
            next_check_at=m["next_check_at"], check_count=m["check_count"],
            failure_code=m["failure_code"], failure_message=m["failure_message"],
            received_account=m["received_account"], bank_ack=json.loads(m["bank_ack"]),
            expected_arrival=arrival, rerouted_from=m["rerouted_from"],
            rerouted_to=m["rerouted_to"], version=m["version"],
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

    def find_by_channel_refund_no(self, channel_refund_no: str) -> Refund | None:
        with self._tx(readonly=True) as conn:
            row = conn.execute(self._select_refund().where(
                refunds.c.channel_refund_no == channel_refund_no)).first()
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
                       events: Sequence[tuple[EventKind, Mapping[str, Any],
                                              RefundStatus | None, RefundStatus | None]],
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

    def _append_event(self, conn: Connection, refund_id: str, at: datetime, kind: EventKind,
                      data: Mapping[str, Any], status_from: RefundStatus | None = None,
                      status_to: RefundStatus | None = None) -> None:
        self._append_events(conn, refund_id, at, [(kind, data, status_from, status_to)])

    @staticmethod
    def _payment_id(row: tuple[Any, ...] | None, payment: Payment) -> int:
        """The stored payment's id, once it is known to be the payment given."""
        assert row is not None  # noqa: S101 - an upsert with RETURNING returns the row
        payment_id, trade_no, amount_minor, currency = row
        differs = [name for name, stored, given in (
            ("channel_trade_no", trade_no, payment.channel_trade_no),
            ("amount", amount_minor, payment.amount.minor),
            ("currency", currency, payment.amount.currency)) if stored != given]
        if differs:
            raise InvalidRequest(
                f"payment {payment.merchant_order_no} was recorded with a different "
                f"{', '.join(differs)}", field="payment")
        return int(payment_id)

    def _refunded_minor(self, conn: Connection, route: Route, merchant_order_no: str,
                        key: str | None = None) -> tuple[int, int, str | None]:
        """Σ and count of the payment's refunds that count against it, and the id of its
        refund stored under ``key`` if there is one (one statement)."""
        return self._counted(self._s.counting_total.one(conn, self._count_args(
            route, merchant_order_no, key)))

    @staticmethod
    def _count_args(route: Route, merchant_order_no: str, key: str | None
                    ) -> dict[str, Any]:
        return {"route": route.value, "order": merchant_order_no, "key": key}

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
                "user_id": payment.user_id, "created_at": now}),
            s.counting_total.run(conn, self._count_args(
                payment.route, payment.merchant_order_no, request.idempotency_key))]
        try:
            existing = self._stored_under_key(s.refund_by_key.fetch(conn, sent[0]), request)
            if existing is not None:
                return existing, 0, (0, 0, None)
            payment_id = self._payment_id(s.upsert_payment.fetch(conn, sent[1]), payment)
            return None, payment_id, self._counted(s.counting_total.fetch(conn, sent[2]))
        finally:
            for cursor in sent:
                cursor.close()

    def reserve(self, request: RefundRequest, *, refund_id: str, channel_refund_no: str,
                now: datetime, next_check_at: datetime, arrival: ArrivalWindow | None,
                max_refunds: int | None) -> tuple[Refund, bool]:
        """Store the refund as PENDING, or return the one stored under the same key.

        Returns ``(refund, created)``. Raises ``IdempotencyConflict`` or ``OverRefund``.
        """
        try:
            # Pipelined on PostgreSQL (BEGIN rides with the first read, the events with
            # the COMMIT). Every statement whose failure matters is read at once: the
            # refund insert returns its id, so a same-key race fails right there with
            # its IntegrityError (told apart below), never later as PipelineAborted.
            with self._tx(pipelined=True) as conn:
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
                self._s.insert_refund.one(conn, {
                    "id": refund_id, "idempotency_key": request.idempotency_key,
                    "fingerprint": request.fingerprint(),
                    "request_json": _dumps(request.canonical()), "payment_id": payment_id,
                    "route": request.payment.route.value,
                    "amount_minor": request.amount.minor, "currency": request.amount.currency,
                    "reason": request.reason, "status": RefundStatus.PENDING.value,
                    "channel_refund_no": channel_refund_no, "next_check_at": next_check_at,
                    "check_count": 0, "bank_ack": "{}",
                    "arrival_earliest": arrival.earliest if arrival else None,
                    "arrival_latest": arrival.latest if arrival else None,
                    "channel_refund_id": None, "succeeded_at": None, "failure_code": None,
                    "failure_message": None, "received_account": None,
                    "rerouted_from": None, "rerouted_to": None,
                    "created_at": now, "updated_at": now, "version": 0})
                self._append_events(conn, refund_id, now, [(EventKind.REQUESTED, {
                    "idempotency_key": request.idempotency_key,
                    "amount_minor": request.amount.minor, "currency": request.amount.currency,
                    "paid_minor": paid.minor, "refunded_before_minor": refunded,
                    "reason": request.reason, "channel_refund_no": channel_refund_no,
                }, None, RefundStatus.PENDING)], first_seq=1)
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
                raise
            return existing, False

    def apply(self, refund_id: str, decide: Callable[[Refund], Decision | None], *,
              now: datetime, attempt: Attempt | None = None, relaxed: bool = False
              ) -> Refund:
        """Record ``attempt`` and apply ``decide(current)`` under the refund's lock.

        ``relaxed``: the caller records something the channel will tell again (see the
        class docstring); a decision that releases the amount is synced regardless.
        """
        with self._tx(relaxed=relaxed, pipelined=True) as conn:
            current = self._load(conn, refund_id, lock=True)
            events: list[tuple[EventKind, Mapping[str, Any], RefundStatus | None,
                               RefundStatus | None]] = []
            if attempt is not None:
                raw = redact_mapping(attempt.raw)
                self._s.insert_attempt.run(conn, {
                    "refund_id": refund_id, "operation": attempt.operation,
                    "started_at": attempt.started_at, "finished_at": attempt.finished_at,
                    "outcome": attempt.outcome, "http_status": attempt.http_status,
                    "code": attempt.code, "request_id": attempt.request_id,
                    "raw": _dumps(raw)}).close()
                events.append((EventKind.ATTEMPT, {
                    "operation": attempt.operation, "outcome": attempt.outcome,
                    "http_status": attempt.http_status, "code": attempt.code,
                    "request_id": attempt.request_id,
                    "duration_ms": int((attempt.finished_at - attempt.started_at)
                                       .total_seconds() * 1000),
                    "answer": raw}, None, None))
            return self._decide_locked(conn, current, decide, now, events)

    def _decide_locked(self, conn: Connection, current: Refund,
                       decide: Callable[[Refund], Decision | None], now: datetime,
                       events: list[tuple[EventKind, Mapping[str, Any], RefundStatus | None,
                                          RefundStatus | None]]) -> Refund:
        """Apply ``decide(current)`` to a refund the caller has locked."""
        refund_id = current.id
        decision = decide(current)
        if decision is None:
            self._append_events(conn, refund_id, now, events)
            return current
        values: dict[str, Any] = dict(decision.fields)
        target = decision.status
        changed = target is not None and target is not current.status
        if changed:
            assert target is not None  # noqa: S101 - narrowed by `changed`
            check(current.status, target)
            values["status"] = target.value
            if not target.counts_against_payment:
                self._want_sync(conn)
        stored = dict(values)
        if "bank_ack" in stored:
            stored["bank_ack"] = _dumps(stored["bank_ack"])
        if stored:
            stored.update(updated_at=now, version=current.version + 1)
            self._s.update_refund(frozenset(stored)).run(
                conn, {**stored, "_rid": refund_id}).close()
        events.extend((kind, data, None, None) for kind, data in decision.events)
        if changed:
            events.append((EventKind.STATUS_CHANGED,
                           {"reason": values.get("failure_code") or ""},
                           current.status, target))
        self._append_events(conn, refund_id, now, events)
        return _merge(current, values, now) if values else current

    def apply_notification(self, route: Route, *, channel_refund_no: str | None,
                           replay_key: str | None, event_id: str | None, now: datetime,
                           accept: Callable[[Refund], str | None],
                           decide: Callable[[Refund], Decision | None],
                           relaxed: bool = False) -> tuple[str, Refund | None]:
        """A verified notification, in one transaction: refuse a replayed nonce, find and
        lock the refund, let ``accept`` refuse it (route, amount), then apply ``decide``.

        Returns ``(outcome, refund)``: ``replayed``, ``unknown_refund``, the reason
        ``accept`` gave, or ``applied``. Only ``applied`` changes the refund.
        ``relaxed`` as for ``apply``.
        """
        s = self._s
        with self._tx(relaxed=relaxed, pipelined=True) as conn:
            # The replay guard and the refund's lookup are sent together and read after
            # (one round trip in a PostgreSQL pipeline). A replay returns before the
            # refund is used; its row lock ends with the transaction.
            nonce = None if not replay_key else s.insert_notification.run(
                conn, self._notice(route, "nonce", replay_key, now=now, refund_id=None,
                                   outcome="received"))
            lookup = None if not channel_refund_no else s.refund_by_channel_no_locked.run(
                conn, {"no": channel_refund_no})
            try:
                if nonce is not None and s.insert_notification.fetch(conn, nonce) is None:
                    return "replayed", None
                found = (None if lookup is None
                         else s.refund_by_channel_no_locked.fetch(conn, lookup))
            finally:
                if lookup is not None:
                    lookup.close()
            if found is None:
                return "unknown_refund", None
            current = self._to_refund(self._driver_row(s.refund_by_channel_no_locked, found))
            problem = accept(current)
            if problem is not None:
                return problem, current
            if event_id:
                self._remember(conn, route, "event", event_id, now=now, refund_id=current.id,
                               outcome="applied", read=False)
            return "applied", self._decide_locked(conn, current, decide, now, [])

    def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[Refund]:
        """Refunds due for a check, hidden from other resolvers for ``lease``.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so several resolvers split the work.
        """
        q = (select(refunds.c.id).where(and_(refunds.c.status.in_(_DUE),
                                              refunds.c.next_check_at <= now))
             .order_by(refunds.c.next_check_at, refunds.c.id).limit(limit))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        with self._tx() as conn:
            ids = [r.id for r in conn.execute(q)]
            if not ids:
                return []
            conn.execute(update(refunds).where(refunds.c.id.in_(ids)).values(
                next_check_at=now + lease))
            rows = conn.execute(self._select_refund().where(refunds.c.id.in_(ids))
                                .order_by(refunds.c.id))
            return [self._to_refund(r) for r in rows]

    def reroute(self, original_id: str, *, new_id: str, route: Route, now: datetime,
                arrival: ArrivalWindow | None, note: str) -> tuple[Refund, Refund]:
        """Replace an ABNORMAL refund by a linked refund on ``route``, atomically.

        The original becomes REROUTED (its amount released) and the linked refund takes
        the same amount in the same transaction, so the payment's total never moves.
        Calling it again returns the same pair.
        """
        with self._tx() as conn:
            original = self._load(conn, original_id, lock=True)
            if original.status is RefundStatus.REROUTED and original.rerouted_to:
                return original, self._load(conn, original.rerouted_to)
            check(original.status, RefundStatus.REROUTED)
            payment_row = conn.execute(
                select(refunds.c.payment_id).where(refunds.c.id == original_id)).scalar_one()
            if self._pg:
                conn.execute(select(payments.c.id).where(payments.c.id == payment_row)
                             .with_for_update())
            key = f"reroute:{original_id}"
            canonical = {"reroute_of": original_id, "route": route.value,
                         "amount_minor": str(original.amount.minor)}
            conn.execute(refunds.insert().values(
                id=new_id, idempotency_key=key, fingerprint=key, request_json=_dumps(canonical),
                payment_id=payment_row, route=route.value, amount_minor=original.amount.minor,
                currency=original.amount.currency, reason=original.reason,
                status=RefundStatus.PENDING.value, channel_refund_no=new_id,
                next_check_at=now, check_count=0, bank_ack="{}",
                arrival_earliest=arrival.earliest if arrival else None,
                arrival_latest=arrival.latest if arrival else None,
                rerouted_from=original_id, created_at=now, updated_at=now, version=0))
            self._append_event(conn, new_id, now, EventKind.REROUTE_OF, {
                "original": original_id, "original_route": original.route.value,
                "note": note}, status_to=RefundStatus.PENDING)
            conn.execute(update(refunds).where(refunds.c.id == original_id).values(
                status=RefundStatus.REROUTED.value, rerouted_to=new_id, next_check_at=None,
                updated_at=now, version=original.version + 1))
            self._append_event(conn, original_id, now, EventKind.REROUTED, {
                "linked_refund": new_id, "route": route.value, "note": note},
                status_from=original.status, status_to=RefundStatus.REROUTED)
            return self._load(conn, original_id), self._load(conn, new_id)

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

    def sum_counting(self, route: Route, merchant_order_no: str) -> Money | None:
        """Σ of a payment's refunds that still count against it (for checks and tests)."""
        with self._tx(readonly=True) as conn:
            row = conn.execute(select(payments).where(and_(
                payments.c.route == route.value,
                payments.c.merchant_order_no == merchant_order_no))).first()
            if row is None:
                return None
            total, _, _ = self._refunded_minor(conn, route, merchant_order_no)
            return Money(total, row.currency)

