"""The platform side of a reconciliation: the gateway's refunds for a window, from the
store (SQLAlchemy Core over ``refunds`` + ``payments``) or from the refund service's CSV
export. Returns a polars frame with ``matching.PLATFORM_SCHEMA``. Read-only.

CSV columns: ``refund_id, route, merchant_order_no, channel_trade_no, channel_refund_no,
amount, currency, status, created_at, succeeded_at``; ``amount`` in yuan (``12.30``,
``Money.parse`` rules), ``status`` a ``RefundStatus`` value, times ISO 8601 with an offset;
optional ``rerouted_from`` (the refund this one took over after a reroute), passed on as
an extra column for the job's reroute chains; optional ``merchant_account`` (the account
of the route the payment came through, ``Payment.merchant_account``): a file without the
column, or a row with it empty, is the account ``default``. The column is read only to
scope a run to some accounts (``accounts=``, ``reconcile --account``): rows of other
accounts are left out, like rows of other routes. A bad row is a ``PlatformInputError``
naming file and line (the CLI exits 2).

Accounts: ``from_store``, ``from_csv_parts`` and ``paid_twice`` take ``accounts`` (None:
every account), so a run scoped to a shop's account sees that account's refunds only.
``known_refunds`` does not: it explains lines of the statements the run read (those
accounts' own), by channel refund number, which names one refund of the route whatever
account the store filed its payment under.

``known_refunds`` and ``reroute_chains`` read the store for the job: refunds by channel
refund number (statement lines of refunds outside the day's window), and the reroute
chain of a refund (the refund rerouted, then every refund that took its amount over).

``paid_twice``: the refunds the gateway saw paid after their amount was released
(``refunds.paid_after_release_at``, set with the ``paid_after_release`` event), read from
the store whatever the platform source, with the refunds that took over their amount.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import polars as pl
from sqlalchemy import ColumnElement, Engine, and_, or_, select

from gateway.errors import GatewayError
from gateway.models import RefundStatus, Route
from gateway.settings import DEFAULT_ACCOUNT
from gateway.store.schema import payments, refunds
from reconciliation.matching import PLATFORM_SCHEMA, Klass
from reconciliation.schema import recon_items
from reconciliation.statements.base import (
    CHUNK_BYTES,
    amount_minor,
    iso_time,
    iso_time_fast,
    iter_chunks,
)

CSV_COLUMNS: Final = ["refund_id", "route", "merchant_order_no", "channel_trade_no",
                      "channel_refund_no", "amount", "currency", "status", "created_at",
                      "succeeded_at"]
# The extra column a loader may add beside ``PLATFORM_SCHEMA`` (the job takes it off).
LINK_COLUMN: Final = "rerouted_from"
# The CSV's optional column naming the payment's merchant account (empty: ``default``).
ACCOUNT_COLUMN: Final = "merchant_account"


class PlatformInputError(GatewayError):
    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        super().__init__(f"{file}{'' if line is None else f':{line}'}: {message}")
        self.file, self.line = file, line


def _times(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """Parse ``col`` in place: the fast path for every row, the general parser only for
    the rows it left (so a file in the usual shape never pays for the general one)."""
    df = df.with_columns(iso_time_fast(col).alias(f"_{col}"))
    slow = df.select((pl.col(f"_{col}").is_null() & (pl.col(col) != "")).any()).item()
    if slow:
        df = df.with_columns(pl.coalesce(f"_{col}", iso_time(col)).alias(f"_{col}"))
    return df


def from_csv(path: Path, *, routes: Iterable[Route] | None = None,
             accounts: Collection[str] | None = None,
             chunk_bytes: int = CHUNK_BYTES) -> pl.DataFrame:
    """The whole export as one frame (checked for repeated refund numbers)."""
    df = pl.concat(from_csv_parts(path, routes=routes, accounts=accounts,
                                  chunk_bytes=chunk_bytes), how="vertical")
    # A refund number twice is a broken export (the number is the match key); the full
    # duplicate scan runs only when the cheap count says there is one.
    if df.select(pl.col("channel_refund_no").n_unique()).item() != df.height:
        dup = df.filter(pl.col("channel_refund_no").is_duplicated())
        raise PlatformInputError("channel_refund_no " + str(dup.item(0, "channel_refund_no"))
                                 + " appears twice", file=path.name)
    return df


def from_csv_parts(path: Path, *, routes: Iterable[Route] | None = None,
                   accounts: Collection[str] | None = None,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[pl.DataFrame]:
    """The refund service's export, streamed in chunks cut at line ends (a 10M-row export
    is never in memory, as text or as a frame): each chunk is parsed, checked and reduced
    to ``PLATFORM_SCHEMA`` and yielded before the next is read (repeated refund numbers
    are caught by ``from_csv`` or the engine). The export has one row per line (no quoted
    line breaks: the refund service writes none). ``accounts``: only rows of these
    merchant accounts (None: every row). Errors arise while iterating."""
    name = path.name
    wanted_routes = None if routes is None else [r.value for r in routes]
    wanted_accounts = None if accounts is None else sorted(accounts)
    try:
        with path.open("rb") as fh:
            header = fh.readline().decode("utf-8-sig").strip().split(",")
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise PlatformInputError(f"missing columns {', '.join(missing)}", file=name,
                                         line=1)
            yield pl.DataFrame(schema=PLATFORM_SCHEMA)
            line = 2
            for chunk in iter_chunks(fh, chunk_bytes):
                yield _chunk(chunk, header, line, name, wanted_routes, wanted_accounts)
                line += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    except OSError as exc:
        raise PlatformInputError(f"unreadable CSV ({exc.strerror})", file=name) from exc


def _chunk(data: bytes, header: list[str], first_line: int, name: str,
           routes: list[str] | None, accounts: list[str] | None) -> pl.DataFrame:
    wanted = [c for c in CSV_COLUMNS if c != "channel_trade_no"]   # not used in matching
    link = [LINK_COLUMN] if LINK_COLUMN in header else []
    account = [ACCOUNT_COLUMN] if accounts is not None and ACCOUNT_COLUMN in header else []
    wanted += link + account
    try:
        df = pl.read_csv(data, has_header=False, new_columns=header, infer_schema=False,
                         empty_string_is_null=False, columns=[header.index(c) for c in wanted],
                         truncate_ragged_lines=False)
    except pl.exceptions.PolarsError as exc:
        raise PlatformInputError(f"unreadable CSV near line {first_line} "
                                 f"({str(exc).splitlines()[0]})", file=name) from exc
    df = df.select(wanted).with_row_index("line", offset=first_line).with_columns(
        [pl.col(c).str.strip_chars() for c in wanted])
    if routes is not None:
        df = df.filter(pl.col("route").is_in(routes))
    if accounts is not None:
        df = df.filter(_csv_account(account).is_in(accounts))
    df = df.with_columns(amount_minor("amount").alias("amount_minor"))
    df = _times(_times(df, "created_at"), "succeeded_at")
    statuses = [s.value for s in RefundStatus]
    problem = (
        pl.when(pl.col("refund_id") == "").then(pl.lit("empty refund_id"))
        .when(~pl.col("route").is_in([r.value for r in Route])).then(
            pl.lit("unknown route ") + pl.col("route"))
        .when(pl.col("channel_refund_no") == "").then(pl.lit("empty channel_refund_no"))
        .when(pl.col("amount_minor").is_null() | (pl.col("amount_minor") <= 0)).then(
            pl.lit("bad amount ") + pl.col("amount"))
        .when(pl.col("currency") != "CNY").then(pl.lit("unsupported currency"))
        .when(~pl.col("status").is_in(statuses)).then(pl.lit("unknown status ") +
                                                      pl.col("status"))
        .when(pl.col("_created_at").is_null()).then(pl.lit("bad created_at (ISO 8601 with "
                                                           "offset expected)"))
        .when((pl.col("succeeded_at") != "") & pl.col("_succeeded_at").is_null()).then(
            pl.lit("bad succeeded_at")).otherwise(None))
    bad = df.select("line", problem.alias("p")).filter(pl.col("p").is_not_null())
    if bad.height:
        line, why = bad.row(0)
        more = f" (and {bad.height - 1} more bad rows)" if bad.height > 1 else ""
        raise PlatformInputError(f"{why}{more}", file=name, line=int(line))
    return df.select(
        "refund_id", "route", "merchant_order_no",
        pl.lit(None, pl.String()).alias("channel_trade_no"), "channel_refund_no",
        pl.lit(None, pl.String()).alias("channel_refund_id"), "amount_minor", "currency",
        "status", pl.col("_created_at").alias("created_at"),
        pl.col("_succeeded_at").alias("succeeded_at"), *link).select(
        [pl.col(c).cast(t) for c, t in PLATFORM_SCHEMA.items()],
        *[pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in link])


def _csv_account(column: list[str]) -> pl.Expr:
    """Each row's merchant account: the column's value, ``default`` when it is empty or
    the file has no such column."""
    if not column:
        return pl.lit(DEFAULT_ACCOUNT)
    value = pl.col(ACCOUNT_COLUMN)
    return pl.when(value == "").then(pl.lit(DEFAULT_ACCOUNT)).otherwise(value)


def _platform_columns() -> list[ColumnElement[Any]]:
    """``PLATFORM_SCHEMA``'s columns from ``refunds`` joined with ``payments``."""
    return [refunds.c.id, refunds.c.route, payments.c.merchant_order_no,
            payments.c.channel_trade_no, refunds.c.channel_refund_no,
            refunds.c.channel_refund_id, refunds.c.amount_minor, refunds.c.currency,
            refunds.c.status, refunds.c.created_at, refunds.c.succeeded_at]


