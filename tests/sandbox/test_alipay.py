"""The Alipay sandbox (CH §1, §4) driven by the real python-alipay-sdk 3.4.0 over HTTP.

The SDK is configured only from ``server.settings()`` and pointed at the sandbox through
its private ``_gateway`` (CH §0 #2); the control API sets up payments and faults and the
truth (``GET /_sandbox/refunds``) counts executions.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import time
import urllib.error
import urllib.request
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from alipay import AliPay, AliPayConfig  # noqa: TID251 - the real SDK is the point
from alipay.exceptions import AliPayValidationError  # noqa: TID251
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import SandboxServer

BEIJING = timezone(timedelta(hours=8))
PREFIX = "REFUND_GATEWAY_ALIPAY__"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
QUERY = "alipay.trade.fastpay.refund.query"
BILL = "alipay.data.dataservice.bill.downloadurl.query"


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    """The plugin's running sandbox, reset for this test."""
    return refund_sandbox


def client(sandbox: SandboxServer, timeout: float = 5, private_key: str | None = None
           ) -> AliPay:
    settings = sandbox.settings()
    alipay = AliPay(appid=settings[PREFIX + "APP_ID"],
                    app_private_key_string=private_key or settings[PREFIX + "APP_PRIVATE_KEY"],
                    alipay_public_key_string=settings[PREFIX + "ALIPAY_PUBLIC_KEY"],
                    sign_type="RSA2", config=AliPayConfig(timeout=timeout))
    alipay._gateway = settings[PREFIX + "GATEWAY_URL"]
    return alipay


@pytest.fixture
def alipay(sandbox: SandboxServer) -> AliPay:
    return client(sandbox)


def control(sandbox: SandboxServer, path: str, body: dict[str, Any] | None = None) -> Any:
    url = sandbox.url + path
    r = requests.post(url, json=body, timeout=5) if body is not None else \
        requests.get(url, timeout=5)
    r.raise_for_status()
    return r.json()


def payment(sandbox: SandboxServer, fen: int = 10_000, funding: str = "balance"
            ) -> dict[str, Any]:
    doc: dict[str, Any] = control(sandbox, "/_sandbox/payments",
                                  {"route": "alipay", "amount_fen": fen, "funding": funding})
    return doc


def fault(sandbox: SandboxServer, operation: str, kind: str, **params: Any) -> None:
    control(sandbox, "/_sandbox/faults",
            {"route": "alipay", "operation": operation, "kind": kind, "count": 1, **params})


