"""UnionPay's settlement file (对账文件) as the file transfer hands it out (CHANNELS-ADDENDUM §1).

Owns what the bytes look like: the txnType 76 request's field checks, the day's ZIP
(``INN<yymmdd>88ZM_<merId>`` fixed-width GBK records and an ``RD2010<yymmdd>01_<merId>``
summary report), its name ``<merId>_<YYYYMMDD>.zip`` and ``fileContent`` =
base64(zlib(ZIP)). Pure functions of what ``sandbox.unionpay`` passes in (it owns state,
signing and faults). Written from the addendum and the official sample alone.

ZM record (addendum §1 table): 42 fields, widths counted in GBK BYTES, text left-aligned
and blank-padded, one blank after every field but the last, 607 bytes, CRLF after every
record (the last too). Written per record (field numbers of the addendum):

* consume (txnType 01, a bank-card payment of the day): 1 ``S56``, 4 traceNo = last 6
  digits of its queryId, 5 traceTime MMDDhhmmss (Beijing), 6 the card masked as
  ``622202******1234``, 7 amount n12, 10 queryId, 12 the payment's order number,
  16 fee ``D`` + n12, 17 and 33 ``C`` + amount − fee, 20 ``01``, 28 merId;
* refund (txnType 04, a refund that REACHED the card: accepted refunds still processing and
  refunds that failed after acceptance are not cleared, so not listed): 1 ``S30``
  (UNCONFIRMED: no public refund record), 4/5 its traceNo/traceTime (as its query and
  notification state them), 7 amount, 10 its queryId, 12 its orderId, 14/15 the consume's
  traceNo/traceTime, 16 returned fee ``C`` + n12 (UNCONFIRMED), 17 and 33 ``D`` + amount −
  fee (UNCONFIRMED), 20 ``04``, 27 origQryId, 28 merId, 35 商户自定义域 = the request's
  ``reqReserved`` in GBK, cut to 32 bytes (UNCONFIRMED mapping; Chinese here is the GBK
  byte-width quirk), 41 the consume's order number;
* every record: 2 ``88022900``, 3 ``00049993``, 8 ``4899``, 9 ``07``, 11 ``01``, 13 ``01``,
  18 ``0001``, 22 ``000201``, 30 fifteen zeros, 32/36/37 ``␠`` + 12 zeros, 38 ``␠`` + 11
  zeros, 34 ``01080209``, 40 ``7`` (the values of the official sample's record 1).

Amounts are fen; an ``X+n12`` cell is a sign letter (``C`` credit to the merchant, ``D``
debit) and 12 digits, a blank instead of the letter when zero. The fee is the sample's
0.6 %, rounded half up (4768.00 -> 28.61). Records are in traceTime order.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

# Addendum §1 widths, field 1 first (official Java DemoBase.parseZMFile / .NET Form_7_2).
WIDTHS = (3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2,
          4, 32, 1, 21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)
SAMPLE_FIELDS = {2: "88022900", 3: "00049993", 8: "4899", 9: "07", 11: "01", 13: "01",
                 18: "0001", 22: "000201", 30: "0" * 15, 32: " " + "0" * 12,
                 34: "01080209", 36: " " + "0" * 12, 37: " " + "0" * 12,
                 38: " " + "0" * 11, 40: "7"}
# The request (addendum §1, acpAPIId=791; .NET Form_7_2_FileTransfer.aspx.cs).
FIXED = {"version": "5.1.0", "signMethod": "01", "txnType": "76", "txnSubType": "01",
         "bizType": "000000", "accessType": "0", "fileType": "00"}
REQUIRED = (*FIXED, "encoding", "merId", "txnTime", "settleDate", "certId", "signature")
# Echoed in the answer (addendum §1; version and signMethod too: verifiers need them).
ECHO = ("version", "encoding", "signMethod", "bizType", "accessType", "merId", "txnTime",
        "txnType", "txnSubType", "settleDate", "fileType", "reqReserved")
NOT_FOUND = "98"                         # 文件不存在 (addendum §1, Form_7_2)


@dataclass(frozen=True)
class Line:
    """One cleared transaction, as the channel module hands it over."""

    txn_type: str                        # 01 consume | 04 refund
    trace_no: str
    trace_time: str                      # MMDDhhmmss, Beijing
    card: str                            # masked
    fen: int
    query_id: str
    order_id: str
    orig_trace_no: str = ""
    orig_trace_time: str = ""
    orig_query_id: str = ""
    orig_order_id: str = ""
    reserved: str = ""                   # 商户自定义域 (GBK)


def request_problem(fields: dict[str, str]) -> str | None:
    """respCode of a malformed file-transfer request (13 missing, 10 bad value), before the
    signature is looked at; None when the fields are sound."""
    if any(not fields.get(name) for name in REQUIRED):
        return "13"
    if any(fields[name] != value for name, value in FIXED.items()):
        return "10"
    # Addendum §2: ``encoding`` in any case (UnionPay's own PHP demo sends ``utf-8``).
    if fields["encoding"].upper() != "UTF-8":
        return "10"
    if not re.fullmatch(r"[0-9]{14}", fields["txnTime"]) or settle_day(
            fields["settleDate"], date(2000, 1, 1)) is None:
        return "10"
    return None


def settle_day(mmdd: str, today: date) -> date | None:
    """The clearing date ``settleDate`` (MMDD, no year) names: the latest one not after
    ``today``; None when it is no date (0229 finds the last leap year)."""
    if not re.fullmatch(r"[0-9]{4}", mmdd):
        return None
    for year in range(today.year, today.year - 8, -1):
        try:
            day = date(year, int(mmdd[:2]), int(mmdd[2:]))
        except ValueError:
            continue
        if day <= today:
            return day
    return None


def fee(fen: int) -> int:
    """The sample's 0.6 % merchant fee, half up, in fen."""
    return (fen * 6 + 500) // 1000