def _of_accounts(accounts: Collection[str] | None) -> list[ColumnElement[bool]]:
    """The WHERE clause (none, or one) keeping refunds whose payment is of ``accounts``
    (None: every account)."""
    return [] if accounts is None else [payments.c.merchant_account.in_(sorted(accounts))]


def from_store(engine: Engine, start: datetime, end: datetime, routes: Iterable[Route],
               carried_refund_nos: Iterable[str] = (), *, links: bool = False,
               accounts: Collection[str] | None = None) -> pl.DataFrame:
    """Refunds that succeeded in [start, end), or were created then and have not
    succeeded, plus those named by open carried-over items; with ``accounts``, only
    those whose payment came through one of them. ``links``: with the ``rerouted_from``
    column too (``LINK_COLUMN``)."""
    route_values = [r.value for r in routes]
    carried = list(carried_refund_nos)
    window = or_(
        (refunds.c.succeeded_at >= start) & (refunds.c.succeeded_at < end),
        refunds.c.succeeded_at.is_(None) & (refunds.c.created_at >= start)
        & (refunds.c.created_at < end))
    cond = window if not carried else or_(window, refunds.c.channel_refund_no.in_(carried))
    extra = [refunds.c.rerouted_from] if links else []
    q = (select(*_platform_columns(), *extra)
         .join_from(refunds, payments, refunds.c.payment_id == payments.c.id)
         .where(refunds.c.route.in_(route_values), *_of_accounts(accounts)).where(cond))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(q)]
    schema = {**PLATFORM_SCHEMA, **({LINK_COLUMN: pl.String()} if links else {})}
    return pl.DataFrame(rows, schema=schema, orient="row")


