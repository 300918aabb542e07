"""Alipay bills (CH §4.5-4.6, addendum §7): the trade bill ZIP, or its detail CSV alone.

Owns the layout knowledge. The trade bill (``bill_type=trade``) is a ZIP of two GBK CSVs,
``…_业务明细.csv`` (the detail) and ``…_业务明细(汇总).csv`` (the summary), whose entry
names are GBK without the UTF-8 flag; each entry is told apart by its first line
(``#支付宝业务明细查询`` / ``#支付宝业务汇总查询``), its name only when that line says
nothing, so a mangled name cannot hide the detail. Detail: ``#`` preamble and footer,
tab-padded cells, full- or half-width brackets in headers, refunds as ``业务类型=退款`` rows
with NEGATIVE amounts and ``退款批次号/请求号`` = our channel refund number. The detail's
footer and the summary's ``合计`` row are checked against the rows read; a disagreement is
a reported problem with both figures (the ``BadLines`` log that reports show), never a
crash. The 账务明细 bill (``bill_type=signcustomer``) is refused with the bill to download
instead: it carries no refund request number to match on. Emits positive amounts (see
``model``); every trade bill line is a completed movement, so status is succeeded. Must
not match or classify anything.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final

import polars as pl

from gateway.archives import decode_name
from gateway.errors import StatementError
from gateway.models import ChannelStatus, Route
from reconciliation.statements.archive import ZIP_MAGIC, ArchiveLimits, ZipReader, open_zip
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
    format_units,
    none,
    parse_units,
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
COL_REFUND_NO, COL_FEE = "退款批次号/请求号", "服务费(元)"
# 业务类型 values. They are the only Chinese cells the fast path needs; after a comma
# (ASCII, never a GBK trail byte) the match is aligned to a character, so rewriting them
# to ASCII tokens is exact.
_TYPES: Final = {"交易": "TRADE", "退款": "REFUND"}
_KIND: Final = {"TRADE": LineKind.PAYMENT.value, "REFUND": LineKind.REFUND.value}
_FOOTER_TRADES = re.compile(r"#交易合计[：:]\s*(\d+)笔(?:[，,]\s*商家实收共\s*(-?[\d.]+)元)?")
_FOOTER_REFUNDS = re.compile(r"#退款合计[：:]\s*(\d+)笔[，,]\s*商家实收退款共\s*(-?[\d.]+)元")

# The parts of an Alipay bill download, by the title line each file starts with (CH
# §4.6, addendum §7: ``#支付宝业务汇总查询`` heads the summary; the 账务汇总 title is
# inferred from the same pattern and its entry name is the fallback).
DETAIL, SUMMARY, ACCOUNT, ACCOUNT_SUMMARY = "业务明细", "业务汇总", "账务明细", "账务汇总"
_TITLES: Final = {"#支付宝业务明细查询": DETAIL, "#支付宝业务汇总查询": SUMMARY,
                  "#支付宝账务明细查询": ACCOUNT, "#支付宝账务汇总查询": ACCOUNT_SUMMARY}
_NAME_MARKERS: Final = ("业务明细", "业务汇总", "账务明细", "账务汇总")
_SIGNCUSTOMER = (
    "this is Alipay's 账务明细 bill (bill_type=signcustomer, the account ledger): its "
    "lines carry 账务流水号, 业务流水号 and 商户订单号 but no refund request number "
    "(退款批次号/请求号), so its refunds cannot be matched to ours by key (every refund of "
    "one order shares those numbers). Download the trade bill instead: "
    "alipay.data.dataservice.bill.downloadurl.query with bill_type=trade, the ZIP of "
    "…_业务明细.csv and …_业务明细(汇总).csv (CH §4.5-4.6)")


def sniff(head: bytes, name: str) -> bool:
    if head.startswith(ZIP_MAGIC):
        names = f"{name} {_first_entry_name(head)}"
        return any(m in names for m in _NAME_MARKERS) or "alipay" in name.lower()
    return _part_of(head) is not None


def _first_entry_name(head: bytes) -> str:
    """The first local file header's name (APPNOTE 4.3.7: flags at 6, name length at 26,
    name from 30), decoded as ``gateway.archives.decode_name`` does."""
    if len(head) < 30:
        return ""
    (flags,), (length,) = struct.unpack_from("<H", head, 6), struct.unpack_from("<H", head, 26)
    return decode_name(head[30:30 + length], flags)


def _encoding(head: bytes) -> str:
    """GBK as Alipay writes it; UTF-8 (BOM or not) for a bill someone re-saved as UTF-8,
    which is how public samples are often kept (QuantumNous/new-api's test sample)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf8"
    text = head[:head.rfind(b"\n") + 1] or head
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return ENCODING
    return "utf8" if not decoded.isascii() else ENCODING


def _first_line(head: bytes) -> str:
    encoding = _encoding(head)
    line = head.split(b"\n", 1)[0].decode("utf-8" if encoding == "utf8" else ENCODING,
                                          errors="replace")
    return line.lstrip("\ufeff").strip().rstrip(",")


def _part_of(head: bytes) -> str | None:
    """Which Alipay bill file this is, by its title line; None when it is none of them."""
    first = _first_line(head)
    return next((part for title, part in _TITLES.items() if first.startswith(title)), None)


def _part_by_name(name: str) -> str | None:
    if ACCOUNT in name:
        return ACCOUNT
    if ACCOUNT_SUMMARY in name:
        return ACCOUNT_SUMMARY
    if DETAIL in name:
        return SUMMARY if "汇总" in name else DETAIL
    return SUMMARY if SUMMARY in name else None


def _is_header(text: str) -> bool:
    return not text.startswith("#") and COL_TRADE_NO in text


@dataclass
class _Totals:
    """What the detail rows add up to, signed as the file writes them (fen)."""

    trades: int = 0
    refunds: int = 0
    trade_received: int = 0
    refund_received: int = 0
    amount: int = 0
    received: int = 0
    fee: int = 0
    fee_unreadable: int = 0


@dataclass
class _Entry:
    part: str | None
    name: str
    info: zipfile.ZipInfo
    encoding: str


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    with source.open() as fh:
        head = fh.read(4096)
        fh.seek(0)
        if not head.startswith(ZIP_MAGIC):
            part = _part_of(head)
            if part in (ACCOUNT, ACCOUNT_SUMMARY):
                raise StatementError(_SIGNCUSTOMER, file=source.name)
            if part == SUMMARY:
                raise StatementError(
                    "this is the trade bill's summary (业务明细(汇总)) alone; read the "
                    "detail file (…_业务明细.csv) or the whole bill ZIP", file=source.name)
            yield from _detail(fh, source.name, _encoding(head), bad, chunk_bytes, None)
            return
        with open_zip(fh, source.name, limits) as zr:
            yield from _from_zip(zr, source.name, bad, chunk_bytes)


def _from_zip(zr: ZipReader, archive: str, bad: BadLines,
              chunk_bytes: int) -> Iterator[pl.DataFrame]:
    entries = []
    for name, info in zr.entries:
        with zr.open(info) as fh:
            head = fh.read(4096)
        entries.append(_Entry(_part_of(head) or _part_by_name(name), name, info,
                              _encoding(head)))
    listing = ", ".join(e.name for e in entries) or "none"
    details = [e for e in entries if e.part == DETAIL]
    if not details:
        if any(e.part in (ACCOUNT, ACCOUNT_SUMMARY) for e in entries):
            raise StatementError(_SIGNCUSTOMER, file=archive)
        raise StatementError(f"no 业务明细 detail file in the ZIP (entries: {listing})",
                             file=archive)
    if len(details) > 1:
        raise StatementError(f"{len(details)} 业务明细 detail files in the ZIP ({listing}); "
                             "a trade bill has one, beside its 汇总 summary", file=archive)
    summaries = [e for e in entries if e.part == SUMMARY]
    for e in entries:
        if e.part not in (DETAIL, SUMMARY):
            bad.add(StatementError(f"entry {e.name} is not part of the trade bill; ignored",
                                   file=archive))
    if len(summaries) > 1:
        bad.add(StatementError(f"{len(summaries)} summary files in the ZIP; the detail is "
                               f"checked against {summaries[0].name} only", file=archive))
    summary: _Summary | None = None
    if summaries:
        first = summaries[0]
        with zr.open(first.info) as fh:
            summary = _read_summary(fh.read(), f"{archive}!{first.name}", first.encoding, bad)
    detail = details[0]
    with zr.open(detail.info) as fh:
        yield from _detail(fh, f"{archive}!{detail.name}", detail.encoding, bad,
                           chunk_bytes, summary)


def _replacements(encoding: str) -> tuple[tuple[bytes, bytes], ...]:
    codec = "utf-8" if encoding == "utf8" else ENCODING
    return tuple((b"," + zh.encode(codec), b"," + tok.encode()) for zh, tok in _TYPES.items())


def _detail(fh: IO[bytes], name: str, encoding: str, bad: BadLines, chunk_bytes: int,
            summary: _Summary | None) -> Iterator[pl.DataFrame]:
    sections = Sections()
    totals = _Totals()
    replacements = _replacements(encoding)
    for table, first, raw in stream_sections(fh, name, encoding=encoding,
                                             is_header=_is_header, end_markers=[b"#"],
                                             sections=sections, chunk_bytes=chunk_bytes):
        batch = _rows(table, first, raw, name, bad, encoding, replacements)
        _add(totals, batch)
        yield batch.select(COLUMNS)
    _check_footer(sections, totals, name, bad)
    if summary is not None and not any(e.file == name for e in bad.errors):
        _check_summary(summary, totals, bad)


def _add(totals: _Totals, batch: pl.DataFrame) -> None:
    kind = pl.col("kind")
    trade, refund = kind == LineKind.PAYMENT.value, kind == LineKind.REFUND.value
    row = batch.select(
        trade.sum().alias("trades"), refund.sum().alias("refunds"),
        pl.col("_received").filter(trade).sum().alias("trade_received"),
        pl.col("_received").filter(refund).sum().alias("refund_received"),
        pl.col("_signed").sum().alias("amount"), pl.col("_received").sum().alias("received"),
        pl.col("_fee").sum().alias("fee"), pl.col("_fee").null_count().alias("fee_unreadable"),
    ).row(0, named=True)
    for key, value in row.items():
        setattr(totals, key, getattr(totals, key) + int(value or 0))


def _rows(table: Table, first: int, raw: bytes, name: str, bad: BadLines, encoding: str,
          replacements: tuple[tuple[bytes, bytes], ...]) -> pl.DataFrame:
    wanted = {"trade_no": table.index(COL_TRADE_NO, name),
              "order_no": table.index(COL_ORDER_NO, name),
              "type": table.index(COL_TYPE, name),
              "finished": table.index(COL_FINISHED, name),
              "amount": table.index(COL_AMOUNT, name),
              "received": table.index(COL_RECEIVED, name),
              "refund_no": table.index(COL_REFUND_NO, name),
              "fee": table.index(COL_FEE, name)}
    df = read_rows(raw, first, len(table.header), wanted, source=name, bad=bad,
                   encoding=encoding, replacements=replacements)
    df = df.with_columns([clean(c).alias(c) for c in wanted]).with_columns(
        amount_minor("amount").alias("_amount"),
        amount_minor("received").alias("_received"),
        # 服务费 is only summed for the summary check: an unreadable one is counted there,
        # it does not cost the line (the refund is still a refund).
        amount_minor("fee").alias("_fee"),
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
        extra={"_signed": pl.col("_amount"), "_received": pl.col("_received"),
               "_fee": pl.col("_fee")})


def _yuan(fen: int) -> str:
    return format_units(fen, 2)


def _check_footer(sections: Sections, totals: _Totals, name: str, bad: BadLines) -> None:
    """Footer ``#交易合计`` / ``#退款合计`` against what was read (lines we dropped as bad
    are already reported, so a mismatch then is expected and not reported twice)."""
    if any(e.file == name for e in bad.errors):
        return
    for line, raw in sections.trailer:
        text = raw.strip()
        if m := _FOOTER_TRADES.match(text):
            said = (int(m.group(1)), m.group(2))
            have = totals.trades, totals.trade_received
            if said[0] != have[0] or (said[1] is not None
                                      and _fen_or_none(said[1]) != have[1]):
                bad.add(StatementError(
                    f"footer says {said[0]} trades, 商家实收 {said[1] or '?'} yuan; the rows "
                    f"give {have[0]} trades, 商家实收 {_yuan(have[1])} yuan", file=name,
                    line=line))
        elif m := _FOOTER_REFUNDS.match(text):
            count, total = int(m.group(1)), m.group(2)
            if count != totals.refunds or _fen_or_none(total) != totals.refund_received:
                bad.add(StatementError(
                    f"footer says {count} refunds, 商家实收退款 {total} yuan; the rows give "
                    f"{totals.refunds} refunds, {_yuan(totals.refund_received)} yuan",
                    file=name, line=line))
        elif text and not text.startswith("#"):
            bad.add(StatementError("unexpected line after the detail table", file=name,
                                   line=line))


def _fen_or_none(text: str) -> int | None:
    try:
        return parse_units(text, 2)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Summary:
    """The ``合计`` row of ``…业务明细(汇总).csv``, keyed by folded header."""

    name: str
    line: int
    values: dict[str, str]


def _read_summary(data: bytes, name: str, encoding: str, bad: BadLines) -> _Summary | None:
    """The summary's ``合计`` row (addendum §7: one row per 门店, then ``合计``); a summary
    without one is reported and the check skipped."""
    header: list[str] | None = None
    text = data.decode("utf-8" if encoding == "utf8" else ENCODING, errors="replace")
    for line, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if raw.startswith("#") or not raw.strip():
            continue
        cells = [fold_header(c) for c in split_csv_line(raw)]
        if header is None:
            header = cells
        elif cells and cells[0] == "合计":
            return _Summary(name, line, dict(zip(header, cells, strict=False)))
    bad.add(StatementError("summary file has no 合计 row; the detail's totals are not "
                           "checked against it", file=name))
    return None


# 合计 columns -> what the detail rows add up to (CH §4.6 column names; 实收净额 is not in
# the detail and how Alipay derives it is not published, so it is not checked).
_SUMMARY_COUNTS: Final = {"交易订单总笔数": "trades", "退款订单总笔数": "refunds"}
_SUMMARY_SUMS: Final = {"订单金额(元)": "amount", "商家实收(元)": "received",
                        "服务费(元)": "fee"}


def _check_summary(summary: _Summary, totals: _Totals, bad: BadLines) -> None:
    def problem(text: str) -> None:
        bad.add(StatementError(text, file=summary.name, line=summary.line))

    for col, attr in (*_SUMMARY_COUNTS.items(), *_SUMMARY_SUMS.items()):
        said = summary.values.get(col, "").strip()
        if not said:
            continue
        have: int = getattr(totals, attr)
        money = col in _SUMMARY_SUMS
        if attr == "fee" and totals.fee_unreadable:
            problem(f"服务费 unreadable on {totals.fee_unreadable} detail rows; summary "
                    f"{col} {said} not checked")
            continue
        try:
            want = parse_units(said, 2) if money else int(said)
        except ValueError:
            problem(f"summary 合计 {col} unreadable: {said!r}")
            continue
        if want != have:
            shown = _yuan(have) if money else str(have)
            problem(f"summary 合计 {col} is {said}, the detail rows add up to {shown}")
