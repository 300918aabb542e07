"""UnionPay (bank card) settlement file. PROVISIONAL layout until ``sandbox/bills.py``
defines it (the sandbox engineer owns the format; see issue 3): a UTF-8 CSV whose header
names UnionPay's own field names (CH §6): ``txnType`` (``01`` consume, ``04`` refund
(退货)), ``orderId`` (our channel refund number for refunds), ``origOrderId``,
``queryId`` (UnionPay's id: the channel refund id), ``txnAmt`` (fen), ``txnTime``
(``YYYYMMDDhhmmss`` Beijing), ``respCode`` (``00`` success, ``03/04/05`` processing,
other failed). Optional ``#`` comment lines. Parsing only.
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
    beijing_time,
    clean,
    none,
    read_rows,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import LineKind

FORMAT: Final = "unionpay-settlement"
ROUTE: Final = Route.BANKCARD
# CH §6 txnType / respCode tables.
TXN_KIND: Final = {"01": LineKind.PAYMENT.value, "04": LineKind.REFUND.value}
RESP_STATUS: Final = {"00": ChannelStatus.SUCCEEDED.value, "03": "processing",
                      "04": "processing", "05": "processing"}


def _is_header(text: str) -> bool:
    return not text.startswith("#") and "txnType" in text and "orderId" in text


def sniff(head: bytes, source: Source) -> bool:
    text = head.decode("utf-8", errors="replace")
    return any(_is_header(t.lstrip("\ufeff")) for t in text.splitlines()[:5])


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    with source.open() as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8", is_header=lambda t: _is_header(
                    t.lstrip("\ufeff")), end_markers=[b"#"], sections=sections,
                chunk_bytes=chunk_bytes):
            wanted = {c: table.index(c, source.name) for c in
                      ("txnType", "orderId", "origOrderId", "queryId", "txnAmt", "txnTime",
                       "respCode")}
            df = read_rows(data, first, len(table.header), wanted, source=source.name,
                           bad=bad)
            df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
                pl.col("txnType").replace_strict(TXN_KIND, default=LineKind.OTHER.value)
                .alias("kind"),
                pl.when(pl.col("txnAmt").str.contains(r"^\d{1,15}$"))
                .then(pl.col("txnAmt").cast(pl.Int64, strict=False)).alias("_amount"),
                beijing_time("txnTime", "%Y%m%d%H%M%S").alias("_time"),
                pl.col("respCode").replace_strict(RESP_STATUS, default="failed")
                .alias("_status"))
            problem = (pl.when(pl.col("_amount").is_null()).then(pl.lit("bad txnAmt"))
                       .when(pl.col("_time").is_null()).then(pl.lit("bad txnTime"))
                       .when((pl.col("kind") == "refund") & (pl.col("orderId") == ""))
                       .then(pl.lit("refund without orderId")).otherwise(None))
            df = bad.drop_bad(df, problem, source.name)
            refund = pl.col("kind") == LineKind.REFUND.value
            yield to_batch(
                df, route=ROUTE.value, source=source.name, kind=pl.col("kind"),
                refund_no=pl.col("orderId"),
                refund_id=pl.when(pl.col("queryId") != "").then(pl.col("queryId")),
                order_no=pl.when(refund).then(pl.col("origOrderId"))
                .otherwise(pl.col("orderId")),
                trade_no=none(), amount=pl.col("_amount"), status=pl.col("_status"),
                time=pl.col("_time"))