def known_refunds(engine: Engine, keys: Iterable[tuple[str, str]]) -> pl.DataFrame:
    """The store's refunds with these (route, channel refund number) keys, whatever
    their day (``PLATFORM_SCHEMA``); a few at a time (they are statement lines the day's
    platform side did not have)."""
    wanted = sorted(set(keys))
    rows: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            q = (select(*_platform_columns())
                 .join_from(refunds, payments, refunds.c.payment_id == payments.c.id)
                 .where(refunds.c.channel_refund_no.in_([n for _, n in chunk])))
            want = set(chunk)
            rows += [tuple(r) for r in conn.execute(q) if (r[1], r[4]) in want]
    return pl.DataFrame(rows, schema=PLATFORM_SCHEMA, orient="row")


def reroute_chains(engine: Engine, refund_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """For each of ``refund_ids`` that is part of a reroute chain: the chain, the
    rerouted refund first, then the refunds that took its amount over, oldest first
    (``linked_refunds``, else ``rerouted_to``). Refunds in no chain are left out."""
    ids = sorted(set(refund_ids))
    if not ids:
        return {}
    c = refunds.c
    with engine.connect() as conn:
        found = {r.id: r for i in range(0, len(ids), 500) for r in conn.execute(
            select(c.id, c.rerouted_from, c.rerouted_to, c.linked_refunds)
            .where(c.id.in_(ids[i:i + 500])))}
        roots = {r.rerouted_from for r in found.values() if r.rerouted_from} - set(found)
        if roots:
            found.update({r.id: r for r in conn.execute(
                select(c.id, c.rerouted_from, c.rerouted_to, c.linked_refunds)
                .where(c.id.in_(sorted(roots))))})
    chains: dict[str, tuple[str, ...]] = {}
    for refund_id in ids:
        row = found.get(refund_id)
        if row is None:
            continue
        root = found.get(row.rerouted_from) if row.rerouted_from else row
        if root is None:
            continue
        linked = tuple(json.loads(root.linked_refunds or "[]")) or (
            (root.rerouted_to,) if root.rerouted_to else ())
        if linked:
            chains[refund_id] = (root.id, *linked)
    return chains


@dataclass(frozen=True)
class PaidTwice:
    """The store's refunds paid after their amount was released, for one run's routes.

    ``rows`` (``PLATFORM_SCHEMA``): those whose "paid twice" item is not resolved, added to
    every run so finance sees them whatever the statement and the day. ``numbers``:
    channel refund number -> route of every one (resolved too: loaded again, each is still
    classified paid twice). ``linked``: (route, number) -> the other refunds of the same
    release, oldest first (see ``paid_twice``)."""

    rows: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=PLATFORM_SCHEMA))
    numbers: dict[str, str] = field(default_factory=dict)
    linked: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


