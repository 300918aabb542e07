"""WeChat Pay bills (CH §5.7, addendum §8): trade bill ALL / SUCCESS / REFUND and the
fund-flow bill.

UTF-8 CSV (first header cell may carry a BOM; CRLF or LF), delivered gzip
(``tar_type=GZIP``) or plain; all are accepted. Header lines are plain comma-separated;
every data and summary cell is the text after its one-backtick prefix, so a cell boundary
is ``,``+backtick and a comma inside a cell (商品名称, 商户数据包) is data (addendum §8:
parsers split on it; WxJava's ``WxPayBillResult`` keeps such rows by turning commas into
spaces first). Refund rows: trade bill ``交易状态=REFUND`` (amounts positive, 手续费
NEGATIVE with 5 decimals: the fee given back; ``商户退款单号`` = our channel refund number,
``微信退款单号`` = the channel's refund id), fund-flow ``业务类型=退款``/``支出``
(``业务凭证号`` = refund number, ``微信支付业务单号`` = refund id). The summary header
and row are checked against the rows read (counts and column totals, 手续费 net), a
disagreement reported with both figures. Parsing only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Final

import polars as pl

from gateway.errors import StatementError
from gateway.models import ChannelStatus, Route
from reconciliation.statements.archive import GZIP_MAGIC, ArchiveLimits, open_gzip
from reconciliation.statements.base import (
    CHUNK_BYTES,
    BadLines,
    Sections,
    Source,
    Table,
    amount_minor,
    beijing_time,
    clean,
    decimal_units,
    fold_header,
    format_units,
    none,
    parse_units,
    read_rows,
    split_csv_line,
    stream_sections,
    to_batch,
)
from reconciliation.statements.model import LineKind

FORMAT_TRADE: Final = "wechat-trade"
FORMAT_FUNDFLOW: Final = "wechat-fundflow"
ROUTE: Final = Route.WECHATPAY

TRADE_HEADER_START: Final = "交易时间"
FUND_HEADER_START: Final = "记账时间"
_TRADE_SUMMARY: Final = "总交易单数".encode()
_FUND_SUMMARY: Final = "资金流水总笔数".encode()

# 退款状态 (CH §5.7, §5.1 status enum). Unknown values are "processing": never success.
REFUND_STATUS: Final = {
    "SUCCESS": ChannelStatus.SUCCEEDED.value,
    "PROCESSING": ChannelStatus.PROCESSING.value,
    "ABNORMAL": ChannelStatus.ABNORMAL.value,
    "CLOSED": ChannelStatus.CLOSED.value,
    "FAIL": ChannelStatus.FAILED.value,
}
# 交易状态 of trade-bill rows (CH §5.7).
TRADE_KIND: Final = {"SUCCESS": LineKind.PAYMENT.value, "REFUND": LineKind.REFUND.value}

# A cell boundary in data and summary lines: a comma, then the next cell's backtick
# (addendum §8). It is rewritten to the ASCII unit separator, which no bill cell holds,
# and the rows are read as CSV with that one-byte separator (a backtick inside a cell
# breaks every parser, WeChat's own rule for description/attach included).
CELL_BOUNDARY: Final = b",`"
SEPARATOR: Final = "\x1f"
# Summary figure -> (the detail column it totals, decimals): the refund side and the fee.
# 手续费 has 5 decimals and its total is net of the fees refunds give back (addendum
# §8). The payment-side totals (应结订单总金额, 订单总金额) and 充值券退款总金额 are not
# checked: refunds are what this project reconciles, and hand-made bills disagree on
# whether a refund row repeats its order's 订单金额 (WeChat's own rows say 0.00).
_TRADE_TOTALS: Final = {"退款总金额": ("退款金额", 2), "申请退款总金额": ("申请退款金额", 2),
                        "手续费总金额": ("手续费", 5)}


def cells(line: str) -> list[str]:
    """The cells of one backtick-prefixed data or summary line (addendum §8)."""
    text = line.rstrip("\r\n")
    return [c.strip() for c in text.removeprefix("`").split(",`")] if text else []


def first_text_line(head: bytes) -> str:
    return head.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff")


def _plain_head(source: Source) -> bytes:
    head = source.head(65536)
    if head.startswith(GZIP_MAGIC):
        with source.open() as fh, open_gzip(fh, source.name, source.size()) as gz:
            return gz.read(4096)
    return head


def sniff_trade(head: bytes, source: Source) -> bool:
    return first_text_line(_plain_head(source) if head.startswith(GZIP_MAGIC) else head
                           ).startswith(TRADE_HEADER_START)


def sniff_fundflow(head: bytes, source: Source) -> bool:
    return first_text_line(_plain_head(source) if head.startswith(GZIP_MAGIC) else head
                           ).startswith(FUND_HEADER_START)


def _open_plain(fh: IO[bytes], source: Source, limits: ArchiveLimits | None) -> IO[bytes]:
    magic = fh.read(2)
    fh.seek(0)
    if magic == GZIP_MAGIC:
        return open_gzip(fh, source.name, source.size(), limits)
    return fh


def parse_trade_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                        limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    totals = _Totals()
    with source.open() as raw, _open_plain(raw, source, limits) as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8",
                is_header=lambda t: t.lstrip("\ufeff").startswith(TRADE_HEADER_START),
                end_markers=[_TRADE_SUMMARY], sections=sections, chunk_bytes=chunk_bytes):
            yield _trade_rows(table, first, data, source.name, bad, totals)
    _check_summary(sections, source.name, bad, totals)


class _Totals:
    """Rows read and the column totals the summary row is checked against (in 10^-places
    units of yuan, per ``_TRADE_TOTALS``); columns with unreadable cells are counted."""

    def __init__(self) -> None:
        self.rows = 0
        self.sums: dict[str, int] = {}
        self.unreadable: dict[str, int] = {}

    def add(self, df: pl.DataFrame, columns: dict[str, tuple[str, int]]) -> None:
        self.rows += df.height
        if not columns or not df.height:
            return
        got = df.select(
            *[decimal_units(c, p).sum().alias(f"s:{c}") for c, p in columns.values()],
            *[decimal_units(c, p).null_count().alias(f"n:{c}") for c, p in columns.values()],
        ).row(0, named=True)
        for total, (col, _places) in columns.items():
            self.sums[total] = self.sums.get(total, 0) + int(got[f"s:{col}"] or 0)
            self.unreadable[total] = self.unreadable.get(total, 0) + int(got[f"n:{col}"])


def _cell_bytes(data: bytes) -> bytes:
    return data.replace(CELL_BOUNDARY, SEPARATOR.encode())


def _trade_rows(table: Table, first: int, data: bytes, name: str, bad: BadLines,
                totals: _Totals) -> pl.DataFrame:
    is_refund_bill = "退款申请时间" in table.header
    wanted = {"time": table.index(TRADE_HEADER_START, name),
              "trade_no": table.index("微信订单号", name),
              "order_no": table.index("商户订单号", name),
              "state": table.index("交易状态", name),
              "currency": table.index("货币种类", name),
              "refund_id": table.index("微信退款单号", name),
              "refund_no": table.index("商户退款单号", name),
              "refunded": table.index("退款金额", name),
              "refund_status": table.index("退款状态", name),
              "paid": table.index("订单金额", name),
              "applied": table.index("申请退款金额", name)}
    if "手续费" in table.header:
        wanted["fee"] = table.header.index("手续费")
    if is_refund_bill:
        wanted["refund_at"] = table.index("退款成功时间", name)
        wanted["applied_at"] = table.index("退款申请时间", name)
    df = read_rows(_cell_bytes(data), first, len(table.header), wanted, source=name, bad=bad,
                   separator=SEPARATOR)
    df = df.with_columns([clean(c, backtick=True).alias(c) for c in wanted])
    kind = pl.col("state").replace_strict(TRADE_KIND, default=LineKind.OTHER.value)
    is_refund = kind == LineKind.REFUND.value
    # One time parse per row: the first non-empty of refund success / application /
    # trade time (REFUND bills), not three parses and a coalesce.
    cell = pl.col("time")
    if is_refund_bill:
        cell = pl.coalesce(*(pl.when(pl.col(c) != "").then(pl.col(c))
                             for c in ("refund_at", "applied_at")), cell)
    when = beijing_time(cell)
    df = df.with_columns(
        kind.alias("kind"),
        amount_minor(pl.when(is_refund).then(pl.col("applied")).otherwise(pl.col("paid")))
        .alias("_amount"),
        pl.when(is_refund).then(amount_minor("refunded")).otherwise(0).alias("_refunded"),
        when.alias("_time"),
        pl.when(is_refund)
        .then(pl.col("refund_status").replace_strict(REFUND_STATUS,
                                                     default=ChannelStatus.PROCESSING.value))
        .otherwise(pl.lit(ChannelStatus.SUCCEEDED.value)).alias("_status"),
    )
    problems = (
        pl.when(pl.col("_amount").is_null()).then(pl.lit("bad amount"))
        .when(pl.col("_refunded").is_null()).then(pl.lit("bad amount in 退款金额"))
        .when(pl.col("_time").is_null()).then(pl.lit("bad time"))
        .when((pl.col("kind") == LineKind.REFUND.value) & (pl.col("refund_no") == ""))
        .then(pl.lit("refund row without 商户退款单号"))
        .when(~pl.col("currency").is_in(["CNY", ""])).then(pl.lit("unsupported currency"))
        .otherwise(None))
    df = bad.drop_bad(df, problems, name)
    by_column = {"退款金额": "refunded", "申请退款金额": "applied", "手续费": "fee"}
    totals.add(df, {total: (by_column[col], places)
                    for total, (col, places) in _TRADE_TOTALS.items()
                    if by_column[col] in wanted})
    return to_batch(
        df, route=ROUTE.value, source=name, kind=pl.col("kind"),
        refund_no=pl.col("refund_no"),
        refund_id=pl.when(~pl.col("refund_id").is_in(["", "0"])).then(pl.col("refund_id")),
        order_no=pl.col("order_no"), trade_no=pl.col("trade_no"),
        amount=pl.col("_amount"), status=pl.col("_status"), time=pl.col("_time"))


def parse_fundflow_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                           limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    totals = _Totals()
    with source.open() as raw, _open_plain(raw, source, limits) as fh:
        for table, first, data in stream_sections(
                fh, source.name, encoding="utf8",
                is_header=lambda t: t.lstrip("\ufeff").startswith(FUND_HEADER_START),
                end_markers=[_FUND_SUMMARY], sections=sections, chunk_bytes=chunk_bytes):
            wanted = {"time": table.index(FUND_HEADER_START, source.name),
                      "biz_no": table.index("微信支付业务单号", source.name),
                      "biz_type": table.index("业务类型", source.name),
                      "direction": table.index("收支类型", source.name),
                      "amount": table.index("收支金额(元)", source.name),
                      "voucher": table.index("业务凭证号", source.name)}
            df = read_rows(_cell_bytes(data), first, len(table.header), wanted,
                           source=source.name, bad=bad, separator=SEPARATOR)
            df = df.with_columns([clean(c, backtick=True).alias(c) for c in wanted])
            is_refund = (pl.col("biz_type") == "退款") & (pl.col("direction") == "支出")
            df = df.with_columns(
                pl.when(is_refund).then(pl.lit(LineKind.REFUND.value))
                .otherwise(pl.lit(LineKind.OTHER.value)).alias("kind"),
                amount_minor("amount").alias("_amount"),
                beijing_time("time").alias("_time"))
            problems = (pl.when(pl.col("_amount").is_null()).then(pl.lit("bad amount"))
                        .when(pl.col("_time").is_null()).then(pl.lit("bad time"))
                        .when(is_refund & (pl.col("voucher") == ""))
                        .then(pl.lit("refund row without 业务凭证号"))
                        .otherwise(None))
            df = bad.drop_bad(df, problems, source.name)
            _add_fundflow(totals, df)
            yield to_batch(
                df, route=ROUTE.value, source=source.name, kind=pl.col("kind"),
                refund_no=pl.col("voucher"), refund_id=pl.col("biz_no"), order_no=none(),
                trade_no=none(), amount=pl.col("_amount"),
                status=pl.lit(ChannelStatus.SUCCEEDED.value), time=pl.col("_time"))
    _check_summary(sections, source.name, bad, totals)


def _add_fundflow(totals: _Totals, df: pl.DataFrame) -> None:
    """收入/支出 counts and amounts (fen) for ``资金流水总笔数,收入笔数,收入金额,支出笔数,
    支出金额`` (CH §5.7)."""
    totals.rows += df.height
    income, spent = pl.col("direction") == "收入", pl.col("direction") == "支出"
    got = df.select(income.sum().alias("收入笔数"), spent.sum().alias("支出笔数"),
                    pl.col("_amount").filter(income).sum().alias("收入金额"),
                    pl.col("_amount").filter(spent).sum().alias("支出金额")).row(0, named=True)
    for key, value in got.items():
        totals.sums[key] = totals.sums.get(key, 0) + int(value or 0)


_PLACES: Final = {**{total: places for total, (_c, places) in _TRADE_TOTALS.items()},
                  "收入金额": 2, "支出金额": 2}


def _check_summary(sections: Sections, name: str, bad: BadLines, totals: _Totals) -> None:
    """The summary header + row against the rows read (skipped when lines were dropped:
    those are reported already). Each disagreement names the figure and both values."""
    lines = [(n, t) for n, t in sections.trailer if t.strip()]
    if len(lines) < 2:
        bad.add(StatementError("summary block missing (file truncated?)", file=name))
        return
    (_, head), (line, row) = lines[0], lines[1]
    for n, _t in lines[2:]:
        bad.add(StatementError("unexpected line after the summary", file=name, line=n))
    if any(e.file == name for e in bad.errors):
        return
    values = dict(zip([fold_header(c) for c in split_csv_line(head)], cells(row),
                      strict=False))
    counts = {"总交易单数": totals.rows, "资金流水总笔数": totals.rows}
    for col, text in values.items():
        if col in counts or col.endswith("笔数"):
            have = counts.get(col, totals.sums.get(col))
            places = 0
        else:
            have, places = totals.sums.get(col), _PLACES.get(col, 2)
        if have is None:
            continue
        if totals.unreadable.get(col):
            detail = _TRADE_TOTALS[col][0] if col in _TRADE_TOTALS else col
            bad.add(StatementError(f"{totals.unreadable[col]} rows with an unreadable "
                                   f"{detail}; summary {col} {text} not checked",
                                   file=name, line=line))
            continue
        try:
            want = parse_units(text, places)
        except ValueError:
            bad.add(StatementError(f"summary {col} unreadable: {text!r}", file=name,
                                   line=line))
            continue
        if want != have:
            bad.add(StatementError(f"summary {col} is {text}, the rows add up to "
                                   f"{format_units(have, places)}", file=name, line=line))
