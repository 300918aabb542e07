"""Alipay trade bill (``bill_type=trade``, CH §4.6): a ZIP of GBK CSVs, or one detail CSV.

Owns the layout knowledge: ``#`` preamble and footer, tab-padded cells, full- or
half-width brackets in headers, refunds as ``业务类型=退款`` rows with NEGATIVE amounts and
``退款批次号/请求号`` = our channel refund number, and the ``(汇总)`` summary file, used with
the detail footer as a cross-check of counts and totals. Emits positive amounts (see
``model``). Every line of the trade bill is a completed movement, so status is succeeded.
Must not match or classify anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Final

import polars as pl

from gateway.errors import StatementError
from gateway.models import ChannelStatus, Route
from gateway.money import Money
from reconciliation.statements.archive import ZIP_MAGIC, ArchiveLimits, open_zip
from reconciliation.statements.base import (
    CHUNK_BYTES,
    BadLines,
    Sections,
    Source,
    Table,
    amount_minor,
    beijing_time,
    clean,
    fold_header,
    none,
    read_rows,
    split_csv_line,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import COLUMNS, LineKind

FORMAT: Final = "alipay-trade"
ROUTE: Final = Route.ALIPAY
ENCODING: Final = "gbk"

# Header cells, brackets folded to ASCII (CH §4.6).
COL_TRADE_NO, COL_ORDER_NO, COL_TYPE = "支付宝交易号", "商户订单号", "业务类型"
COL_FINISHED, COL_AMOUNT, COL_RECEIVED = "完成时间", "订单金额(元)", "商家实收(元)"
COL_REFUND_NO = "退款批次号/请求号"
# 业务类型 values. They are the only Chinese cells the fast path needs; after a comma
# (ASCII, never a GBK trail byte) the match is aligned to a character, so rewriting them
# to ASCII tokens is exact.
_TYPES: Final = {"交易": "TRADE", "退款": "REFUND"}
_REPLACE: Final = tuple((b"," + zh.encode("gbk"), b"," + tok.encode()) for zh, tok in
                        _TYPES.items())
_KIND: Final = {"TRADE": LineKind.PAYMENT.value, "REFUND": LineKind.REFUND.value}
_FOOTER_TRADES = re.compile(r"#交易合计[：:]\s*(\d+)笔")
_FOOTER_REFUNDS = re.compile(r"#退款合计[：:]\s*(\d+)笔[，,]\s*商家实收退款共\s*(-?[\d.]+)元")


def sniff(head: bytes, name: str) -> bool:
    if head.startswith(ZIP_MAGIC):
        return "业务明细" in name or "alipay" in name.lower() or _zip_has_detail(head)
    return head.startswith("#支付宝".encode("gbk"))


def _zip_has_detail(head: bytes) -> bool:
    # GBK entry names appear raw in the local header right after the magic.
    return "业务明细".encode("gbk") in head[:512]


def _is_header(text: str) -> bool:
    return not text.startswith("#") and COL_TRADE_NO in text


class _Totals:
    def __init__(self) -> None:
        self.trades = 0
        self.refunds = 0
        self.refund_received = 0


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    with source.open() as fh:
        if fh.read(4) != ZIP_MAGIC:
            fh.seek(0)
            yield from _detail(fh, source.name, bad, chunk_bytes, None)
            return
        fh.seek(0)
        with open_zip(fh, source.name, limits) as zr:
            details = [(n, i) for n, i in zr.entries if "汇总" not in n]
            summaries = [(n, i) for n, i in zr.entries if "汇总" in n]
            if len(details) != 1:
                raise StatementError(f"expected one detail CSV in the ZIP, found "
                                     f"{len(details)}", file=source.name)
            summary: dict[str, str] | None = None
            if summaries:
                with zr.open(summaries[0][1]) as sf:
                    summary = _summary_total(sf.read(1 << 20),
                                             f"{source.name}!{summaries[0][0]}")
            name, info = details[0]
            with zr.open(info) as df:
                yield from _detail(df, f"{source.name}!{name}", bad, chunk_bytes, summary)


def _detail(fh: IO[bytes], name: str, bad: BadLines, chunk_bytes: int,
            summary: dict[str, str] | None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    totals = _Totals()
    for table, first, raw in stream_sections(fh, name, encoding=ENCODING, is_header=_is_header,
                                             end_markers=[b"#"], sections=sections,
                                             chunk_bytes=chunk_bytes):
        batch = _rows(table, first, raw, name, bad)
        kinds = batch.get_column("kind")
        totals.trades += int((kinds == LineKind.PAYMENT.value).sum())
        refunds = batch.filter(pl.col("kind") == LineKind.REFUND.value)
        totals.refunds += refunds.height
        totals.refund_received += int(refunds.get_column("_received").sum() or 0)
        yield batch.select(COLUMNS)
    _check_footer(sections, totals, name, bad)
    if summary is not None:
        _check_summary(summary, totals, name, bad)


def _rows(table: Table, first: int, raw: bytes, name: str, bad: BadLines) -> pl.DataFrame:
    wanted = {"trade_no": table.index(COL_TRADE_NO, name),
              "order_no": table.index(COL_ORDER_NO, name),
              "type": table.index(COL_TYPE, name),
              "finished": table.index(COL_FINISHED, name),
              "amount": table.index(COL_AMOUNT, name),
              "received": table.index(COL_RECEIVED, name),
              "refund_no": table.index(COL_REFUND_NO, name)}
    df = read_rows(raw, first, len(table.header), wanted, source=name, bad=bad,
                   encoding=ENCODING, replacements=_REPLACE)
    df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
        amount_minor("amount").alias("_amount"),
        amount_minor("received").alias("_received"),
        beijing_time("finished").alias("time"),
        pl.col("type").replace_strict(_KIND, default=LineKind.OTHER.value).alias("kind"),
    )
    is_refund = pl.col("kind") == LineKind.REFUND.value
    problems = (
        pl.when(pl.col("_amount").is_null()).then(pl.lit(f"bad amount in {COL_AMOUNT}"))
        .when(pl.col("_received").is_null()).then(pl.lit(f"bad amount in {COL_RECEIVED}"))
        .when(pl.col("time").is_null()).then(pl.lit(f"bad time in {COL_FINISHED}"))
        .when(is_refund & (pl.col("refund_no") == ""))
        .then(pl.lit(f"refund row without {COL_REFUND_NO}"))
        .otherwise(None))
    df = bad.drop_bad(df, problems, name)
    return to_batch(
        df, route=ROUTE.value, source=name, kind=pl.col("kind"),
        refund_no=pl.col("refund_no"), refund_id=none(), order_no=pl.col("order_no"),
        trade_no=pl.col("trade_no"), amount=pl.col("_amount"),
        status=pl.lit(ChannelStatus.SUCCEEDED.value), time=pl.col("time"),
        extra={"_received": pl.col("_received")})


def _check_footer(sections: Sections, totals: _Totals, name: str, bad: BadLines) -> None:
    """Footer ``#交易合计`` / ``#退款合计`` against what was read (lines we dropped as bad
    are already reported, so a mismatch then is expected and not reported twice)."""
    if bad.errors and any(e.file == name for e in bad.errors):
        return
    for line, text in sections.trailer:
        if m := _FOOTER_TRADES.match(text.strip()):
            if int(m.group(1)) != totals.trades:
                bad.add(StatementError(f"footer says {m.group(1)} trades, file has "
                                       f"{totals.trades}", file=name, line=line))
        elif m := _FOOTER_REFUNDS.match(text.strip()):
            count, total = int(m.group(1)), Money.parse(m.group(2)).minor
            if count != totals.refunds or total != totals.refund_received:
                bad.add(StatementError(
                    f"footer says {count} refunds totalling {m.group(2)}, file has "
                    f"{totals.refunds} totalling {Money(totals.refund_received).format()}",
                    file=name, line=line))
        elif text.strip() and not text.startswith("#"):
            bad.add(StatementError("unexpected line after the detail table", file=name,
                                   line=line))


def _summary_total(data: bytes, name: str) -> dict[str, str]:
    """The ``合计`` row of ``…业务明细(汇总).csv``, keyed by folded header."""
    header: list[str] | None = None
    for raw in data.decode(ENCODING, errors="replace").splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        cells = [fold_header(c) for c in split_csv_line(raw)]
        if header is None:
            header = cells
        elif cells and cells[0] == "合计":
            return dict(zip(header, cells, strict=False))
    raise StatementError("summary file has no 合计 row", file=name)


def _check_summary(summary: dict[str, str], totals: _Totals, name: str,
                   bad: BadLines) -> None:
    if bad.errors and any(e.file == name for e in bad.errors):
        return
    for col, have in (("交易订单总笔数", totals.trades), ("退款订单总笔数", totals.refunds)):
        value = summary.get(col, "").strip()
        if value and value.isdigit() and int(value) != have:
            bad.add(StatementError(f"summary {col}={value}, detail has {have}", file=name))