def paid_twice(engine: Engine, routes: Iterable[Route],
               accounts: Collection[str] | None = None) -> PaidTwice:
    """The refunds of ``routes`` (of ``accounts``' payments; None: every account) with
    ``paid_after_release_at`` set (DESIGN.md "paid twice"). Their linked refunds: the
    reroute chain (``linked_refunds``, else ``rerouted_to``) for a rerouted refund;
    otherwise the payment's other refunds whose amount counts against it (a failed or
    closed refund whose amount a later refund took). Two small queries: such refunds are
    an alarm, rare by construction."""
    route_values = [r.value for r in routes]
    item = and_(recon_items.c.route == refunds.c.route,
                recon_items.c.item_key == refunds.c.channel_refund_no)
    q = (select(*_platform_columns(), refunds.c.payment_id, refunds.c.linked_refunds,
                refunds.c.rerouted_to, recon_items.c["class"].label("item_class"),
                recon_items.c.state.label("item_state"))
         .join_from(refunds, payments, refunds.c.payment_id == payments.c.id)
         .outerjoin(recon_items, item)
         .where(refunds.c.paid_after_release_at.is_not(None),
                refunds.c.route.in_(route_values), *_of_accounts(accounts))
         .order_by(refunds.c.route, refunds.c.channel_refund_no))
    width = len(PLATFORM_SCHEMA)
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(q)]
        payment_ids = sorted({r[width] for r in found})
        others = [tuple(r) for r in conn.execute(
            select(refunds.c.id, refunds.c.payment_id, refunds.c.status,
                   refunds.c.paid_after_release_at)
            .where(refunds.c.payment_id.in_(payment_ids))
            .order_by(refunds.c.created_at, refunds.c.id))] if payment_ids else []
    counting: dict[int, list[str]] = {}
    for refund_id, payment_id, status, paid_after in others:
        if RefundStatus(status).counts_against_payment or paid_after is not None:
            counting.setdefault(payment_id, []).append(refund_id)
    rows, numbers, linked = [], {}, {}
    for r in found:
        refund_id, route, number = r[0], r[1], r[4]
        payment_id, chain, rerouted_to, item_class, item_state = r[width:]
        ids = tuple(json.loads(chain or "[]")) or ((rerouted_to,) if rerouted_to else ())
        numbers[number] = route
        linked[(route, number)] = ids or tuple(
            i for i in counting.get(payment_id, []) if i != refund_id)
        if not (item_class == Klass.PAID_TWICE.value and item_state == "resolved"):
            rows.append(r[:width])
    return PaidTwice(pl.DataFrame(rows, schema=PLATFORM_SCHEMA, orient="row"), numbers,
                     linked)
