"""Platform balance wallet ledger. PROVISIONAL layout until ``sandbox/balance.py``
defines it: a UTF-8 CSV with header ``entry_id,type,refund_no,order_no,amount,status,
created_at`` (``type`` ``refund`` | ``payment`` | other; ``amount`` in yuan; ``status``
``succeeded`` | ``processing`` | ``failed``; ``created_at`` Beijing
``YYYY-MM-DD hh:mm:ss``). ``entry_id`` is the wallet's id (the channel refund id).
Parsing only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import polars as pl

from gateway.models import Route
from reconciliation.statements.archive import ArchiveLimits
from reconciliation.statements.base import (
    CHUNK_BYTES,
    BadLines,
    Sections,
    Source,
    amount_minor,
    beijing_time,
    clean,
    none,
    read_rows,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import LineKind

FORMAT: Final = "balance-ledger"
ROUTE: Final = Route.BALANCE
_KIND: Final = {"refund": LineKind.REFUND.value, "payment": LineKind.PAYMENT.value}
_STATUS: Final = {"succeeded": "succeeded", "processing": "processing", "failed": "failed"}


def _is_header(text: str) -> bool:
    return text.lstrip("\ufeff").startswith("entry_id,")


def sniff(head: bytes, source: Source) -> bool:
    return _is_header(head.split(b"\n", 1)[0].decode("utf-8", errors="replace"))


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    with source.open() as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8", is_header=_is_header, end_markers=[b"#"],
                sections=sections, chunk_bytes=chunk_bytes):
            wanted = {c: table.index(c, source.name) for c in
                      ("entry_id", "type", "refund_no", "order_no", "amount", "status",
                       "created_at")}
            df = read_rows(data, first, len(table.header), wanted, source=source.name,
                           bad=bad)
            df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
                pl.col("type").replace_strict(_KIND, default=LineKind.OTHER.value)
                .alias("kind"),
                amount_minor("amount").alias("_amount"),
                beijing_time("created_at").alias("_time"),
                pl.col("status").replace_strict(_STATUS, default="processing")
                .alias("_status"))
            problem = (pl.when(pl.col("_amount").is_null()).then(pl.lit("bad amount"))
                       .when(pl.col("_time").is_null()).then(pl.lit("bad created_at"))
                       .when((pl.col("kind") == "refund") & (pl.col("refund_no") == ""))
                       .then(pl.lit("refund without refund_no")).otherwise(None))
            df = bad.drop_bad(df, problem, source.name)
            yield to_batch(
                df, route=ROUTE.value, source=source.name, kind=pl.col("kind"),
                refund_no=pl.col("refund_no"), refund_id=pl.col("entry_id"),
                order_no=pl.col("order_no"), trade_no=none(), amount=pl.col("_amount"),
                status=pl.col("_status"), time=pl.col("_time"))
