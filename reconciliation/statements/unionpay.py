"""UnionPay (bank card) settlement file, in the layout ``sandbox/unionpay.py`` documents
(modelled on UnionPay's 对账文件, simplified; CH §6 field names): UTF-8, ``\\n`` line ends,
a fixed header ``txnType|merId|orderId|txnTime|queryId|origQryId|txnAmt|currencyCode|
settleDate|traceNo|respCode|accNo``, then one ``|``-separated line per transaction, no
quoting, no trailer. Refund lines (``txnType=04``): ``orderId`` is our channel refund
number, ``queryId`` UnionPay's id for the refund (channel refund id), ``origQryId`` the
consume's queryId (our payment's channel trade number), ``txnAmt`` fen, ``txnTime``
Beijing, ``respCode`` ``00`` money reached the card / ``63`` failed after acceptance.
``accNo`` is masked by the channel and never read. Parsing only.
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
    read_rows,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import LineKind

FORMAT: Final = "unionpay-settlement"
ROUTE: Final = Route.BANKCARD
SEPARATOR: Final = "|"
HEADER: Final = ("txnType|merId|orderId|txnTime|queryId|origQryId|txnAmt|currencyCode|"
                 "settleDate|traceNo|respCode|accNo")
# CH §6 txnType; respCode of a listed transaction (sandbox/unionpay.py: 00 done, 63 failed
# after acceptance; CH §6: 03/04/05 still processing). Anything else is processing with
# the line kept: never success or failure on a code we do not know.
TXN_KIND: Final = {"01": LineKind.PAYMENT.value, "04": LineKind.REFUND.value}
RESP_STATUS: Final = {"00": ChannelStatus.SUCCEEDED.value, "63": ChannelStatus.FAILED.value,
                      "03": ChannelStatus.PROCESSING.value,
                      "04": ChannelStatus.PROCESSING.value,
                      "05": ChannelStatus.PROCESSING.value}
CURRENCY: Final = {"156": "CNY"}   # ISO 4217 numeric


def _is_header(text: str) -> bool:
    return text.lstrip("\ufeff").startswith("txnType|merId|orderId|")


def sniff(head: bytes, source: Source) -> bool:
    return _is_header(head.split(b"\n", 1)[0].decode("utf-8", errors="replace"))


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    with source.open() as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8", is_header=_is_header, end_markers=[],
                sections=sections, chunk_bytes=chunk_bytes, separator=SEPARATOR):
            wanted = {c: table.index(c, source.name) for c in
                      ("txnType", "orderId", "txnTime", "queryId", "origQryId", "txnAmt",
                       "currencyCode", "respCode")}
            df = read_rows(data, first, len(table.header), wanted, source=source.name,
                           bad=bad, separator=SEPARATOR)
            df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
                pl.col("txnType").replace_strict(TXN_KIND, default=LineKind.OTHER.value)
                .alias("kind"),
                pl.when(pl.col("txnAmt").str.contains(r"^\d{1,15}$"))
                .then(pl.col("txnAmt").cast(pl.Int64, strict=False)).alias("_amount"),
                beijing_time("txnTime", "%Y%m%d%H%M%S").alias("_time"),
                pl.col("respCode").replace_strict(
                    RESP_STATUS, default=ChannelStatus.PROCESSING.value).alias("_status"))
            refund = pl.col("kind") == LineKind.REFUND.value
            problem = (pl.when(pl.col("_amount").is_null()).then(pl.lit("bad txnAmt"))
                       .when(pl.col("_time").is_null()).then(pl.lit("bad txnTime"))
                       .when(~pl.col("currencyCode").is_in(list(CURRENCY)))
                       .then(pl.lit("unsupported currencyCode ") + pl.col("currencyCode"))
                       .when(refund & (pl.col("orderId") == ""))
                       .then(pl.lit("refund without orderId")).otherwise(None))
            df = bad.drop_bad(df, problem, source.name)
            yield to_batch(
                df, route=ROUTE.value, source=source.name, kind=pl.col("kind"),
                refund_no=pl.col("orderId"),
                refund_id=pl.when(pl.col("queryId") != "").then(pl.col("queryId")),
                order_no=pl.when(refund).then(None).otherwise(pl.col("orderId")),
                trade_no=pl.when(refund).then(pl.col("origQryId"))
                .otherwise(pl.col("queryId")),
                amount=pl.col("_amount"), status=pl.col("_status"), time=pl.col("_time"))
