"""The UnionPay sandbox's file transfer (txnType 76, CHANNELS-ADDENDUM §1) over real HTTP.

Read here as UnionPay's SDK and demos read it, with nothing from ``sandbox`` or
``reconciliation``: the request is signed by this file's client (``test_unionpay``),
``fileContent`` undone with ``zlib.decompress(base64.b64decode(..))`` (playniuniu
``SDKUtil.deCodeFileContent``), the ZIP's ``INN…ZM_`` member cut into the addendum's 42
widths on GBK BYTES (official Java ``DemoBase.parseZMFile``).
"""

from __future__ import annotations

import base64
import io
import zipfile
import zlib
from datetime import datetime
from typing import Any

import pytest
import requests

from sandbox.server import SandboxServer
from tests.sandbox.test_unionpay import BEIJING, PREFIX, Client, parse_answer, verifies

WIDTHS = (3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2,
          4, 32, 1, 21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)


def cut(record: bytes) -> dict[int, str]:
    """Field number -> GBK text, by byte position (one blank after each field)."""
    out, at = {}, 0
    for number, width in enumerate(WIDTHS, start=1):
        out[number] = record[at:at + width].decode("gbk")
        at += width + 1
    return out


class Files(Client):
    def __init__(self, sandbox: SandboxServer) -> None:
        super().__init__(sandbox)
        self.url = self.settings[PREFIX + "FILE_TRANS_URL"]

    def request(self, settle: str, **change: str) -> dict[str, str]:
        fields = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01",
                  "txnType": "76", "txnSubType": "01", "bizType": "000000",
                  "accessType": "0", "fileType": "00",
                  "merId": self.settings[PREFIX + "MER_ID"],
                  "txnTime": datetime.now(BEIJING).strftime("%Y%m%d%H%M%S"),
                  "settleDate": settle, **change}
        return self.sign({k: v for k, v in fields.items() if v != ""})

    def transfer(self, fields: dict[str, str]) -> dict[str, str]:
        r = requests.post(self.url, data=fields, timeout=5)
        assert r.status_code == 200
        answer = parse_answer(r.text)
        assert verifies(answer, self.cert), answer
        return answer


@pytest.fixture
def files(refund_sandbox: SandboxServer) -> Files:
    return Files(refund_sandbox)


def unpack(answer: dict[str, str]) -> bytes:
    packed = base64.b64decode(answer["fileContent"], validate=True)
    assert packed[:2] == b"\x78\x9c"          # zlib (RFC 1950), not raw DEFLATE or gzip
    return zlib.decompress(packed)


def zm_records(archive: bytes) -> tuple[str, list[bytes]]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        names = zf.namelist()
        [zm] = [n for n in names if n[:3] == "INN" and n[11:14] == "ZM_"]
        data = zf.read(zm)
    assert data == b"" or data.endswith(b"\r\n")
    records = data.split(b"\r\n")[:-1]
    assert all(len(r) == 607 for r in records)
    return zm, records


