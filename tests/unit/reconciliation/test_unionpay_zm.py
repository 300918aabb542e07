"""UnionPay's settlement file as UnionPay writes it (CHANNELS-ADDENDUM §1): golden files
(tests/fixtures/statements/unionpay: UnionPay's official sample and a real-layout file
with refunds, README.md there), the fixed-width GBK records read by byte position, bad
records named by file and line, the settle date's year, and the old invented file refused.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from gateway.errors import StatementError
from gateway.models import Route
from reconciliation.statements import BadLines, LineKind, detect, read_lines
from reconciliation.statements.base import Source
from tests.golden_files import expected_for, parsed_statement, read_expected

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "statements" / "unionpay"
ARCHIVES = ["802310048993424_20150905.zip", "777290058110048_20240611.zip"]
MEMBER = "INN24061188ZM_777290058110048"
RECORDS = (FIXTURES / MEMBER).read_bytes().split(b"\r\n")[:-1]
# Byte offsets of the fields the tests touch (addendum §1 table).
AMOUNT, ORDER_ID, TRACE_TIME, MER_ID = (66, 12), (112, 32), (35, 10), (293, 15)


@pytest.mark.parametrize("name", ARCHIVES)
def test_golden(name: str) -> None:
    got = parsed_statement(FIXTURES / name)
    assert got == read_expected(expected_for(FIXTURES / name))
    assert got["bad_lines"] == []


@pytest.mark.parametrize("name", ARCHIVES)
def test_tiny_chunks_same_answer(name: str) -> None:
    assert parsed_statement(FIXTURES / name, chunk_bytes=64) == \
        parsed_statement(FIXTURES / name)


def test_a_missing_golden_file_fails() -> None:
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        read_expected(FIXTURES / "absent.zip.expected.json")


def test_the_bare_member_reads_like_the_zip() -> None:
    zipped = parsed_statement(FIXTURES / "777290058110048_20240611.zip")["lines"]
    bare = parsed_statement(FIXTURES / MEMBER)["lines"]
    assert [{**ln, "source": MEMBER} for ln in zipped] == bare


def test_the_official_sample_totals_its_report() -> None:
    """The RD report of UnionPay's sample says 8 transactions, 13227.00 贷."""
    lines = list(read_lines(FIXTURES / ARCHIVES[0]))
    assert len(lines) == 8 and sum(ln.amount.minor for ln in lines) == 1_322_700
    assert {ln.kind for ln in lines} == {LineKind.PAYMENT}


def test_chinese_fields_do_not_shift_the_fields_after_them() -> None:
    """Record 2 holds a GBK 商户自定义域: slicing the DECODED text (playniuniu's
    fileDownload.py) misreads field 41; slicing bytes (the official demos) does not."""
    record = RECORDS[1]
    assert "部分退款".encode("gbk") in record
    assert record.decode("gbk")[476:508].strip() != "ORD3001"
    [line] = [ln for ln in read_lines(FIXTURES / MEMBER) if ln.channel_refund_no == "RFB0001"]
    assert line.merchant_order_no == "ORD3001"


def _with(record: bytes, at: tuple[int, int], value: bytes) -> bytes:
    start, width = at
    assert len(value) == width
    return record[:start] + value + record[start + width:]


