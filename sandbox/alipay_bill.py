"""Alipay's trade bill (业务明细, ``bill_type=trade``, CH §4.6) as the download serves it.

A ZIP named like ``<PID>_<yyyymmdd>.csv.zip`` with two entries,
``<PID>_<yyyymmdd>_业务明细.csv`` (the detail) and ``<PID>_<yyyymmdd>_业务明细(汇总).csv``
(the summary). Entry names are GBK bytes WITHOUT the ZIP UTF-8 flag (0x800), as Alipay
writes them: readers that trust the flag see cp437 mojibake and must re-decode
(``info.filename.encode("cp437").decode("gbk")``). Content is GBK with CRLF line ends.

Detail file: ``#`` header lines (title, account, date range, separator), the exact column
header of CH §4.6 with full-width ``（元）``, one row per payment (业务类型 ``交易``) and per
refund (业务类型 ``退款``: the payment's 支付宝交易号/商户订单号, 退款批次号/请求号 =
``out_request_no``, NEGATIVE 订单金额/商家实收, a POSITIVE 服务费 = the fee given back),
every cell padded with a trailing ``\\t`` (Alipay's guard against Excel), then ``#`` footer
lines (separator, 交易合计, 退款合计, 导出时间). Service fee: 0.6 % of the amount, rounded
half up to the fen (negative on trades, positive on refunds).

Summary file: same ``#`` framing, the CH §4.6 summary columns and one ``合计`` row.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sandbox.channel import Channel
from sandbox.state import BEIJING

yuan = Channel.fen_to_yuan

DETAIL_COLUMNS = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
    "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,"
    "服务费（元）,分润（元）,备注")
SUMMARY_COLUMNS = (
    "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,"
    "商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）")
DASHES = "-" * 41                  # the real files: 41 dashes, title, 40 (36 after 结束)
SUBJECT = "沙箱商品"
FEE_PER_MILLE = 6


@dataclass(frozen=True)
class BillRow:
    """One line of the detail file; amounts in fen, signed as the file shows them."""

    trade_no: str
    order_no: str
    kind: str                 # 交易 | 退款
    created: datetime
    finished: datetime
    counterparty: str         # masked buyer logon id, e.g. 159****5620
    amount_fen: int           # negative for refunds
    request_no: str = ""      # 退款批次号/请求号 (refunds only)

    @property
    def fee_fen(self) -> int:
        """服务费: charged on trades (negative), given back on refunds (positive)."""
        fee = (abs(self.amount_fen) * FEE_PER_MILLE + 500) // 1000
        return -fee if self.amount_fen > 0 else fee


def _stamp(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _cn(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y年%m月%d日 %H:%M:%S")


def _header(title: str, pid: str, day: date, listing: str) -> list[str]:
    start = datetime.combine(day, time(), BEIJING)
    return [f"#{title}", f"#账号：[{pid}]",
            f"#起始日期：[{_cn(start)}]   终止日期：[{_cn(start + timedelta(days=1))}]",
            f"#{DASHES}{listing}{'-' * 40}"]


def detail_csv(pid: str, day: date, rows: list[BillRow], exported_at: datetime) -> str:
    lines = _header("支付宝业务明细查询", pid, day, "业务明细列表")
    lines.append(DETAIL_COLUMNS)
    for row in rows:
        amount = yuan(row.amount_fen)
        cells = [row.trade_no, row.order_no, row.kind, SUBJECT, _stamp(row.created),
                 _stamp(row.finished), "", "", "", "", row.counterparty, amount, amount,
                 "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", row.request_no,
                 yuan(row.fee_fen), "0.00", ""]
        lines.append(",".join(f"{cell}\t" for cell in cells))
    trades = [r for r in rows if r.kind == "交易"]
    refunds = [r for r in rows if r.kind == "退款"]
    lines += [f"#{DASHES}业务明细列表结束{'-' * 36}",
              f"#交易合计：{len(trades)}笔，商家实收共{yuan(sum(r.amount_fen for r in trades))}元，"
              "商家优惠共0.00元",
              f"#退款合计：{len(refunds)}笔，商家实收退款共"
              f"{yuan(sum(r.amount_fen for r in refunds))}元，商家优惠退款共0.00元",
              f"#导出时间：[{_cn(exported_at)}]"]
    return "\r\n".join(lines) + "\r\n"


def summary_csv(pid: str, day: date, rows: list[BillRow], exported_at: datetime) -> str:
    lines = _header("支付宝业务汇总查询", pid, day, "业务汇总列表")
    lines.append(SUMMARY_COLUMNS)
    total = sum(r.amount_fen for r in rows)
    fees = sum(r.fee_fen for r in rows)
    trades = sum(1 for r in rows if r.kind == "交易")
    cells = ["合计", "", str(trades), str(len(rows) - trades), yuan(total), yuan(total),
             "0.00", "0.00", "0.00", yuan(fees), "0.00", yuan(total + fees)]
    lines.append(",".join(f"{cell}\t" for cell in cells))
    lines += [f"#{DASHES}业务汇总列表结束{'-' * 36}", f"#导出时间：[{_cn(exported_at)}]"]
    return "\r\n".join(lines) + "\r\n"


class _GbkZipInfo(zipfile.ZipInfo):
    """A ZIP entry whose name is stored as raw GBK bytes, UTF-8 flag (0x800) cleared."""

    __slots__ = ()

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def zip_name(pid: str, day: date) -> str:
    return f"{pid}_{day:%Y%m%d}.csv.zip"


def render_zip(pid: str, day: date, rows: list[BillRow], exported_at: datetime) -> bytes:
    """The bill ZIP: detail + summary CSVs, GBK names without the UTF-8 flag, GBK content."""
    stamp = exported_at.astimezone(BEIJING)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for suffix, text in (("业务明细", detail_csv(pid, day, rows, exported_at)),
                             ("业务明细(汇总)", summary_csv(pid, day, rows, exported_at))):
            info = _GbkZipInfo(f"{pid}_{day:%Y%m%d}_{suffix}.csv",
                               date_time=(stamp.year, stamp.month, stamp.day, stamp.hour,
                                          stamp.minute, stamp.second))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("gbk"))
    return buffer.getvalue()
