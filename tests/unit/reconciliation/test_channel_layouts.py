"""Statement readers against the channels' own layout quirks (CH §4.6, §5.7, addendum
§7-§8): Alipay's two-file ZIP with GBK names and no UTF-8 flag (or names re-zipped as
UTF-8), the summary cross-check as a reported problem with both figures, the 账务明细 bill
refused with the bill to download; WeChat's backtick cells with commas inside them,
negative refund fees, BOM or not, CRLF or LF, gzip or plain. Each test fails on the
reader as it was before these quirks were handled."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import UTC, date, datetime

import pytest

from gateway.errors import StatementError
from reconciliation.statements import BadLines, LineKind, detect, read_lines
from reconciliation.statements.base import Source
from sandbox.alipay_bill import BillRow, detail_csv, render_account_zip, summary_csv

PID = "20880211096256330156"
DAY = date(2019, 9, 16)
AT = datetime(2019, 9, 16, 3, 0, tzinfo=UTC)
ROWS = [BillRow("2019091622001458860515315453", "service_1568601259302", "交易", AT, AT,
                "*津水(602***@qq.com)", 10_000),
        BillRow("2019091622001458860515315453", "service_1568601259302", "退款", AT, AT,
                "*津水(602***@qq.com)", -1_234, "re_test_1568602607356")]


class _RawNameInfo(zipfile.ZipInfo):
    """An entry whose name bytes are written as given, UTF-8 flag cleared."""

    __slots__ = ("raw",)
    raw: bytes

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.raw, self.flag_bits & ~0x800


def _zip(entries: list[tuple[bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, (raw, data) in enumerate(entries):
            info = _RawNameInfo(f"entry{n}", date_time=(2019, 9, 17, 5, 46, 49))
            info.raw, info.compress_type = raw, zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _trade_zip(encoding: str = "gbk", summary: str | None = None) -> bytes:
    stem = f"{PID}_{DAY:%Y%m%d}"
    return _zip([(f"{stem}_业务明细.csv".encode(encoding),
                  detail_csv(PID, DAY, ROWS, AT).encode("gbk")),
                 (f"{stem}_业务明细(汇总).csv".encode(encoding),
                  (summary or summary_csv(PID, DAY, ROWS, AT)).encode("gbk"))])


def _read(data: bytes, name: str) -> tuple[list[tuple[str, str | None, int]], BadLines]:
    bad = BadLines()
    lines = [(ln.kind.value, ln.channel_refund_no, ln.amount.minor)
             for ln in read_lines(Source.of(data, name), bad)]
    return lines, bad


# -- Alipay trade bill ZIP --------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gbk", "utf-8"])
def test_trade_zip_reads_the_detail_beside_its_summary(encoding: str) -> None:
    """GBK names as Alipay writes them, and UTF-8 names without the flag (a bill unzipped
    and zipped again): the old reader picked the detail by name and, with the UTF-8 case,
    saw two details ("expected one detail CSV in the ZIP, found 2")."""
    lines, bad = _read(_trade_zip(encoding), "2088_20190916.csv.zip")
    assert lines == [("payment", None, 10_000), ("refund", "re_test_1568602607356", 1_234)]
    assert bad.errors == []


def test_entry_names_read_in_chinese_wherever_shown() -> None:
    bad = BadLines()
    [*_, refund] = read_lines(Source.of(_trade_zip(), "bill.zip"), bad)
    assert refund.source == f"bill.zip!{PID}_20190916_业务明细.csv"


def test_summary_disagreeing_is_a_reported_problem_with_both_figures() -> None:
    good = summary_csv(PID, DAY, ROWS, AT)
    wrong = good.replace("合计\t,\t,1\t,1\t,87.66\t,87.66\t", "合计\t,\t,1\t,2\t,87.66\t,86.66\t")
    assert wrong != good
    lines, bad = _read(_trade_zip(summary=wrong), "bill.zip")
    assert [kind for kind, _, _ in lines] == ["payment", "refund"]     # read all the same
    reasons = sorted(e.reason for e in bad.errors)
    assert reasons == ["summary 合计 商家实收(元) is 86.66, the detail rows add up to 87.66",
                       "summary 合计 退款订单总笔数 is 2, the detail rows add up to 1"]
    assert {(e.file, e.line) for e in bad.errors} == {
        (f"bill.zip!{PID}_20190916_业务明细(汇总).csv", 7)}


def test_summary_without_total_row_is_reported_not_fatal() -> None:
    headless = "\r\n".join(ln for ln in summary_csv(PID, DAY, ROWS, AT).split("\r\n")
                           if not ln.startswith("合计"))
    lines, bad = _read(_trade_zip(summary=headless), "bill.zip")
    assert len(lines) == 2
    assert ["no 合计 row" in e.reason for e in bad.errors] == [True]


def test_detail_csv_alone_still_reads_and_summary_alone_is_refused() -> None:
    lines, bad = _read(detail_csv(PID, DAY, ROWS, AT).encode("gbk"), "d.csv")
    assert len(lines) == 2 and bad.errors == []
    with pytest.raises(StatementError, match=r"summary .* alone"):
        _read(summary_csv(PID, DAY, ROWS, AT).encode("gbk"), "s.csv")


def test_detail_resaved_as_utf8_reads() -> None:
    text = "\ufeff" + detail_csv(PID, DAY, ROWS, AT)
    lines, bad = _read(text.encode("utf-8"), "d.csv")
    assert lines[1] == ("refund", "re_test_1568602607356", 1_234) and bad.errors == []


# -- Alipay 账务明细 --------------------------------------------------------------------
def test_signcustomer_zip_refused_naming_the_bill_to_download() -> None:
    data = render_account_zip(PID[:16], DAY, ROWS, AT)
    assert detect(Source.of(data, "2088_20190916.csv.zip")).name == "alipay-trade"
    with pytest.raises(StatementError) as err:
        _read(data, "2088_20190916.csv.zip")
    assert "账务明细" in str(err.value) and "bill_type=signcustomer" in str(err.value)
    assert "bill_type=trade" in str(err.value)


def test_signcustomer_csv_refused_not_misread_as_a_trade_bill() -> None:
    """Before: sniffed as a trade bill, then "no table header found"."""
    with zipfile.ZipFile(io.BytesIO(render_account_zip(PID[:16], DAY, ROWS, AT))) as zf:
        ledger = next(zf.read(i) for i in zf.infolist()
                      if i.filename.encode("cp437").decode("gbk").endswith("账务明细.csv"))
    with pytest.raises(StatementError, match=r"bill_type=signcustomer.*bill_type=trade"):
        _read(ledger, "ledger.csv")


# -- WeChat bills ---------------------------------------------------------------------
WX_ALL = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
          "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
          "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
          "费率备注")
WX_SUMMARY = ("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,"
              "申请退款总金额")
# Shaped like the public merchant sample addendum §8 cites (xjryanse/logic), with the
# attach holding two keys and the goods name a comma, as merchants' own data does.
WX_REFUND = ("`2024-07-09 16:47:58,`wxe1696e7c7db8e7f4,`1579507281,`0,`,"
             "`4200002166202406250324636876,`5617363390111199232,`oVgfJ5d35c6iAXrRCnfhOGF9aHT8,"
             "`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50302709992024070991956632208,"
             "`5622435300878286848,`50.00,`0.00,`ORIGINAL,`SUCCESS,`客户付款,2件,"
             '`{"statement_id":"5617363390111199232","src":"app"},`-0.27000,`0.54%,`0.00,'
             "`50.00,`")
WX_PAY = ("`2024-07-09 10:06:33,`wxe1696e7c7db8e7f4,`1579507281,`0,`,"
          "`4200002360202407091150650780,`5622334254839656448,`oVgfJ5TrnzDOSuaxbFc33mw-5LUY,"
          "`JSAPI,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,`0,`0,`0.00,`0.00,`,`,"
          '`2024-07-10 13:50 客户付款,`{"statement_id":"5622334254839656448"},`0.32000,`0.54%,'
          "`60.00,`0.00,`")


def _wx(fee_total: str = "0.05000", *, bom: bool = True, eol: str = "\r\n") -> str:
    summary = f"`2,`60.00,`50.00,`0.00,`{fee_total},`60.00,`50.00"
    return ("\ufeff" if bom else "") + eol.join([WX_ALL, WX_REFUND, WX_PAY, WX_SUMMARY,
                                                 summary]) + eol


@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
@pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_wechat_refund_row_with_commas_inside_cells(bom: bool, eol: str, packed: bool) -> None:
    """Before: the refund row had 30 comma-separated pieces for 27 columns and was dropped
    as a bad line, so a settled refund showed as missing from the statement."""
    data = _wx(bom=bom, eol=eol).encode()
    lines, bad = _read(gzip.compress(data) if packed else data, "wx.csv")
    assert lines == [("refund", "5622435300878286848", 5_000), ("payment", None, 6_000)]
    assert bad.errors == []


def test_wechat_net_fee_total_checked_with_refund_fees_negative() -> None:
    lines, bad = _read(_wx("0.59000").encode(), "wx.csv")     # as if the refund's were +
    assert len(lines) == 2
    assert [e.reason for e in bad.errors] == ["summary 手续费总金额 is 0.59000, the rows add "
                                              "up to 0.05000"]


def test_wechat_refund_line_keys() -> None:
    bad = BadLines()
    [refund, _] = read_lines(Source.of(_wx().encode(), "wx.csv"), bad)
    assert (refund.kind, refund.channel_refund_id, refund.merchant_order_no) == (
        LineKind.REFUND, "50302709992024070991956632208", "5617363390111199232")
