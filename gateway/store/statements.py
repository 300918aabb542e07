"""The statements on the refund and notification paths: written as SQLAlchemy Core,
compiled once per dialect, run on the driver's cursor.

Why: these run about a dozen times per refund. Building a Core statement costs ~165 us
here, executing a prebuilt one through ``Connection.execute`` ~40 us (execution context,
events, result wrapping), the driver itself ~4 us. That per-statement machinery was most
of what the gateway added to a channel call (bench/bench_overhead.py), so the hot path
keeps SQLAlchemy for what it is good at (the schema, the dialect's SQL, transactions,
pooling: every statement here runs inside a ``Connection.begin()`` block) and skips it
per statement. ``Prepared.run`` converts parameters the way the column types would
(``bind``); ``RefundStore`` converts the refund row's timestamps (``read_ts``). Anything
off the hot path stays plain SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, literal_column, or_, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import Date, DateTime, NullType

from gateway.models import RefundStatus
from gateway.store.schema import (
    attempts,
    notifications,
    payments,
    refund_events,
    refund_events_outbox,
    refunds,
)

RELEASED = [s.value for s in RefundStatus if not s.counts_against_payment]

# What SQLAlchemy's SQLite DATETIME/DATE store (text), so rows written here and rows
# written through Core read back alike.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def select_refund() -> Any:
    """A refund joined with its payment: the columns ``RefundStore._to_refund`` reads."""
    return select(refunds, payments.c.route.label("p_route"),
                  payments.c.merchant_order_no, payments.c.channel_trade_no,
                  payments.c.merchant_account,
                  payments.c.amount_minor.label("p_amount_minor"),
                  payments.c.currency.label("p_currency"), payments.c.user_id,
                  ).join(payments, payments.c.id == refunds.c.payment_id)


def counting_clause() -> Any:
    """Refunds whose amount counts against their payment: not released, or released and
    then paid after all (``gateway.lifecycle``: paid after release). The statuses are
    inlined constants: an IN list would be an "expanding" parameter."""
    return or_(refunds.c.status.not_in([literal_column(f"'{v}'") for v in RELEASED]),
               refunds.c.paid_after_release_at.is_not(None))


def _bind_sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        # == strftime(_SQLITE_DATETIME), at a third of the cost
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _bind_mysql(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)   # DATETIME(6) holds UTC
    return value


def read_ts_mysql(value: Any) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _bind_pg(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value


def read_ts_sqlite(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def read_ts_pg(value: Any) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def read_date_sqlite(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(value)


def read_date_pg(value: Any) -> date | None:
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One compiled statement: its SQL and, for positional paramstyles, the order of
    its parameters. ``columns`` names the result columns, in order."""

    sql: str
    names: tuple[str, ...] | None
    columns: tuple[str, ...]
    bind: Any = field(repr=False)
    constants: Mapping[str, Any] = field(default_factory=dict)  # literals in the statement
    # Positions (in ``names``) of the parameters ``bind`` converts: dates, times and any
    # of unknown type. Only those go through it (a refund's insert has 29 parameters,
    # 3 of them times: binding all of them was a tenth of a notification's store work).
    temporal: tuple[int, ...] = ()
    # MySQL has no INSERT ... RETURNING (MySQL 8) and no ON CONFLICT DO NOTHING: an
    # INSERT [IGNORE] "returns" (lastrowid,) when it inserted a row, None when not.
    rowcount_result: bool = False

    def _params(self, values: Mapping[str, Any]) -> Any:
        bind = self.bind
        if self.constants:
            values = {**self.constants, **values}
        if self.names is None:
            return {k: bind(v) for k, v in values.items()}
        row = [values[n] for n in self.names]
        for i in self.temporal:
            row[i] = bind(row[i])
        return row

    def run(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """Execute on ``conn``'s driver connection (inside its transaction); returns the
        driver cursor."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, self._params(values))
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise _as_sqlalchemy_error(conn, self.sql, exc, cursor) from exc
        return cursor

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, [self._params(r) for r in rows])
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, self.sql, exc, cursor) from exc
        finally:
            cursor.close()

    def one(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        return self.fetch(conn, self.run(conn, values))

    def fetch(self, conn: Connection, cursor: Any) -> tuple[Any, ...] | None:
        """The first row of this statement, sent earlier with ``run`` (in a PostgreSQL
        pipeline, statements sent one after the other are answered in one round trip
        when their results are read afterwards); closes the cursor."""
        try:
            if self.rowcount_result:
                return (cursor.lastrowid,) if cursor.rowcount > 0 else None
            # In a PostgreSQL pipeline the statement's error arrives with its result.
            row = cursor.fetchone()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, self.sql, exc, cursor) from exc
        finally:
            cursor.close()
        return None if row is None else tuple(row)


def _as_sqlalchemy_error(conn: Connection, sql: str, exc: Any,
                         cursor: Any) -> BaseException:
    """What ``Connection.execute`` would have raised: the driver error wrapped in its
    SQLAlchemy class (``IntegrityError``, ``OperationalError``...), and a dropped
    connection invalidated so the pool does not hand it out again."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(exc)
    wrapped: BaseException = DBAPIError.instance(
        sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
        connection_invalidated=lost, dialect=dialect)
    return wrapped


def prepare(stmt: Any, dialect: Dialect, *, rowcount_result: bool = False) -> Prepared:
    compiled = stmt.compile(dialect=dialect)
    positional = dialect.paramstyle in ("qmark", "numeric", "format")
    names = tuple(compiled.positiontup) if positional else None
    temporal = () if names is None else tuple(
        i for i, n in enumerate(names) if _converted(compiled.binds[n].type))
    columns = tuple(c.key for c in getattr(stmt, "selected_columns", ()))
    bind = {"postgresql": _bind_pg, "mysql": _bind_mysql}.get(dialect.name, _bind_sqlite)
    constants = {k: v for k, v in compiled.params.items() if v is not None}
    return Prepared(sql=compiled.string, names=names, columns=columns, bind=bind,
                    constants=constants, rowcount_result=rowcount_result, temporal=temporal)


def _converted(type_: Any) -> bool:
    """Whether a parameter of this SQL type may hold a value ``bind`` converts."""
    return isinstance(type_, NullType) or issubclass(type_._type_affinity or NullType,
                                                     (DateTime, Date))


@dataclass(slots=True)
class Statements:
    """Prepared statements for one dialect; the comment gives each one's parameters."""

    dialect: Dialect
    refund_by_id: Prepared            # rid
    refund_by_id_locked: Prepared     # rid; FOR UPDATE OF refunds on PostgreSQL
    refund_by_key: Prepared           # key; adds fp, req (fingerprint, request_json)
    refund_by_channel_no_locked: Prepared  # no
    upsert_payment: Prepared          # payment columns; returns the stored row
    #                                   (MySQL: returns nothing, ``payment_locked`` reads it)
    payment_locked: Prepared | None   # route, trade: the stored row, locked (MySQL)
    counting_total: Prepared          # route, trade, key -> (Σ amount_minor, count) of the
    #                                   payment's refunds that count; id of the one with key
    insert_refund: Prepared           # every refunds column; returns the id
    insert_events: Prepared           # every refund_events column but id
    append_event: Prepared            # the same but seq: the refund's last seq + 1
    insert_attempt: Prepared          # every attempts column but id
    insert_outbox: Prepared           # every refund_events_outbox column but id
    insert_notification: Prepared     # notification columns; returns id, none on a dup
    delete_notification: Prepared     # nid: an event id kept for a refused notification
    _updates: dict[frozenset[str], Prepared] = field(default_factory=dict)

    def update_refund(self, columns: frozenset[str]) -> Prepared:
        """``UPDATE refunds SET <columns> WHERE id = :_rid``, one per set of columns."""
        prepared = self._updates.get(columns)
        if prepared is None:
            stmt = update(refunds).where(refunds.c.id == bindparam("_rid")).values(
                {c: bindparam(c) for c in sorted(columns)})
            prepared = self._updates[columns] = prepare(stmt, self.dialect)
        return prepared


def _insert_all(table: Any, skip: tuple[str, ...] = ()) -> Any:
    return table.insert().values({c.key: bindparam(c.key) for c in table.columns
                                  if c.key not in skip})


def _append_event() -> Any:
    """``INSERT ... SELECT`` numbering the event after the refund's last one, so a
    decision's events need no separate read of the last seq (the caller holds the
    refund's lock; run row by row, each row sees the one before)."""
    ev = refund_events.c
    return refund_events.insert().from_select(
        ["refund_id", "seq", "at", "kind", "status_from", "status_to", "data"],
        select(bindparam("refund_id", type_=ev.refund_id.type),
               func.coalesce(func.max(ev.seq), 0) + 1,
               bindparam("at", type_=ev.at.type), bindparam("kind", type_=ev.kind.type),
               bindparam("status_from", type_=ev.status_from.type),
               bindparam("status_to", type_=ev.status_to.type),
               bindparam("data", type_=ev.data.type),
               ).where(ev.refund_id == bindparam("refund_id")))


def build(dialect: Dialect) -> Statements:
    pg, my = dialect.name == "postgresql", dialect.name == "mysql"
    if my:
        return _build_mysql(dialect)
    insert = postgresql.insert if pg else sqlite.insert
    p = partial(prepare, dialect=dialect)
    by_id = select_refund().where(refunds.c.id == bindparam("rid"))
    by_no = select_refund().where(refunds.c.channel_refund_no == bindparam("no"))
    upsert = insert(payments).values(
        route=bindparam("route"), merchant_order_no=bindparam("merchant_order_no"),
        channel_trade_no=bindparam("channel_trade_no"),
        amount_minor=bindparam("amount_minor"), currency=bindparam("currency"),
        user_id=bindparam("user_id"), created_at=bindparam("created_at"),
        merchant_account=bindparam("account"))
    # DO UPDATE (a no-op assignment) rather than DO NOTHING: it returns the stored row
    # in the same statement and, on PostgreSQL, locks it as SELECT ... FOR UPDATE would,
    # so concurrent reservations of one payment are serialised (invariant 3).
    # The payment is the channel's trade (route, channel_trade_no): the cap is per trade,
    # whatever order number the caller spells (migration 0003).
    upsert_returning = upsert.on_conflict_do_update(
        index_elements=["route", "merchant_account", "channel_trade_no"],
        set_={"route": upsert.excluded.route},
    ).returning(payments.c.id, payments.c.merchant_order_no, payments.c.amount_minor,
                payments.c.currency)
    counting = counting_clause()
    notice = insert(notifications).values(
        route=bindparam("route"), dedupe_kind=bindparam("dedupe_kind"),
        dedupe_key=bindparam("dedupe_key"), refund_id=bindparam("refund_id"),
        received_at=bindparam("received_at"), outcome=bindparam("outcome"),
    ).on_conflict_do_nothing(index_elements=["route", "dedupe_kind", "dedupe_key"]
                             ).returning(notifications.c.id)
    return Statements(
        dialect=dialect,
        refund_by_id=p(by_id),
        refund_by_id_locked=p(by_id.with_for_update(of=refunds) if pg else by_id),
        refund_by_key=p(select_refund().add_columns(
            refunds.c.fingerprint.label("fp"), refunds.c.request_json.label("req")
        ).where(refunds.c.idempotency_key == bindparam("key"))),
        refund_by_channel_no_locked=p(by_no.with_for_update(of=refunds) if pg else by_no),
        upsert_payment=p(upsert_returning),
        payment_locked=None,
        counting_total=p(select(
            func.coalesce(func.sum(refunds.c.amount_minor).filter(counting), 0),
            func.count().filter(counting),
            func.max(refunds.c.id).filter(refunds.c.idempotency_key == bindparam("key")),
        ).where(refunds.c.payment_id == select(payments.c.id).where(
            payments.c.route == bindparam("route"),
            payments.c.merchant_account == bindparam("account"),
            payments.c.channel_trade_no == bindparam("trade")).scalar_subquery())),
        insert_refund=p(_insert_all(refunds).returning(refunds.c.id)),
        insert_events=p(_insert_all(refund_events, skip=("id",))),
        append_event=p(_append_event()),
        insert_attempt=p(_insert_all(attempts, skip=("id",))),
        insert_outbox=p(_insert_all(refund_events_outbox, skip=("id",))),
        insert_notification=p(notice),
        delete_notification=p(notifications.delete().where(
            notifications.c.id == bindparam("nid"))),
    )


def _build_mysql(dialect: Dialect) -> Statements:
    """MySQL 8 / MariaDB 10.6+: the same statements without what they lack. No RETURNING
    (the payment is read back locked by ``payment_locked``; inserts report a row by
    their rowcount), no ON CONFLICT (ON DUPLICATE KEY UPDATE, INSERT IGNORE), no FILTER
    on aggregates (CASE), no FOR UPDATE OF (the joined payment row is locked too)."""
    p = partial(prepare, dialect=dialect)
    by_id = select_refund().where(refunds.c.id == bindparam("rid"))
    by_no = select_refund().where(refunds.c.channel_refund_no == bindparam("no"))
    upsert = mysql.insert(payments).values(
        route=bindparam("route"), merchant_order_no=bindparam("merchant_order_no"),
        channel_trade_no=bindparam("channel_trade_no"),
        amount_minor=bindparam("amount_minor"), currency=bindparam("currency"),
        user_id=bindparam("user_id"), created_at=bindparam("created_at"),
        merchant_account=bindparam("account"))
    # a no-op assignment on the unique (route, channel_trade_no): the row is then locked
    upsert = upsert.on_duplicate_key_update(route=upsert.inserted.route)
    counting = counting_clause()
    return Statements(
        dialect=dialect,
        refund_by_id=p(by_id),
        refund_by_id_locked=p(by_id.with_for_update()),
        refund_by_key=p(select_refund().add_columns(
            refunds.c.fingerprint.label("fp"), refunds.c.request_json.label("req")
        ).where(refunds.c.idempotency_key == bindparam("key"))),
        refund_by_channel_no_locked=p(by_no.with_for_update()),
        upsert_payment=p(upsert, rowcount_result=True),
        payment_locked=p(select(payments.c.id, payments.c.merchant_order_no,
                                payments.c.amount_minor, payments.c.currency).where(
            payments.c.route == bindparam("route"),
            payments.c.merchant_account == bindparam("account"),
            payments.c.channel_trade_no == bindparam("channel_trade_no")).with_for_update()),
        counting_total=p(select(
            func.coalesce(func.sum(case((counting, refunds.c.amount_minor), else_=0)), 0),
            func.coalesce(func.sum(case((counting, 1), else_=0)), 0),
            func.max(case((refunds.c.idempotency_key == bindparam("key"), refunds.c.id))),
        ).where(refunds.c.payment_id == select(payments.c.id).where(
            payments.c.route == bindparam("route"),
            payments.c.merchant_account == bindparam("account"),
            payments.c.channel_trade_no == bindparam("trade")).scalar_subquery())),
        insert_refund=p(_insert_all(refunds), rowcount_result=True),
        insert_events=p(_insert_all(refund_events, skip=("id",))),
        append_event=p(_append_event()),
        insert_attempt=p(_insert_all(attempts, skip=("id",))),
        insert_outbox=p(_insert_all(refund_events_outbox, skip=("id",))),
        insert_notification=p(mysql.insert(notifications).prefix_with("IGNORE").values(
            route=bindparam("route"), dedupe_kind=bindparam("dedupe_kind"),
            dedupe_key=bindparam("dedupe_key"), refund_id=bindparam("refund_id"),
            received_at=bindparam("received_at"), outcome=bindparam("outcome")),
            rowcount_result=True),
        delete_notification=p(notifications.delete().where(
            notifications.c.id == bindparam("nid"))),
    )
