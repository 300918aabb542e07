"""Statement parsers: golden files (a real-format statement beside its expected lines),
bad lines with file and line number, the bad-line threshold, archive guards, and the
chunked path giving the same answer as one chunk."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from gateway.errors import StatementError
from reconciliation.statements import BadLines, TooManyBadLines, detect, read_lines
from reconciliation.statements.archive import ArchiveLimits, open_zip
from reconciliation.statements.base import Source
from tests.golden_files import (
    REGENERATE,
    expected_for,
    parsed_statement,
    read_expected,
    statement_inputs,
)

INPUTS = statement_inputs()


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    got = parsed_statement(path)
    assert got == read_expected(expected_for(path)), (
        f"differs from the reviewed golden file; if intended: {REGENERATE}, review the diff")
    assert got["bad_lines"] == []


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_tiny_chunks_same_answer(path: Path) -> None:
    assert parsed_statement(path, chunk_bytes=64) == parsed_statement(path)


def _wechat(rows: list[str], summary: str = "`2,`0.00,`3.00,`0.00,`0.00,`3.00,`3.00") -> bytes:
    head = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
            "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
            "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
    tail = ("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,"
            "订单总金额,申请退款总金额")
    return ("\ufeff" + head + "\n" + "\n".join(rows) + "\n" + tail + "\n" + summary + "\n").encode()


def _row(rno: str, amount: str = "1.50", status: str = "SUCCESS", extra: str = "") -> str:
    cells = ["2024-06-11 10:00:00", "wx1", "19", "", "", "42001", "ORD1", "o1", "JSAPI",
             "REFUND", "CFT", "CNY", "0.00", "0.00", "503" + rno, rno, amount, "0.00",
             "ORIGINAL", status, "g", "", "0.00", "0.60%", "3.00", amount, ""]
    return ",".join("`" + c for c in cells) + extra


def test_bad_lines_named_with_file_and_line() -> None:
    data = _wechat([_row("R1"), _row("R2", amount="1.5x"), _row("R3", extra=",`x"),
                    _row("R4")], summary="`4,`0.00,`3.00,`0.00,`0.00,`3.00,`3.00")
    bad = BadLines(limit=10)
    lines = list(read_lines(Source.of(data, "wx.csv"), bad))
    assert [ln.channel_refund_no for ln in lines] == ["R1", "R4"]
    errors = sorted(bad.errors, key=lambda e: e.line or 0)
    assert [(e.file, e.line) for e in errors] == [("wx.csv", 3), ("wx.csv", 4)]
    assert "bad amount" in errors[0].reason
    assert "28 cells" in errors[1].reason


def test_threshold_fails_the_run_and_lists_every_bad_line() -> None:
    data = _wechat([_row(f"R{i}", amount="?") for i in range(5)])
    with pytest.raises(TooManyBadLines) as info:
        list(read_lines(Source.of(data, "wx.csv"), BadLines(limit=2)))
    assert [e.line for e in info.value.errors] == [2, 3, 4]


def test_summary_mismatch_is_reported() -> None:
    data = _wechat([_row("R1"), _row("R2")], summary="`3,`0.00,`3.00,`0.00,`0.00,`3.00,`3.00")
    bad = BadLines()
    list(read_lines(Source.of(data, "wx.csv"), bad))
    assert ["总交易单数" in e.reason for e in bad.errors] == [True]


def test_truncated_file_reported() -> None:
    data = _wechat([_row("R1")]).split("总交易单数".encode())[0]
    bad = BadLines()
    list(read_lines(Source.of(data, "wx.csv"), bad))
    assert "summary block missing" in bad.errors[0].reason


def test_gzip_bomb_stopped() -> None:
    bomb = gzip.compress(_wechat([_row("R1")]) + b"\n" * 50_000_000)
    with pytest.raises(StatementError, match="archive guard"):
        list(read_lines(Source.of(bomb, "bomb.csv.gz"), BadLines()))


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("entries,match", [
    ({"../evil_业务明细.csv": b"x"}, "unsafe entry"),
    ({"/etc/passwd": b"x"}, "unsafe entry"),
    ({f"f{i}.csv": b"x" for i in range(20)}, "entries"),
    ({"big_业务明细.csv": b"0" * 5_000_000}, "ratio"),
])
def test_zip_guards(entries: dict[str, bytes], match: str) -> None:
    data = _zip(entries)
    with pytest.raises(StatementError, match=match), open_zip(io.BytesIO(data), "a.zip",
                                                               ArchiveLimits()):
        pass


def test_unknown_format_is_a_statement_error() -> None:
    with pytest.raises(StatementError, match="unrecognised"):
        detect(Source.of(b"hello,world\n", "x.csv"))
