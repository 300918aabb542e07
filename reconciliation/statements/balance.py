"""Platform balance wallet ledger, in the layout ``sandbox/balance.py`` documents: UTF-8,
``\\n`` line ends, comma-separated, no quoting, header exactly
``wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,credited_at``; one
row per credit of the day (Beijing), ``amount_fen`` a positive integer, ``status``
``SUCCESS``, ``credited_at`` ISO 8601 with ``+08:00``; no totals. Every row is a refund
credited to a wallet: ``refund_no`` is our channel refund number, ``wallet_txn_id`` the
wallet's id (channel refund id). ``user_id`` is never read. Parsing only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import polars as pl

from gateway.models import ChannelStatus, Route
from reconciliation.statements.archive import ArchiveLimits
from reconciliation.statements.base import (
    CHUNK_BYTES,
    BadLines,
    Sections,
    Source,
    clean,
    iso_time,
    iso_time_fast,
    none,
    read_rows,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import LineKind

FORMAT: Final = "balance-ledger"
ROUTE: Final = Route.BALANCE
HEADER: Final = "wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,credited_at"
# sandbox/balance.py lists credits only (SUCCESS); any other word is processing, never
# success or failure.
STATUS: Final = {"SUCCESS": ChannelStatus.SUCCEEDED.value}


def _is_header(text: str) -> bool:
    return text.lstrip("\ufeff").startswith("wallet_txn_id,refund_no,")


def sniff(head: bytes, source: Source) -> bool:
    return _is_header(head.split(b"\n", 1)[0].decode("utf-8", errors="replace"))


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    with source.open() as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8", is_header=_is_header, end_markers=[],
                sections=sections, chunk_bytes=chunk_bytes):
            wanted = {c: table.index(c, source.name) for c in
                      ("wallet_txn_id", "refund_no", "order_no", "amount_fen", "currency",
                       "status", "credited_at")}
            df = read_rows(data, first, len(table.header), wanted, source=source.name,
                           bad=bad)
            df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
                pl.when(pl.col("amount_fen").str.contains(r"^\d{1,15}$"))
                .then(pl.col("amount_fen").cast(pl.Int64, strict=False)).alias("_amount"),
                pl.coalesce(iso_time_fast("credited_at"), iso_time("credited_at"))
                .alias("_time"),
                pl.col("status").replace_strict(
                    STATUS, default=ChannelStatus.PROCESSING.value).alias("_status"))
            problem = (pl.when(pl.col("_amount").is_null() | (pl.col("_amount") <= 0))
                       .then(pl.lit("bad amount_fen"))
                       .when(pl.col("_time").is_null()).then(pl.lit("bad credited_at"))
                       .when(pl.col("currency") != "CNY").then(pl.lit("unsupported currency"))
                       .when(pl.col("refund_no") == "").then(pl.lit("row without refund_no"))
                       .otherwise(None))
            df = bad.drop_bad(df, problem, source.name)
            yield to_batch(
                df, route=ROUTE.value, source=source.name,
                kind=pl.lit(LineKind.REFUND.value), refund_no=pl.col("refund_no"),
                refund_id=pl.col("wallet_txn_id"), order_no=pl.col("order_no"),
                trade_no=none(), amount=pl.col("_amount"), status=pl.col("_status"),
                time=pl.col("_time"))