def _signed(letter: str, fen: int) -> str:
    return f"{letter if fen else ' '}{fen:012d}"


def _gbk_cut(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` GBK bytes, never inside a character."""
    out = ""
    for ch in text:
        if len((out + ch).encode("gbk", errors="replace")) > width:
            break
        out += ch
    return out


def record(line: Line, mer_id: str) -> bytes:
    """One 607-byte ZM record (no line end)."""
    charge = fee(line.fen)
    refund = line.txn_type != "01"
    net = _signed("D" if refund else "C", line.fen - charge)
    fields = {**SAMPLE_FIELDS, 1: "S30" if refund else "S56", 4: line.trace_no,
              5: line.trace_time, 6: line.card, 7: f"{line.fen:012d}", 10: line.query_id,
              12: line.order_id, 16: _signed("C" if refund else "D", charge), 17: net,
              20: line.txn_type, 28: mer_id, 33: net}
    if refund:
        fields.update({14: line.orig_trace_no, 15: line.orig_trace_time,
                       27: line.orig_query_id, 35: _gbk_cut(line.reserved, 32),
                       41: line.orig_order_id})
    cells = [fields.get(n, "").encode("gbk", errors="replace").ljust(w, b" ")[:w]
             for n, w in enumerate(WIDTHS, start=1)]
    return b" ".join(cells)


def zm_name(day: date, mer_id: str) -> str:
    return f"INN{day:%y%m%d}88ZM_{mer_id}"


def archive_name(day: date, mer_id: str) -> str:
    """``fileName``: the official sample archive's ``<merId>_<YYYYMMDD>.zip``."""
    return f"{mer_id}_{day:%Y%m%d}.zip"


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def report(day: date, mer_id: str, lines: Sequence[Line]) -> bytes:
    """The RD 中国银联全渠道商户交易汇总表, laid out like the sample's (GBK, CRLF): one row
    per 交易类型 with count, amount 借/贷, fee 借/贷 and net 借/贷 in yuan, and a 总计 row.
    The refund row's label and sides (退货, 借) are UNCONFIRMED."""
    rows = []
    total = [0] * 7
    for label, txn_type in (("自助消费", "01"), ("退货", "04")):
        picked = [ln for ln in lines if ln.txn_type == txn_type]
        amount = sum(ln.fen for ln in picked)
        fees = sum(fee(ln.fen) for ln in picked)
        consume = txn_type == "01"
        cells = [len(picked), 0 if consume else amount, amount if consume else 0,
                 fees if consume else 0, 0 if consume else fees,
                 0 if consume else amount - fees, amount - fees if consume else 0]
        total = [a + b for a, b in zip(total, cells, strict=True)]
        rows.append((label, cells))
    rule = "_" * 136

    def row(label: str, cells: list[int]) -> str:
        pad = " " * (20 - len(label.encode("gbk")))
        return (label + pad + f"{cells[0]:>8}"
                + "".join(f"{_yuan(c):>16}" for c in cells[1:]))

    text = [" " * 73 + "中国银联全渠道商户交易汇总表", "",
            f"商户代码:{mer_id}" + " " * 40 + "清算币种:人民币",
            "收单机构:88022900" + " " * 47 + f"清算日期:{day:%Y%m%d}",
            "商户名称:退款网关沙箱" + " " * 43 + f"生成日期:{day + timedelta(days=1):%Y%m%d}",
            "", "", "交易类型            交易笔数               交易金额"
            "                         费用                              资金清算差额",
            " " * 41 + "借              贷              借              贷"
            "               借                  贷", rule,
            *(row(label, cells) for label, cells in rows), rule, row("总计", total), ""]
    return "\r\n".join(text).encode("gbk")


def settlement_zip(day: date, mer_id: str, lines: Sequence[Line]) -> bytes:
    """The ZIP the file transfer's ``fileContent`` carries: ZM records then the report.
    Entry times are fixed (the next morning), so the same day gives the same bytes."""
    ordered = sorted(lines, key=lambda ln: (ln.trace_time, ln.order_id))
    zm = b"".join(record(ln, mer_id) + b"\r\n" for ln in ordered)
    made = day + timedelta(days=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in ((zm_name(day, mer_id), zm),
                           (f"RD2010{day:%y%m%d}01_{mer_id}", report(day, mer_id, ordered))):
            info = zipfile.ZipInfo(name, date_time=(made.year, made.month, made.day, 6, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def file_content(data: bytes) -> str:
    """``fileContent``: base64 of the zlib stream (RFC 1950, ``78 9C``), as the SDKs'
    ``deCodeFileContent`` undo it (playniuniu ``SDKUtil.py``: b64decode + zlib.decompress;
    .NET ``SecurityUtil.Inflater``; addendum §1)."""
    return base64.b64encode(zlib.compress(data)).decode("ascii")
