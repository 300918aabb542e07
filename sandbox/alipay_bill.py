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

Summary file: same ``#`` framing (title ``#支付宝业务汇总查询``), the CH §4.6 summary
columns, one row per 门店 (the sandbox has one, unnamed) and then the ``合计`` row
(addendum §7); each figure is the sum of the detail column of the same name.

The 账务明细 bill (``bill_type=signcustomer``, addendum §7): a ZIP of
``<acct>_<yyyymmdd>_账务明细.csv`` and ``…_账务汇总.csv``, GBK, same naming rules; ``<acct>``
is the PID + ``0156`` as in every public sample. Rows: 在线支付 (收入金额), 收费 (the
service fee, 支出金额), 交易退款 (支出金额); 支出 printed positive (whether Alipay prints it
negative is UNCONFIRMED; parsers take ``abs``). The 账务汇总 has the five columns the
addendum names (its sixth is UNCONFIRMED and left out).
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
    figures = [str(trades), str(len(rows) - trades), yuan(total), yuan(total), "0.00",
               "0.00", "0.00", yuan(fees), "0.00", yuan(total + fees)]
    # One row per 门店 (the sandbox's one store has no number or name), then 合计.
    for cells in (["", "", *figures], ["合计", "", *figures]):
        lines.append(",".join(f"{cell}\t" for cell in cells))
    lines += [f"#{DASHES[:-1]}业务汇总列表结束{'-' * 37}", f"#导出时间：[{_cn(exported_at)}]"]
    return "\r\n".join(lines) + "\r\n"


ACCOUNT_COLUMNS = ("账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,"
                   "支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注")
ACCOUNT_SUMMARY_COLUMNS = "类型,收入笔数,收入金额（+元）,支出笔数,支出金额（-元）"


def account_id(pid: str) -> str:
    """The 账务 bill's account: the PID + ``0156`` in every public sample (addendum §7)."""
    return pid + "0156"


def account_csv(pid: str, day: date, rows: list[BillRow], exported_at: datetime,
                opening_fen: int = 0) -> str:
    """The 账务明细 file: a ledger line per payment, per service fee and per refund."""
    lines = _header("支付宝账务明细查询", account_id(pid), day, "账务明细列表")
    lines.append(ACCOUNT_COLUMNS)
    balance, seq = opening_fen, 0
    income: list[int] = []
    spent: list[int] = []
    for row in rows:
        moves = [("在线支付" if row.amount_fen > 0 else "交易退款", row.amount_fen)]
        if row.amount_fen > 0:
            moves.append(("收费", row.fee_fen))
        for kind, fen in moves:
            seq += 1
            balance += fen
            (income if fen > 0 else spent).append(abs(fen))
            cells = [f"{row.finished:%Y%m%d}{seq:08d}", row.trade_no, row.order_no, SUBJECT,
                     _stamp(row.finished), row.counterparty,
                     yuan(fen) if fen > 0 else "0.00", yuan(-fen) if fen < 0 else "0.00",
                     yuan(balance), "支付宝", kind, row.request_no]
            lines.append(",".join(f"{c}\t" if i < 4 or i == 5 else c
                                  for i, c in enumerate(cells)))
    lines += [f"#{DASHES[:-1]}账务明细列表结束{'-' * 37}",
              f"#支出合计：{len(spent)}笔，共{yuan(sum(spent))}元",
              f"#收入合计：{len(income)}笔，共{yuan(sum(income))}元",
              f"#导出时间：[{_cn(exported_at)}]"]
    return "\r\n".join(lines) + "\r\n"


def account_summary_csv(pid: str, day: date, rows: list[BillRow],
                        exported_at: datetime) -> str:
    lines = _header("支付宝账务汇总查询", account_id(pid), day, "账务汇总列表")
    lines.append(ACCOUNT_SUMMARY_COLUMNS)
    paid = [r.amount_fen for r in rows if r.amount_fen > 0]
    back = [-r.amount_fen for r in rows if r.amount_fen < 0]
    fees = [-r.fee_fen for r in rows if r.amount_fen > 0]
    for kind, n_in, yuan_in, n_out, yuan_out in (
            ("在线支付", len(paid), sum(paid), 0, 0), ("交易退款", 0, 0, len(back), sum(back)),
            ("收费", 0, 0, len(fees), sum(fees)),
            ("合计", len(paid), sum(paid), len(back) + len(fees), sum(back) + sum(fees))):
        lines.append(f"{kind},{n_in},{yuan(yuan_in)},{n_out},{yuan(yuan_out)}")
    lines += [f"#{DASHES[:-1]}账务汇总列表结束{'-' * 37}", f"#导出时间：[{_cn(exported_at)}]"]
    return "\r\n".join(lines) + "\r\n"


class _GbkZipInfo(zipfile.ZipInfo):
    """A ZIP entry whose name is stored as raw GBK bytes, UTF-8 flag (0x800) cleared."""

    __slots__ = ()

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


def zip_name(pid: str, day: date) -> str:
    return f"{pid}_{day:%Y%m%d}.csv.zip"


def _gbk_zip(files: list[tuple[str, str]], exported_at: datetime) -> bytes:
    """CSVs in a ZIP as Alipay packs them: GBK names without the UTF-8 flag, GBK content."""
    stamp = exported_at.astimezone(BEIJING)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files:
            info = _GbkZipInfo(name, date_time=(stamp.year, stamp.month, stamp.day,
                                                stamp.hour, stamp.minute, stamp.second))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("gbk"))
    return buffer.getvalue()


def render_zip(pid: str, day: date, rows: list[BillRow], exported_at: datetime) -> bytes:
    """The trade bill ZIP (``bill_type=trade``): the 业务明细 detail and its 汇总."""
    stem = f"{pid}_{day:%Y%m%d}"
    return _gbk_zip([(f"{stem}_业务明细.csv", detail_csv(pid, day, rows, exported_at)),
                     (f"{stem}_业务明细(汇总).csv", summary_csv(pid, day, rows, exported_at))],
                    exported_at)


def render_account_zip(pid: str, day: date, rows: list[BillRow],
                       exported_at: datetime) -> bytes:
    """The 账务明细 bill ZIP (``bill_type=signcustomer``): the ledger and its 汇总."""
    stem = f"{account_id(pid)}_{day:%Y%m%d}"
    return _gbk_zip([(f"{stem}_账务明细.csv", account_csv(pid, day, rows, exported_at)),
                     (f"{stem}_账务汇总.csv", account_summary_csv(pid, day, rows,
                                                                 exported_at))],
                    exported_at)