def truth(sandbox: SandboxServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = control(sandbox, "/_sandbox/refunds")["refunds"]
    return [r for r in rows if r["route"] == "alipay"]


def refund(alipay: AliPay, pay: dict[str, Any], amount: str = "25.00", no: str = "R1",
           **kwargs: Any) -> dict[str, Any]:
    answer: dict[str, Any] = alipay.api_alipay_trade_refund(
        amount, out_trade_no=pay["merchant_order_no"], out_request_no=no,
        refund_reason="沙箱退款", **kwargs)
    return answer


def query(alipay: AliPay, pay: dict[str, Any], no: str = "R1") -> dict[str, Any]:
    answer: dict[str, Any] = alipay.server_api(QUERY, {
        "trade_no": pay["channel_trade_no"], "out_request_no": no,
        "query_options": ["gmt_refund_pay", "refund_detail_item_list", "deposit_back_info"]})
    return answer


def notifications(sandbox: SandboxServer) -> list[dict[str, str]]:
    return [dict(parse_qsl(n.body.decode("utf-8")))
            for n in sandbox.pending_notifications("alipay")]


# -- refund ------------------------------------------------------------------------------
def test_refund_succeeds_synchronously(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    answer = refund(alipay, pay)
    assert answer["code"] == "10000" and answer["msg"] == "Success"
    assert answer["fund_change"] == "Y"
    assert answer["trade_no"] == pay["channel_trade_no"]
    assert answer["out_trade_no"] == pay["merchant_order_no"]
    assert answer["refund_fee"] == "25.00" and answer["send_back_fee"] == "25.00"
    assert re.fullmatch(r"1\d\d\*{4}\d{4}", answer["buyer_logon_id"])
    assert re.fullmatch(r"2088\d{12}", answer["buyer_user_id"])
    assert STAMP.fullmatch(answer["gmt_refund_pay"])
    assert answer["refund_detail_item_list"] == [
        {"fund_channel": "ALIPAYACCOUNT", "amount": "25.00", "real_amount": "25.00"}]
    second = refund(alipay, pay, "75.00", no="R2")
    assert second["refund_fee"] == "100.00"          # cumulative for the trade
    rows = truth(sandbox)
    assert [(r["channel_refund_no"], r["amount_fen"], r["status"], r["executions"])
            for r in rows] == [("R1", 2500, "SUCCESS", 1), ("R2", 7500, "SUCCESS", 1)]


def test_card_funded_refund_goes_back_to_the_card(sandbox: SandboxServer,
                                                  alipay: AliPay) -> None:
    answer = refund(alipay, payment(sandbox, funding="bankcard"))
    item = answer["refund_detail_item_list"][0]
    assert item["fund_channel"] == "BANKCARD"
    assert item["fund_type"] in ("DEBIT_CARD", "CREDIT_CARD")


def test_repeat_is_idempotent_and_changed_repeat_is_discordant(
        sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    first = refund(alipay, pay)
    again = refund(alipay, pay)
    assert again["code"] == "10000" and again["fund_change"] == "N"
    assert {k: v for k, v in again.items() if k != "fund_change"} == \
        {k: v for k, v in first.items() if k != "fund_change"}
    changed = refund(alipay, pay, "30.00")
    assert changed["code"] == "40004"
    assert changed["sub_code"] == "ACQ.DISCORDANT_REPEAT_REQUEST"
    assert [r["executions"] for r in truth(sandbox)] == [1]


def test_refusals(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox, 5_000)
    over = refund(alipay, pay, "50.01")
    assert (over["code"], over["sub_code"]) == ("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
    refund(alipay, pay, "30.00", no="A")
    rest = refund(alipay, pay, "20.01", no="B")
    assert rest["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    for bad in ("0", "-1.00", "1.001", "abc"):
        assert refund(alipay, pay, bad, no="C")["sub_code"] == \
            "ACQ.REASON_TRADE_REFUND_FEE_ERR"
    unknown = alipay.api_alipay_trade_refund("1.00", trade_no="2099", out_request_no="X")
    assert (unknown["code"], unknown["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")
    assert len(truth(sandbox)) == 1


def test_request_signature_is_verified(sandbox: SandboxServer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    # Addendum §6: Alipay SIGNS its bad-signature answer, so the SDK verifies and returns it.
    answer = refund(client(sandbox, private_key=pem), payment(sandbox))
    assert (answer["code"], answer["sub_code"]) == ("40002", "isv.invalid-signature")
    assert truth(sandbox) == []


def test_post_form_is_accepted_like_get(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    data = alipay.build_body("alipay.trade.refund", {
        "out_trade_no": pay["merchant_order_no"], "refund_amount": "3.00",
        "out_request_no": "P1"})
    r = requests.post(alipay._gateway, data=alipay.sign_data(data), timeout=5,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer = alipay._verify_and_return_sync_response(r.text, "alipay_trade_refund_response")
    assert answer["fund_change"] == "Y"
    bare = requests.get(alipay._gateway, params={"method": "alipay.trade.refund"}, timeout=5)
    assert bare.json()["error_response"]["sub_code"] == "isv.missing-signature"


# -- query -------------------------------------------------------------------------------
def test_query_with_options_and_bank_leg(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox, funding="bankcard")
    refund(alipay, pay)
    first = query(alipay, pay)
    assert first["code"] == "10000" and first["refund_status"] == "REFUND_SUCCESS"
    assert (first["out_request_no"], first["refund_amount"], first["total_amount"]) == \
        ("R1", "25.00", "100.00")
    assert STAMP.fullmatch(first["gmt_refund_pay"])
    assert first["refund_detail_item_list"][0]["fund_channel"] == "BANKCARD"
    dback = first["deposit_back_info"]
    assert (dback["has_deposit_back"], dback["dback_status"], dback["dback_amount"]) == \
        ("true", "P", "25.00")
    assert STAMP.fullmatch(dback["est_bank_receipt_time"]) and "bank_ack_time" not in dback
    second = query(alipay, pay)["deposit_back_info"]
    assert second["dback_status"] == "S" and STAMP.fullmatch(second["bank_ack_time"])
    notes = notifications(sandbox)
    assert [n.get("notify_type") or n.get("msg_method") for n in notes] == \
        ["trade_status_sync", "alipay.trade.refund.depositback.completed"]


def test_abnormal_card_refund_ends_dback_f(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)                      # the abnormal fault implies a card leg
    fault(sandbox, "refund", "abnormal")
    assert refund(alipay, pay)["fund_change"] == "Y"
    assert query(alipay, pay)["deposit_back_info"]["dback_status"] == "P"
    last = query(alipay, pay)
    assert last["refund_status"] == "REFUND_SUCCESS"      # money in the Alipay balance
    assert last["deposit_back_info"]["dback_status"] == "F"
    [row] = truth(sandbox)
    assert row["status"] == "SUCCESS" and row["extra"]["dback_status"] == "F"


def test_query_of_unknown_or_pending_refund(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    unknown = query(alipay, pay, "NOPE")
    assert unknown["code"] == "10000" and "refund_status" not in unknown
    control(sandbox, "/_sandbox/config", {"settle": {"alipay": {"mode": "after_queries",
                                                                "n": 2}}})
    assert refund(alipay, pay)["fund_change"] == "N"
    assert "refund_status" not in query(alipay, pay)
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"
    gone = alipay.api_alipay_trade_fastpay_refund_query("R1", trade_no="2099")
    assert gone["sub_code"] == "ACQ.TRADE_NOT_EXIST"


# -- notifications -----------------------------------------------------------------------
def test_notifications_verify_with_the_sdk(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox, 2_500)
    refund(alipay, pay)
    [note] = notifications(sandbox)
    assert note["notify_type"] == "trade_status_sync"
    assert (note["out_biz_no"], note["refund_fee"], note["trade_status"]) == \
        ("R1", "25.00", "TRADE_CLOSED")                      # fully refunded
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", note["gmt_refund"])
    signature = note.pop("sign")
    assert alipay.verify(note, signature)
    fault(sandbox, "notify", "bad_signature")
    refund(alipay, payment(sandbox), no="R2")
    [forged] = notifications(sandbox)
    assert forged["trade_status"] == "TRADE_SUCCESS"
    assert not alipay.verify(forged, forged.pop("sign"))


def test_notification_goes_to_the_request_notify_url(sandbox: SandboxServer,
                                                     alipay: AliPay) -> None:
    pay = payment(sandbox)
    # A public parameter (server_api kwargs), not part of biz_content.
    alipay.server_api("alipay.trade.refund", {
        "out_trade_no": pay["merchant_order_no"], "refund_amount": "1.00",
        "out_request_no": "R1"}, notify_url="http://127.0.0.1:9/alipay/notify")
    with sandbox.state.lock:
        urls = [n.url for n in sandbox.state.notifications]
    assert urls == ["http://127.0.0.1:9/alipay/notify"]


def test_depositback_notification_verifies(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox, funding="bankcard")
    refund(alipay, pay)
    query(alipay, pay)
    query(alipay, pay)
    notes = notifications(sandbox)
    [dback] = [n for n in notes if n.get("msg_method")]
    assert dback["msg_method"] == "alipay.trade.refund.depositback.completed"
    biz = json.loads(dback["biz_content"])
    assert (biz["out_request_no"], biz["dback_status"], biz["dback_amount"]) == \
        ("R1", "S", "25.00")
    assert alipay.verify(dback, dback.pop("sign"))


def test_after_seconds_settles_without_a_query(sandbox: SandboxServer,
                                               alipay: AliPay) -> None:
    control(sandbox, "/_sandbox/config", {"settle": {"alipay": {"mode": "after_seconds",
                                                                "seconds": 0.3}}})
    pay = payment(sandbox)
    assert refund(alipay, pay)["fund_change"] == "N"
    deadline = time.monotonic() + 5
    while truth(sandbox)[0]["status"] != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert truth(sandbox)[0]["status"] == "SUCCESS"       # settled by the server's tick
    assert [n["notify_type"] for n in notifications(sandbox)] == ["trade_status_sync"]


# -- bills -------------------------------------------------------------------------------
def read_bill(data: bytes) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            assert not info.flag_bits & 0x800               # GBK name, no UTF-8 flag
            name = info.filename.encode("cp437").decode("gbk")
            raw = archive.read(info)
            assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
            files[name] = raw.decode("gbk").split("\r\n")
    return files


def test_bill_download(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    refund(alipay, pay, "12.34")
    today = datetime.now(BEIJING).date()
    answer = alipay.server_api(BILL, {"bill_type": "trade", "bill_date": today.isoformat()})
    assert answer["code"] == "10000"
    url = answer["bill_download_url"]
    assert url.startswith(sandbox.url + "/alipay/bills/download?")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        files = read_bill(response.read())
    pid = next(iter(files)).split("_")[0]
    detail = files[f"{pid}_{today:%Y%m%d}_业务明细.csv"]
    assert f"{pid}_{today:%Y%m%d}_业务明细(汇总).csv" in files
    assert detail[0] == "#支付宝业务明细查询" and detail[1] == f"#账号：[{pid}]"
    assert detail[2].startswith(f"#起始日期：[{today:%Y年%m月%d日} 00:00:00]")
    header = detail[4].split(",")
    assert header[0] == "支付宝交易号" and "订单金额（元）" in header
    rows = [dict(zip(header, (c.strip() for c in line.split(",")), strict=True))
            for line in detail[5:] if line and not line.startswith("#")]
    assert all(cell.endswith("\t") for cell in detail[5].split(","))
    trade, back = rows
    assert (trade["业务类型"], trade["订单金额（元）"], trade["服务费（元）"]) == \
        ("交易", "100.00", "-0.60")
    assert (back["业务类型"], back["支付宝交易号"], back["商户订单号"]) == \
        ("退款", pay["channel_trade_no"], pay["merchant_order_no"])
    assert (back["退款批次号/请求号"], back["订单金额（元）"], back["商家实收（元）"]) == \
        ("R1", "-12.34", "-12.34")
    # A refund row repeats its trade's 创建时间; 完成时间 is the refund's (public sample).
    assert back["创建时间"] == trade["创建时间"] and back["完成时间"] >= trade["完成时间"]
    assert back["服务费（元）"] == "0.07"          # 0.6 % of 12.34 given back
    # The summary: its own title, one row per 门店 and the 合计 row (addendum §7), each
    # figure the sum of the detail column of that name.
    summary = files[f"{pid}_{today:%Y%m%d}_业务明细(汇总).csv"]
    assert summary[0] == "#支付宝业务汇总查询"
    assert summary[3] == "#" + "-" * 41 + "业务汇总列表" + "-" * 40
    head = summary[4].split(",")
    assert head[:4] == ["门店编号", "门店名称", "交易订单总笔数", "退款订单总笔数"]
    store, total = ([c.strip() for c in line.split(",")] for line in summary[5:7])
    assert total[0] == "合计" and store[2:] == total[2:]
    figures = dict(zip(head, total, strict=True))
    assert (figures["交易订单总笔数"], figures["退款订单总笔数"], figures["订单金额（元）"],
            figures["商家实收（元）"], figures["服务费（元）"], figures["实收净额（元）"]) == \
        ("1", "1", "87.66", "87.66", "-0.53", "87.13")
    assert summary[7] == "#" + "-" * 40 + "业务汇总列表结束" + "-" * 37
    footer = [line for line in detail if line.startswith("#")][-3:]
    assert footer[0] == "#交易合计：1笔，商家实收共100.00元，商家优惠共0.00元"
    assert footer[1] == "#退款合计：1笔，商家实收退款共-12.34元，商家优惠退款共0.00元"
    assert footer[2].startswith("#导出时间：[")
    expired = url.replace("fileId=", "fileId=0")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(expired, timeout=5)  # noqa: S310 - loopback
    assert raised.value.code == 404
    raised.value.close()


def test_signcustomer_bill(sandbox: SandboxServer, alipay: AliPay) -> None:
    """The 账务明细 bill (addendum §7): its own ZIP, ledger columns, no refund numbers."""
    pay = payment(sandbox)
    refund(alipay, pay, "12.34")
    today = datetime.now(BEIJING).date()
    answer = alipay.server_api(BILL, {"bill_type": "signcustomer",
                                      "bill_date": today.isoformat()})
    assert answer["code"] == "10000" and "bizType=signcustomer" in answer["bill_download_url"]
    with urllib.request.urlopen(answer["bill_download_url"], timeout=5) as response:  # noqa: S310
        files = read_bill(response.read())
    account = next(iter(files)).split("_")[0]
    assert account.endswith("0156") and len(account) == 20
    detail = files[f"{account}_{today:%Y%m%d}_账务明细.csv"]
    assert files[f"{account}_{today:%Y%m%d}_账务汇总.csv"][0] == "#支付宝账务汇总查询"
    assert detail[0] == "#支付宝账务明细查询" and detail[1] == f"#账号：[{account}]"
    assert detail[4] == ("账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,"
                         "收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注")
    rows = [[c.strip() for c in line.split(",")] for line in detail[5:]
            if line and not line.startswith("#")]
    assert [(r[10], r[6], r[7]) for r in rows] == [("在线支付", "100.00", "0.00"),
                                                   ("收费", "0.00", "0.60"),
                                                   ("交易退款", "0.00", "12.34")]
    assert {r[1] for r in rows} == {pay["channel_trade_no"]}
    footer = [line for line in detail if line.startswith("#")][-3:]
    assert footer[:2] == ["#支出合计：2笔，共12.94元", "#收入合计：1笔，共100.00元"]


def test_bill_faults_and_absence(sandbox: SandboxServer, alipay: AliPay) -> None:
    none = alipay.server_api(BILL, {"bill_type": "trade", "bill_date": "2020-01-01"})
    assert (none["code"], none["sub_code"]) == ("40004", "isp.bill_not_exist")
    pay = payment(sandbox)
    refund(alipay, pay, "1.00", no="A")
    refund(alipay, pay, "2.00", no="B")
    fault(sandbox, "statement", "missing_from_statement", channel_refund_no="A")
    day = datetime.now(BEIJING).date().isoformat()
    r = requests.get(f"{sandbox.url}/_sandbox/statements/alipay/{day}", timeout=5)
    [detail] = [lines for name, lines in read_bill(r.content).items()
                if name.endswith("业务明细.csv")]
    refunds = [line for line in detail if "退款\t" in line]
    assert len(refunds) == 1 and "B\t" in refunds[0].split(",")


# -- faults ------------------------------------------------------------------------------
def test_timeout_after_commit_executes_once(sandbox: SandboxServer) -> None:
    pay = payment(sandbox)
    fault(sandbox, "refund", "timeout_after_commit", stall_seconds=1.5)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        refund(client(sandbox, timeout=0.5), pay)
    assert [r["executions"] for r in truth(sandbox)] == [1]
    again = refund(client(sandbox), pay)
    assert again["code"] == "10000" and again["fund_change"] == "N"
    assert [r["executions"] for r in truth(sandbox)] == [1]


def test_drop_before_commit_executes_nothing(sandbox: SandboxServer, alipay: AliPay) -> None:
    fault(sandbox, "refund", "drop_before_commit")
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        refund(alipay, payment(sandbox))
    assert truth(sandbox) == []


def test_http_500(sandbox: SandboxServer, alipay: AliPay) -> None:
    fault(sandbox, "refund", "http_500")
    with pytest.raises(urllib.error.HTTPError) as raised:
        refund(alipay, payment(sandbox))
    assert raised.value.code == 500
    raised.value.close()                         # the SDK leaves the error's socket open
    assert truth(sandbox) == []


def test_rate_limited_is_a_signed_answer(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    fault(sandbox, "refund", "rate_limited")
    limited = refund(alipay, pay)
    assert (limited["code"], limited["sub_code"]) == ("40004", "isv.app-call-limited")
    assert truth(sandbox) == []
    assert refund(alipay, pay)["fund_change"] == "Y"


def test_bad_signature_answer(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    fault(sandbox, "refund", "bad_signature")
    with pytest.raises(AliPayValidationError):
        refund(alipay, pay)
    assert [r["executions"] for r in truth(sandbox)] == [1]
    fault(sandbox, "query", "bad_signature")
    with pytest.raises(AliPayValidationError):
        query(alipay, pay)
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"


def test_client_settings(sandbox: SandboxServer) -> None:
    own = sandbox.channel("alipay").client_settings(sandbox.url)
    assert own[PREFIX + "GATEWAY_URL"] == sandbox.url + "/gateway.do"
    assert own[PREFIX + "APP_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    assert PREFIX + "NOTIFY_URL" not in own                 # none configured
    control(sandbox, "/_sandbox/config", {"notify_url": {"alipay": "http://127.0.0.1:9/n"}})
    assert sandbox.channel("alipay").client_settings(sandbox.url)[PREFIX + "NOTIFY_URL"] == \
        "http://127.0.0.1:9/n"
