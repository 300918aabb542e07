"""The platform side of a reconciliation: the gateway's refunds for a window, from the
store (SQLAlchemy Core over ``refunds`` + ``payments``) or from the refund service's CSV
export. Returns a polars frame with ``matching.PLATFORM_SCHEMA``. Read-only.

CSV columns: ``refund_id, route, merchant_order_no, channel_trade_no, channel_refund_no,
amount, currency, status, created_at, succeeded_at``; ``amount`` in yuan (``12.30``,
``Money.parse`` rules), ``status`` a ``RefundStatus`` value, times ISO 8601 with an offset.
A bad row is a ``PlatformInputError`` naming file and line (the CLI exits 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Final

import polars as pl
from sqlalchemy import Engine, or_, select

from gateway.errors import GatewayError
from gateway.models import RefundStatus, Route
from gateway.store.schema import payments, refunds
from reconciliation.matching import PLATFORM_SCHEMA
from reconciliation.statements.base import amount_minor

CSV_COLUMNS: Final = ["refund_id", "route", "merchant_order_no", "channel_trade_no",
                      "channel_refund_no", "amount", "currency", "status", "created_at",
                      "succeeded_at"]
_ISO: Final = "%Y-%m-%dT%H:%M:%S%.f%:z"


class PlatformInputError(GatewayError):
    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        super().__init__(f"{file}{'' if line is None else f':{line}'}: {message}")
        self.file, self.line = file, line


def _iso(col: str) -> pl.Expr:
    s = pl.col(col).str.strip_chars().str.replace(r"Z$", "+00:00").str.replace(" ", "T")
    return s.str.to_datetime(_ISO, strict=False, time_zone="UTC", time_unit="us")


def from_csv(path: Path, *, routes: Iterable[Route] | None = None) -> pl.DataFrame:
    name = path.name
    try:
        raw = pl.read_csv(path, infer_schema=False, empty_string_is_null=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise PlatformInputError(f"unreadable CSV ({str(exc).splitlines()[0]})",
                                 file=name) from exc
    missing = [c for c in CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise PlatformInputError(f"missing columns {', '.join(missing)}", file=name, line=1)
    df = raw.with_row_index("line", offset=2).with_columns(
        [pl.col(c).str.strip_chars() for c in CSV_COLUMNS]).with_columns(
        amount_minor("amount").alias("amount_minor"),
        _iso("created_at").alias("_created"),
        pl.when(pl.col("succeeded_at") == "").then(None).otherwise(_iso("succeeded_at"))
        .alias("_succeeded"))
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
        .when(pl.col("_created").is_null()).then(pl.lit("bad created_at (ISO 8601 with "
                                                        "offset expected)"))
        .when((pl.col("succeeded_at") != "") & pl.col("_succeeded").is_null()).then(
            pl.lit("bad succeeded_at")).otherwise(None))
    bad = df.select("line", problem.alias("p")).filter(pl.col("p").is_not_null())
    if bad.height:
        line, why = bad.row(0)
        more = f" (and {bad.height - 1} more bad rows)" if bad.height > 1 else ""
        raise PlatformInputError(f"{why}{more}", file=name, line=int(line))
    dup = df.filter(pl.col("channel_refund_no").is_duplicated())
    if dup.height:
        raise PlatformInputError("channel_refund_no " + str(dup.item(0, "channel_refund_no"))
                                 + " appears twice", file=name, line=int(dup.item(0, "line")))
    out = df.select(
        "refund_id", "route", "merchant_order_no", "channel_trade_no", "channel_refund_no",
        pl.lit(None, pl.String()).alias("channel_refund_id"), "amount_minor", "currency",
        "status", pl.col("_created").alias("created_at"),
        pl.col("_succeeded").alias("succeeded_at")).select(
        [pl.col(c).cast(t) for c, t in PLATFORM_SCHEMA.items()])
    if routes is not None:
        out = out.filter(pl.col("route").is_in([r.value for r in routes]))
    return out


def from_store(engine: Engine, start: datetime, end: datetime, routes: Iterable[Route],
               carried_refund_nos: Iterable[str] = ()) -> pl.DataFrame:
    """Refunds that succeeded in [start, end), or were created then and have not
    succeeded, plus those named by open carried-over items."""
    route_values = [r.value for r in routes]
    carried = list(carried_refund_nos)
    window = or_(
        (refunds.c.succeeded_at >= start) & (refunds.c.succeeded_at < end),
        refunds.c.succeeded_at.is_(None) & (refunds.c.created_at >= start)
        & (refunds.c.created_at < end))
    cond = window if not carried else or_(window, refunds.c.channel_refund_no.in_(carried))
    q = (select(refunds.c.id, refunds.c.route, payments.c.merchant_order_no,
                payments.c.channel_trade_no, refunds.c.channel_refund_no,
                refunds.c.channel_refund_id, refunds.c.amount_minor, refunds.c.currency,
                refunds.c.status, refunds.c.created_at, refunds.c.succeeded_at)
         .join_from(refunds, payments, refunds.c.payment_id == payments.c.id)
         .where(refunds.c.route.in_(route_values)).where(cond))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(q)]
    return pl.DataFrame(rows, schema=PLATFORM_SCHEMA, orient="row")
