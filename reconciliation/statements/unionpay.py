"""UnionPay (bank card) settlement file as UnionPay writes it (CHANNELS-ADDENDUM §1).

The file transfer (txnType 76) returns a ZIP; its ``INN<yymmdd><2 chars>ZM_<merId>``
member (ZM 一般交易明细) holds one fixed-width GBK record per cleared transaction: 42
fields counted in BYTES, one space after every field but the last, 607 bytes, CRLF. Read
by field position as UnionPay's demos do (official Java ``DemoBase.parseZMFile`` reads
ISO-8859-1 and slices bytes; .NET ``Form_7_2_FileTransfer`` slices GBK bytes): the text is
decoded as Latin-1, one character per byte, so character offsets are byte offsets and a
Chinese 二级商户简称 or 商户自定义域 never shifts a field. The key fields are ASCII by the
spec; a non-ASCII byte in one is a bad line. A bare ZM member (unzipped by hand, named as
UnionPay names it) reads the same. The ``RD…`` summary report is not read; a non-empty
``ZME_`` 差错明细 member is reported, not read. The old invented ``|``-separated file is
refused with a message. Parsing only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from itertools import accumulate
from pathlib import PurePosixPath
from typing import IO, Final

import polars as pl

from gateway.errors import StatementError
from gateway.models import ChannelStatus, Route
from reconciliation.statements.archive import ZIP_MAGIC, ArchiveLimits, open_zip
from reconciliation.statements.base import CHUNK_BYTES, BadLines, Source, iter_chunks, to_batch
from reconciliation.statements.model import COLUMNS, LineKind, empty_batch

FORMAT: Final = "unionpay-zm"
ROUTE: Final = Route.BANKCARD

# Addendum §1: the 42 widths of a ZM record (official Java DemoBase.parseZMFile, .NET
# Form_7_2_FileTransfer.aspx.cs, PHP parser lyenrowe/bill-parser UnionpayTxt.php); the
# official sample 802310048993424_20150905.zip proves 607 bytes a record.
WIDTHS: Final = (3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2,
                 6, 2, 4, 32, 1, 21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)
OFFSETS: Final = tuple(a + i for i, a in enumerate(accumulate((0, *WIDTHS[:-1]))))
RECORD_BYTES: Final = OFFSETS[-1] + WIDTHS[-1]                      # 607
SEPARATORS: Final = tuple(o + w for o, w in zip(OFFSETS[:-1], WIDTHS[:-1], strict=True))

# The fields read (1-based numbers of the addendum's table).
FIELDS: Final = {"trace_time": 5, "amount": 7, "query_id": 10, "order_id": 12,
                 "txn_type": 20, "orig_query_id": 27, "mer_id": 28, "orig_order_id": 41}
# Field 20 txnType (addendum §1: 01 消费, 04 退货, 31 消费撤销). A 消费撤销 gives the money
# back too and this platform never sends one, so it is a refund line that reconciliation
# shows as unknown to the platform rather than a line nobody looks at.
TXN_KIND: Final = {"01": LineKind.PAYMENT.value, "04": LineKind.REFUND.value,
                   "31": LineKind.REFUND.value}

# Member names (addendum §1; the demos test name[0:3]=="INN" and name[11:14]=="ZM_").
ZM_NAME: Final = re.compile(r"INN(\d{6})[0-9A-Za-z]{2}ZM_([0-9A-Za-z]+)")
ZME_NAME: Final = re.compile(r"INN(\d{6})[0-9A-Za-z]{2}ZME_([0-9A-Za-z]+)")
_ZIP_MEMBER: Final = re.compile(rb"INN\d{6}[0-9A-Za-z]{2}ZME?_")
# The official sample archive's name, <merId>_<YYYYMMDD>.zip (live names: UNCONFIRMED).
ARCHIVE_NAME: Final = re.compile(r"[0-9A-Za-z]{15}_\d{8}\.zip")
LEGACY_HEADER: Final = b"txnType|merId|orderId|"
LEGACY_MESSAGE: Final = (
    "this is the '|'-separated settlement file an earlier sandbox invented; UnionPay "
    "never writes it. Download the real file (file transfer, txnType 76: a ZIP with "
    "INN<yymmdd>..ZM_<merId>) with `refund-gateway reconcile` and no --statement, or pass "
    "that ZIP")
_ASCII_KEY: Final = r"^[\x21-\x7e]*$"      # printable ASCII, no inner blanks once trimmed


def sniff(head: bytes, source: Source) -> bool:
    """The ZIP (a ZM member in its first local header, or the sample's archive name), a
    bare ZM member, or the legacy file (refused by ``parse_batches`` with a message)."""
    if head.startswith(ZIP_MAGIC):
        return bool(_ZIP_MEMBER.search(head) or ARCHIVE_NAME.fullmatch(source.name))
    if head.startswith(LEGACY_HEADER):
        return True
    bare_name = ZM_NAME.search(PurePosixPath(source.name).name) is not None
    first = head.split(b"\n", 1)[0].removesuffix(b"\r")
    return bare_name or (len(first) == RECORD_BYTES
                         and all(first[p] == 0x20 for p in SEPARATORS))


def parse_batches(source: Source, bad: BadLines, *, chunk_bytes: int = CHUNK_BYTES,
                  limits: ArchiveLimits | None = None) -> Iterator[pl.DataFrame]:
    yielded = False
    with source.open() as fh:
        magic = fh.read(len(LEGACY_HEADER))
        fh.seek(0)
        if magic.startswith(LEGACY_HEADER):
            raise StatementError(LEGACY_MESSAGE, file=source.name, line=1)
        if not magic.startswith(ZIP_MAGIC):
            settle = _settle_date(PurePosixPath(source.name).name, source.name)
            for batch in _records(fh, source.name, settle, bad, chunk_bytes):
                yielded = True
                yield batch
        else:
            with open_zip(fh, source.name, limits) as zr:
                named = [(PurePosixPath(n.replace("\\", "/")).name, n, i)
                         for n, i in zr.entries]
                zm = [(b, n, i) for b, n, i in named if ZM_NAME.fullmatch(b)]
                if len(zm) != 1:
                    raise StatementError(f"expected one INN<yymmdd>..ZM_<merId> member in the "
                                         f"ZIP, found {len(zm)}", file=source.name)
                for base, name, info in named:
                    if ZME_NAME.fullmatch(base) and info.file_size:
                        bad.add(StatementError(
                            f"ZME 差错明细 member of {info.file_size} bytes is not read: "
                            "check its records by hand", file=f"{source.name}!{name}"))
                base, name, info = zm[0]
                where = f"{source.name}!{name}"
                with zr.open(info) as member:
                    for batch in _records(member, where, _settle_date(base, where), bad,
                                          chunk_bytes):
                        yielded = True
                        yield batch
    if not yielded:          # a day without transactions: an empty ZM member
        yield empty_batch()


def _settle_date(name: str, where: str) -> date:
    """The clearing date in the member name (``INN`` + yymmdd): field 5 has no year."""
    m = ZM_NAME.search(name)
    try:
        if m is None:
            raise ValueError(name)
        return datetime.strptime(m.group(1), "%y%m%d").date()  # noqa: DTZ007 - a date
    except ValueError:
        raise StatementError("cannot tell the settle date: a ZM file is named "
                             "INN<yymmdd>..ZM_<merId> (CHANNELS-ADDENDUM §1)",
                             file=where) from None


def _records(stream: IO[bytes], where: str, settle: date, bad: BadLines,
             chunk_bytes: int) -> Iterator[pl.DataFrame]:
    mer_id = ZM_NAME.search(PurePosixPath(where.rsplit("!", 1)[-1]).name)
    line_no = 1
    for chunk in iter_chunks(stream, chunk_bytes):
        lines = chunk.decode("latin-1").split("\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        df = pl.DataFrame({"raw": lines,
                           "line": pl.int_range(line_no, line_no + len(lines), eager=True)},
                          schema={"raw": pl.String(), "line": pl.Int64()})
        line_no += len(lines)
        df = df.with_columns(pl.col("raw").str.strip_suffix("\r")).filter(
            pl.col("raw") != "")
        if df.height:
            yield _batch(df, where, settle, mer_id.group(2) if mer_id else None, bad)


def _field(number: int) -> pl.Expr:
    i = number - 1
    return pl.col("raw").str.slice(OFFSETS[i], WIDTHS[i])


def _batch(df: pl.DataFrame, where: str, settle: date, mer_id: str | None,
           bad: BadLines) -> pl.DataFrame:
    df = df.with_columns(
        pl.col("raw").str.len_chars().alias("_bytes"),
        pl.concat_str([pl.col("raw").str.slice(p, 1) for p in SEPARATORS]).alias("_seps"),
        *[_field(n).str.strip_chars(" ").alias(name) for name, n in FIELDS.items()])
    df = df.with_columns(
        pl.col("txn_type").replace_strict(TXN_KIND, default=LineKind.OTHER.value)
        .alias("kind"),
        pl.when(pl.col("amount").str.contains(r"^\d{12}$"))
        .then(pl.col("amount").cast(pl.Int64, strict=False)).alias("_amount"),
        _trace_time(settle).alias("_time"))
    refund = pl.col("kind") == LineKind.REFUND.value
    keys = ("order_id", "query_id", "orig_query_id", "orig_order_id", "mer_id")
    problem = (
        pl.when(pl.col("_bytes") != RECORD_BYTES)
        .then(pl.lit("record is ") + pl.col("_bytes").cast(pl.String)
              + pl.lit(f" bytes, a ZM record is {RECORD_BYTES}"))
        .when(pl.col("_seps") != " " * len(SEPARATORS))
        .then(pl.lit("fields are not where the ZM layout puts them (no blank between them)"))
        .when(~pl.col("txn_type").str.contains(r"^\d{2}$")).then(pl.lit("bad txnType (20)"))
        .when(pl.col("_amount").is_null()).then(pl.lit("bad 交易金额 (7): not n12"))
        .when(pl.col("_time").is_null()).then(pl.lit("bad 交易传输时间 (5): not MMDDhhmmss"))
        .when(~pl.all_horizontal([pl.col(k).str.contains(_ASCII_KEY) for k in keys]))
        .then(pl.lit("non-ASCII or blank-split key (orderId, queryId, origQryId, merId)"))
        .when(refund & (pl.col("order_id") == "")).then(pl.lit("refund without orderId (12)"))
        .when(refund & (pl.col("orig_query_id") == ""))
        .then(pl.lit("refund without origQryId (27)")))
    if mer_id is not None:
        problem = problem.when(pl.col("mer_id") != mer_id).then(
            pl.lit("merId (28) ") + pl.col("mer_id") + pl.lit(f" is not the file's {mer_id}"))
    df = bad.drop_bad(df, problem.otherwise(None), where)

    def blank_is_null(col: str) -> pl.Expr:
        return pl.when(pl.col(col) != "").then(pl.col(col))

    return to_batch(
        df, route=ROUTE.value, source=where, kind=pl.col("kind"),
        refund_no=pl.col("order_id"), refund_id=blank_is_null("query_id"),
        order_no=pl.when(refund).then(blank_is_null("orig_order_id"))
        .otherwise(blank_is_null("order_id")),
        trade_no=pl.when(refund).then(pl.col("orig_query_id"))
        .otherwise(blank_is_null("query_id")),
        amount=pl.col("_amount"), status=pl.lit(ChannelStatus.SUCCEEDED.value),
        time=pl.col("_time")).select(COLUMNS)


def _trace_time(settle: date) -> pl.Expr:
    """Field 5 (MMDDhhmmss, Beijing) -> UTC, in the year that puts it nearest the settle
    date: a 12-31 23:30 transaction settles on 01-01 of the next year, and the official
    sample lists 09-06 transactions in the 09-05 file."""
    cell = pl.col("trace_time")
    valid = cell.str.contains(r"^\d{10}$")
    noon = datetime.combine(settle, time(12))
    best: pl.Expr | None = None
    best_gap: pl.Expr | None = None
    for year in (settle.year - 1, settle.year, settle.year + 1):
        moment = (pl.lit(str(year)) + cell).str.strptime(pl.Datetime("us"), "%Y%m%d%H%M%S",
                                                          strict=False)
        gap = (moment - pl.lit(noon)).abs().fill_null(timedelta(days=9999))
        if best is None or best_gap is None:
            best, best_gap = moment, gap
        else:
            best = pl.when(gap < best_gap).then(moment).otherwise(best)
            best_gap = pl.when(gap < best_gap).then(gap).otherwise(best_gap)
    assert best is not None  # noqa: S101 - three candidates above
    return (pl.when(valid).then(best).dt.offset_by("-8h").dt.replace_time_zone("UTC"))