def _zm(records: list[bytes], member: str = MEMBER, extra: dict[str, bytes] | None = None
        ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if member:
            zf.writestr(member, b"".join(r + b"\r\n" for r in records))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_bad_records_are_named_by_file_and_line() -> None:
    good = RECORDS[1]
    broken = [
        good,
        good[:-1],                                                  # 606 bytes
        good[:120] + b"X" + good[120:-1],                           # shifted by a byte
        _with(good, AMOUNT, b"00000000450x"),
        _with(good, ORDER_ID, "退款单".encode("gbk").ljust(32)),
        _with(good, ORDER_ID, b" " * 32),
        _with(good, MER_ID, b"777290058110049"),
        _with(good, TRACE_TIME, b"1332100000"),
        RECORDS[2],
    ]
    bad = BadLines(limit=50)
    lines = list(read_lines(Source.of(_zm(broken), "day.zip"), bad))
    assert [ln.channel_refund_no for ln in lines] == ["RFB0001", "RFB0006"]
    where = f"day.zip!{MEMBER}"
    got = [(e.file, e.line, e.reason) for e in bad.errors]
    assert [g[:2] for g in got] == [(where, n) for n in range(2, 9)]
    reasons = [g[2] for g in got]
    assert "606 bytes" in reasons[0]
    assert "not where the ZM layout puts them" in reasons[1]
    assert "交易金额 (7)" in reasons[2]
    assert "non-ASCII" in reasons[3]
    assert "refund without orderId" in reasons[4]
    assert "merId (28) 777290058110049" in reasons[5]
    assert "交易传输时间 (5)" in reasons[6]


def test_the_old_invented_file_is_refused_with_a_message() -> None:
    legacy = (b"txnType|merId|orderId|txnTime|queryId|origQryId|txnAmt|currencyCode|"
              b"settleDate|traceNo|respCode|accNo\n04|777290058110048|RFB0001|20240611100000|"
              b"762406111000000000001|762406101000000000001|4500|156|0611|000001|00|x\n")
    with pytest.raises(StatementError) as info:
        list(read_lines(Source.of(legacy, "unionpay_20240611.txt"), route=Route.BANKCARD))
    assert "UnionPay never writes it" in str(info.value)
    assert "txnType 76" in str(info.value)


@pytest.mark.parametrize(("member", "trace", "utc"), [
    ("INN25010188ZM_777290058110048", b"1231233000", "2024-12-31T15:30:00+00:00"),
    ("INN24123188ZM_777290058110048", b"0101000500", "2024-12-31T16:05:00+00:00"),
    ("INN24030188ZM_777290058110048", b"0229120000", "2024-02-29T04:00:00+00:00")])
def test_the_year_is_the_one_nearest_the_settle_date(member: str, trace: bytes,
                                                     utc: str) -> None:
    data = _zm([_with(RECORDS[1], TRACE_TIME, trace)], member)
    [line] = read_lines(Source.of(data, "x.zip"))
    assert line.time is not None and line.time.isoformat() == utc


def test_a_day_without_transactions_reads_as_no_lines() -> None:
    bad = BadLines()
    assert list(read_lines(Source.of(_zm([]), "bankcard-2024-06-11"), bad)) == []
    assert bad.errors == []


def test_the_zip_must_hold_one_zm_member() -> None:
    with pytest.raises(StatementError, match="found 0"):
        list(read_lines(Source.of(_zm([], member="", extra={
            "RD201024061101_777290058110048": b"x", MEMBER.replace("ZM", "ZME"): b""}),
            "777290058110048_20240611.zip")))
    two = _zm(RECORDS, extra={"INN24061188ZM_777290058110049": b""})
    with pytest.raises(StatementError, match="found 2"):
        list(read_lines(Source.of(two, "bankcard-2024-06-11")))


def test_a_zme_member_with_records_is_reported_not_read() -> None:
    data = _zm(RECORDS[:2], extra={"INN24061188ZME_777290058110048": b"S56 ...\r\n"})
    bad = BadLines()
    lines = list(read_lines(Source.of(data, "bankcard-2024-06-11"), bad))
    assert [ln.channel_refund_no for ln in lines] == [None, "RFB0001"]
    [error] = bad.errors
    assert error.file == "bankcard-2024-06-11!INN24061188ZME_777290058110048"
    assert "ZME 差错明细" in error.reason


def test_recognised_by_content_whatever_the_name() -> None:
    zipped = (FIXTURES / "777290058110048_20240611.zip").read_bytes()
    for name in ("bankcard-2024-06-11", "statement.bin"):
        assert detect(Source.of(zipped, name)).name == "unionpay-zm"
        assert detect(Source.of(zipped, name), Route.BANKCARD).name == "unionpay-zm"
    records = (FIXTURES / MEMBER).read_bytes()
    assert detect(Source.of(records, "zm.txt")).name == "unionpay-zm"
    with pytest.raises(StatementError, match="cannot tell the settle date"):
        list(read_lines(Source.of(records, "zm.txt")))