def test_the_day_file_through_the_real_request(files: Files) -> None:
    requests.post(files.base + "/_sandbox/config", timeout=5,
                  json={"settle": {"bankcard": {"mode": "after_queries", "n": 1}}})
    pay = files.payment(10000)
    done = files.refund_fields("R20260101F0001", pay["channel_trade_no"], 1234)
    done = files.sign({**{k: v for k, v in done.items() if k != "signature"},
                       "reqReserved": "A部分退款：商品破损，补偿运费及包装费用"})
    files.refund(done)
    files.query("R20260101F0001", done["txnTime"])            # settles it
    files.refund(files.refund_fields("R20260101F0002", pay["channel_trade_no"], 1))  # open
    today = datetime.now(BEIJING)
    asked = files.request(f"{today:%m%d}", encoding="utf-8", reqReserved="day-file")
    answer = files.transfer(asked)
    assert answer["respCode"] == "00"
    for key in ("encoding", "bizType", "accessType", "merId", "txnTime", "txnType",
                "txnSubType", "settleDate", "fileType", "reqReserved"):
        assert answer[key] == asked[key], key         # echoed as sent: utf-8 stays lower
    assert answer["fileName"] == f"777290058110048_{today:%Y%m%d}.zip"
    archive = unpack(answer)
    name, records = zm_records(archive)
    assert name == f"INN{today:%y%m%d}88ZM_777290058110048"
    assert len(records) == 2                          # the open refund is not cleared
    consume, refund = (cut(r) for r in records)
    assert (consume[20], consume[12].strip(), consume[10]) == (
        "01", pay["merchant_order_no"], pay["channel_trade_no"])
    assert consume[7] == "000000010000" and consume[28] == "777290058110048"
    assert consume[16] == "D000000000060" and consume[17] == "C000000009940"   # 0.6 %
    truth = {t["channel_refund_no"]: t for t in files.truth()}
    assert refund[20] == "04" and refund[12].strip() == "R20260101F0001"
    assert refund[10] == truth["R20260101F0001"]["channel_refund_id"]
    assert refund[27] == pay["channel_trade_no"] and refund[7] == "000000001234"
    assert refund[41].strip() == pay["merchant_order_no"]
    assert refund[5][:4] == f"{today:%m%d}" and refund[5].isdigit()
    # The Chinese 商户自定义域 is cut at 32 GBK bytes, never inside a character, and the
    # fields after it stay on their byte positions.
    assert refund[35] == "A部分退款：商品破损，补偿运费及" + " "      # 31 bytes + 1 blank
    assert refund[6] == "622202******" + pay["card_last4"] + "   "
    control = requests.get(f"{files.base}/_sandbox/statements/bankcard/{today:%Y-%m-%d}",
                           timeout=5).content
    assert control == archive                         # the same bytes either way
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.namelist()[1] == f"RD2010{today:%y%m%d}01_777290058110048"
        assert "中国银联全渠道商户交易汇总表" in zf.read(zf.namelist()[1]).decode("gbk")


def test_statement_faults_hit_refund_records(files: Files) -> None:
    pay = files.payment(10000)
    for n, fen in ((1, 100), (2, 200), (3, 300)):
        files.refund(files.refund_fields(f"R20260101G000{n}", pay["channel_trade_no"], fen))
    files.fault("statement", "duplicate_in_statement")
    files.fault("statement", "amount_drift", drift=5)
    files.fault("statement", "missing_from_statement")
    today = datetime.now(BEIJING)
    _, records = zm_records(unpack(files.transfer(files.request(f"{today:%m%d}"))))
    refunds = [(f[12].strip(), int(f[7])) for f in map(cut, records) if f[20] == "04"]
    assert refunds == [("R20260101G0001", 100), ("R20260101G0001", 100),
                       ("R20260101G0002", 205)]


def test_a_day_without_transactions_has_an_empty_zm_member(files: Files) -> None:
    answer = files.transfer(files.request("0101" if datetime.now(BEIJING).strftime(
        "%m%d") != "0101" else "0102"))
    assert answer["respCode"] == "00"
    assert zm_records(unpack(answer))[1] == []


@pytest.mark.parametrize(("change", "code"), [
    ({"fileType": ""}, "13"), ({"settleDate": ""}, "13"), ({"fileType": "01"}, "10"),
    ({"txnSubType": "00"}, "10"), ({"settleDate": "1332"}, "10"),
    ({"settleDate": "20240611"}, "10"), ({"encoding": "GBK"}, "10"),
    ({"merId": "777290058110049"}, "31")])
def test_bad_requests_are_refused(files: Files, change: dict[str, str], code: str) -> None:
    answer = files.transfer(files.request("0611", **change))
    assert answer["respCode"] == code and "fileContent" not in answer


def test_forged_request_is_refused(files: Files) -> None:
    fields: dict[str, Any] = files.request("0611")
    fields["settleDate"] = "0612"                     # signed for 0611
    answer = files.transfer(fields)
    assert answer["respCode"] == "11" and "fileContent" not in answer


def test_the_invented_settlement_endpoint_is_gone(files: Files) -> None:
    r = requests.get(f"{files.base}/unionpay/settlement/20260101", timeout=5)
    assert r.status_code == 404
