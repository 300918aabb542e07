# ruff: noqa: E501  (channel header rows are kept whole, as the channels write them)
"""Test-side writers of real-format statements (CH §4.6, §5.7, CHANNELS-ADDENDUM §1 for
UnionPay's ZM file) and of the platform CSV export, so tests can say "this set of refunds, with
these mutations" and get the bytes a channel would send. Writers only; no assertions.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from gateway.clock import BEIJING
from gateway.money import Money

WX_REFUND_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
                    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,"
                    "微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
                    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注")
WX_SUMMARY_HEADER = ("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,"
                     "申请退款总金额")
ALIPAY_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
                 "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,"
                 "支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,"
                 "卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注")
PLATFORM_HEADER = ("refund_id,route,merchant_order_no,channel_trade_no,channel_refund_no,amount,"
                   "currency,status,created_at,succeeded_at")


@dataclass(frozen=True)
class Line:
    """One refund as a channel lists it."""

    refund_no: str
    order_no: str
    amount_minor: int
    status: str = "SUCCESS"          # the channel's own word (WeChat 退款状态 / respCode)
    refund_id: str = ""
    at: datetime | None = None


def _bj(at: datetime | None) -> str:
    return (at or datetime(2024, 6, 11, 10, 0, tzinfo=BEIJING)).astimezone(BEIJING).strftime(
        "%Y-%m-%d %H:%M:%S")


def _yuan(minor: int) -> str:
    return Money(minor).format()


def wechat_refund_bill(lines: Sequence[Line]) -> bytes:
    """WeChat trade bill, ``bill_type=REFUND`` (CH §5.7): BOM, backtick cells, summary."""
    rows = []
    for ln in lines:
        y = _yuan(ln.amount_minor)
        t = _bj(ln.at)
        cells = [t, "wx1", "19", "", "", "4200" + ln.order_no, ln.order_no, "o1", "JSAPI",
                 "REFUND", "CFT", "CNY", "0.00", "0.00", t,
                 t if ln.status == "SUCCESS" else "", ln.refund_id or "503" + ln.refund_no,
                 ln.refund_no, y, "0.00", "ORIGINAL", ln.status, "g", "", "0.00", "0.60%",
                 y, y, ""]
        rows.append(",".join("`" + c for c in cells))
    refunded = sum(ln.amount_minor for ln in lines)
    summary = f"`{len(lines)},`0.00,`{_yuan(refunded)},`0.00,`0.00,`0.00,`{_yuan(refunded)}"
    text = "\ufeff" + "\r\n".join([WX_REFUND_HEADER, *rows, WX_SUMMARY_HEADER, summary]) + "\r\n"
    return text.encode()


def alipay_detail(lines: Sequence[Line]) -> bytes:
    """Alipay trade bill detail CSV (CH §4.6), GBK, refunds negative, footer totals."""
    rows = []
    for ln in lines:
        y = "-" + _yuan(ln.amount_minor)
        t = _bj(ln.at)
        rows.append(f"2024{ln.order_no}\t,{ln.order_no}\t,退款\t,点卡,{t},{t},\t,\t,\t,\t,"
                    f"**明(m***@x.com)\t,{y},{y},0.00,0.00,0.00,0.00,0.00,\t,0.00\t,0.00,"
                    f"{ln.refund_no}\t,0.01,0.00,")
    total = sum(ln.amount_minor for ln in lines)
    text = "\r\n".join([
        "#支付宝业务明细查询", "#账号：[2088000000000000]",
        "#-----------------------------------------业务明细列表-----------------------------",
        ALIPAY_HEADER, *rows,
        "#-----------------------------------------业务明细列表结束---------------------------",
        "#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元",
        f"#退款合计：{len(lines)}笔，商家实收退款共-{_yuan(total)}元，商家优惠退款共0.00元",
        "#导出时间：[2024年06月12日 06:00:00]"]) + "\r\n"
    return text.encode("gbk")


# CHANNELS-ADDENDUM §1: the 42 ZM widths, in GBK bytes (official Java DemoBase.parseZMFile).
ZM_WIDTHS = (3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2,
             4, 32, 1, 21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)
UNIONPAY_MER_ID = "777290058110048"


def zm_record(fields: dict[int, str]) -> bytes:
    """One 607-byte ZM record: field number -> text, GBK, left-aligned, blank-padded, one
    blank after every field but the last."""
    return b" ".join(fields.get(n, "").encode("gbk").ljust(w, b" ")
                     for n, w in enumerate(ZM_WIDTHS, start=1))


def unionpay_settlement(lines: Sequence[Line], day: date = date(2024, 6, 11)) -> bytes:
    """UnionPay's settlement ZIP for clearing day ``day`` (addendum §1): one
    ``INN<yymmdd>88ZM_<merId>`` member of ZM records, refunds as txnType 04 (fields 5, 7,
    10, 12, 20, 27, 28, 41; CRLF). Only cleared refunds are in UnionPay's file: a line
    whose ``status`` is not ``00`` is left out, as the channel leaves it out."""
    records = []
    for n, ln in enumerate(lines):
        if ln.status != "00":
            continue
        t = (ln.at or datetime(day.year, day.month, day.day, 10, 0, tzinfo=BEIJING)
             ).astimezone(BEIJING)
        records.append(zm_record({
            1: "S30", 5: f"{t:%m%d%H%M%S}", 7: f"{ln.amount_minor:012d}",
            10: ln.refund_id or f"76{n:019d}", 12: ln.refund_no, 20: "04",
            27: f"76{ln.order_no}"[:21], 28: UNIONPAY_MER_ID, 41: ln.order_no}) + b"\r\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"INN{day:%y%m%d}88ZM_{UNIONPAY_MER_ID}", b"".join(records))
    return buf.getvalue()


@dataclass(frozen=True)
class PlatformRow:
    refund_id: str
    route: str
    order_no: str
    refund_no: str
    amount_minor: int
    status: str
    created_at: datetime
    succeeded_at: datetime | None


def platform_csv(rows: Iterable[PlatformRow], path: Path) -> Path:
    out = [PLATFORM_HEADER]
    for r in rows:
        out.append(",".join([r.refund_id, r.route, r.order_no, "T" + r.order_no, r.refund_no,
                             _yuan(r.amount_minor), "CNY", r.status, r.created_at.isoformat(),
                             r.succeeded_at.isoformat() if r.succeeded_at else ""]))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
