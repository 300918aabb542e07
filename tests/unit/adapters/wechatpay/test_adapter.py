"""The WeChat adapter with the real SDK over canned HTTP answers (``responses``).

Canned 2xx answers are signed with a platform key generated for the test, so the SDK's
own verification runs; our requests are checked against the merchant key.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr
from urllib3.exceptions import ProtocolError

from adapters.wechatpay import adapter as adapter_mod
from adapters.wechatpay.adapter import WECHAT_QUERY_SCHEDULE, BillKind, WechatPayAdapter, build
from adapters.wechatpay.client import REFUND_PATH, WechatPayClient
from gateway import failpoints
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    StatementError,
)
from gateway.models import ChannelStatus, RefundStatus
from gateway.money import Money
from gateway.ports import (
    AbnormalRefundInstruction,
    AbnormalRefundPort,
    AbnormalTarget,
)
from gateway.settings import GatewaySettings, Timeouts, WechatPaySettings
from tests.unit.adapters.wechatpay import canned
from tests.unit.adapters.wechatpay.canned import BASE, PUB_ID, keys, refund_object

S = ChannelStatus
REFUNDS = BASE + REFUND_PATH


def json_answer(doc: Any, status: int = 200, *, sign: bool = True,
                **header_kw: Any) -> dict[str, Any]:
    body = json.dumps(doc, ensure_ascii=False)
    headers = canned.signed_headers(body, **header_kw) if sign else \
        {"Request-ID": "REQ-ERR-1"}
    return {"status": status, "body": body.encode(), "headers": headers,
            "content_type": "application/json; charset=utf-8"}


def error(status: int, code: str | None, message: str = "msg") -> dict[str, Any]:
    doc = {"code": code, "message": message} if code else {}
    return json_answer(doc, status, sign=False)


def verify_authorization(req: Any) -> None:
    """Our request is signed (CH §2.2) over exactly the bytes that were sent."""
    auth = req.headers["Authorization"]
    fields = dict(re.findall(r'(\w+)="([^"]*)"', auth))
    assert auth.startswith("WECHATPAY2-SHA256-RSA2048 ")
    assert fields["mchid"] == canned.MCHID and fields["serial_no"] == canned.CERT_SERIAL
    path = req.path_url
    body = req.body.decode() if isinstance(req.body, bytes) else (req.body or "")
    text = f"{req.method}\n{path}\n{fields['timestamp']}\n{fields['nonce_str']}\n{body}\n"
    keys().merchant.public_key().verify(base64.b64decode(fields["signature"]), text.encode(),
                                        padding.PKCS1v15(), hashes.SHA256())


# -- submit ------------------------------------------------------------------------------
def test_submit_processing_sends_the_ch_5_1_request(adapter: WechatPayAdapter,
                                                   mocked: responses.RequestsMock) -> None:
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no)))
    result = adapter.submit(r)
    assert result.status is S.PROCESSING
    assert result.channel_refund_no == r.channel_refund_no
    assert result.channel_refund_id == "50000000382019052709732678859"
    assert result.amount == Money(2500)
    assert result.raw["request_id"] == "08F78BB5AF0610D2F4B0F4A2B2020000"
    req = mocked.calls[0].request
    verify_authorization(req)
    assert req.headers["Wechatpay-Serial"] == PUB_ID
    sent = json.loads(req.body)
    assert sent == {"notify_url": "https://gw.example.com/notify/wechatpay",
                    "out_refund_no": r.channel_refund_no,
                    "amount": {"refund": 2500, "total": 10_000, "currency": "CNY"},
                    "transaction_id": r.payment.channel_trade_no,
                    "reason": "goods not delivered"}


def test_submit_success_keeps_where_the_money_went(adapter: WechatPayAdapter,
                                                   mocked: responses.RequestsMock) -> None:
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(
        r.channel_refund_no, "SUCCESS", user_received_account="工商银行借记卡6222021234567890123",
        channel="ORIGINAL")))
    result = adapter.submit(r)
    assert result.status is S.SUCCEEDED
    assert result.succeeded_at == datetime(2026, 11, 20, 2, 0, 5, tzinfo=UTC)
    assert result.received_account == "工商银行借记卡****0123"
    assert result.bank_ack["channel"] == "ORIGINAL"
    assert result.bank_ack["funds_account"] == "AVAILABLE"
    assert "6222021234567890123" not in json.dumps(result.raw, ensure_ascii=False)


@pytest.mark.parametrize(("status", "expected"), [
    ("SUCCESS", S.SUCCEEDED), ("PROCESSING", S.PROCESSING), ("ABNORMAL", S.ABNORMAL),
    ("CLOSED", S.CLOSED), ("SOMETHING_NEW", S.PROCESSING)])
def test_submit_every_status(adapter: WechatPayAdapter, mocked: responses.RequestsMock,
                             status: str, expected: ChannelStatus) -> None:
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no,
                                                                    status)))
    result = adapter.submit(r)
    assert result.status is expected
    if expected in (S.ABNORMAL, S.CLOSED):
        assert result.failure_code == status


def test_submit_uses_out_trade_no_without_transaction_id(
        adapter: WechatPayAdapter, mocked: responses.RequestsMock) -> None:
    from dataclasses import replace
    r = canned.refund()
    r = replace(r, payment=replace(r.payment, channel_trade_no=""))
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no)))
    adapter.submit(r)
    sent = json.loads(mocked.calls[0].request.body)
    assert sent["out_trade_no"] == "ORD1" and "transaction_id" not in sent


# every row of CH §5.3 on submit
@pytest.mark.parametrize(("http", "code", "outcome"), [
    (500, "SYSTEM_ERROR", OutcomeUnknown),
    (429, "FREQUENCY_LIMITED", OutcomeUnknown),
    (502, "SERVICE_UNAVAILABLE", OutcomeUnknown),
    (503, "SERVICE_UNAVAILABLE", OutcomeUnknown),
    (401, "SIGN_ERROR", ChannelAuthError),
    (404, "MCH_NOT_EXISTS", ChannelAuthError),
    (403, "NO_AUTH", ChannelAuthError),
    (403, "NOT_ENOUGH", S.FAILED),
    (403, "USER_ACCOUNT_ABNORMAL", S.FAILED),
    (400, "PARAM_ERROR", S.FAILED),
    (400, "INVALID_REQUEST", S.FAILED),
    (404, "RESOURCE_NOT_EXISTS", S.FAILED),
    (400, "BRAND_NEW_CODE", OutcomeUnknown),
    (500, None, OutcomeUnknown),
])
def test_submit_error_rows(adapter: WechatPayAdapter, mocked: responses.RequestsMock,
                           http: int, code: str | None, outcome: object) -> None:
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **error(http, code, "余额不足"))
    if isinstance(outcome, ChannelStatus):
        result = adapter.submit(r)
        assert result.status is outcome
        assert result.failure_code == code and result.failure_message == "余额不足"
        assert result.raw["request_id"] == "REQ-ERR-1"
        return
    assert isinstance(outcome, type)
    with pytest.raises(outcome) as info:
        adapter.submit(r)
    err = info.value
    assert isinstance(err, OutcomeUnknown | ChannelAuthError)
    assert err.channel == "wechatpay" and err.operation == "submit"
    assert err.http_status == http and err.request_id == "REQ-ERR-1"
    assert err.code == (code or f"HTTP_{http}")


@pytest.mark.parametrize("tamper", ["unsigned", "forged", "other_serial", "hex_serial",
                                    "bad_type"])
def test_unverifiable_2xx_is_outcome_unknown(adapter: WechatPayAdapter,
                                             mocked: responses.RequestsMock,
                                             tamper: str) -> None:
    r = canned.refund()
    doc = refund_object(r.channel_refund_no, "SUCCESS")
    answer = json_answer(doc)
    h = answer["headers"]
    if tamper == "unsigned":
        answer = json_answer(doc, sign=False)
    elif tamper == "forged":
        h["Wechatpay-Signature"] = canned.sign("something else\n")
    elif tamper == "other_serial":
        h["Wechatpay-Serial"] = "PUB_KEY_ID_SOMEONE_ELSE"
    elif tamper == "hex_serial":   # would make the SDK fetch /v3/certificates
        h["Wechatpay-Serial"] = "5157F09EFDC096DE15EBE81A47057A72"
    else:
        h["Wechatpay-Signature-Type"] = "WECHATPAY2-SM2-WITH-SM3"
    mocked.add(responses.POST, REFUNDS, **answer)
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(r)
    assert info.value.code == "SIGNATURE_INVALID" and info.value.http_status == 200
    assert len(mocked.calls) == 1   # no certificate download


def test_answer_about_another_refund_is_unknown(adapter: WechatPayAdapter,
                                                mocked: responses.RequestsMock) -> None:
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object("SOMEONEELSE", "SUCCESS")))
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(canned.refund())
    assert info.value.code == "REFUND_NO_MISMATCH"


def test_signed_2xx_that_is_not_json_is_unknown(adapter: WechatPayAdapter,
                                                mocked: responses.RequestsMock) -> None:
    body = "<html>ok</html>"
    mocked.add(responses.POST, REFUNDS, status=200, body=body,
               headers=canned.signed_headers(body), content_type="application/json")
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(canned.refund())
    assert info.value.code == "UNPARSEABLE"


@pytest.mark.parametrize(("exc", "outcome", "code"), [
    (requests.ConnectTimeout("connect timed out"), ChannelUnavailable, "CONNECT_TIMEOUT"),
    (requests.ReadTimeout("read timed out"), OutcomeUnknown, "READ_TIMEOUT"),
    (requests.ConnectionError(ProtocolError("Connection aborted.",
                                            ConnectionResetError(104, "reset"))),
     OutcomeUnknown, "CONNECTION_LOST"),
    (requests.exceptions.ChunkedEncodingError("short body"), OutcomeUnknown, "TRANSPORT"),
])
def test_transport_classification(adapter: WechatPayAdapter, mocked: responses.RequestsMock,
                                  exc: Exception, outcome: type, code: str) -> None:
    mocked.add(responses.POST, REFUNDS, body=exc)
    with pytest.raises(outcome) as info:
        adapter.submit(canned.refund())
    assert info.value.code == code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_unavailable(clock: Any) -> None:
    k = keys()
    client = WechatPayClient(mchid=canned.MCHID, appid=canned.APPID,
                             private_key_pem=k.merchant_pem, cert_serial_no=canned.CERT_SERIAL,
                             apiv3_key=canned.APIV3, base_url=f"http://127.0.0.1:{free_port()}",
                             connect_timeout=1, read_timeout=1,
                             public_key_pem=k.platform_public_pem, public_key_id=PUB_ID)
    with pytest.raises(ChannelUnavailable) as info:
        WechatPayAdapter(client, clock=clock).submit(canned.refund())
    assert info.value.code == "CONNECT_FAILED"


def test_timeout_is_always_set(adapter: WechatPayAdapter, mocked: responses.RequestsMock,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real = requests.Session.request

    def spy(self: requests.Session, *a: Any, **kw: Any) -> Any:
        seen.append(kw.get("timeout"))
        return real(self, *a, **kw)

    monkeypatch.setattr(requests.Session, "request", spy)
    r = canned.refund()
    mocked.add(responses.GET, f"{REFUNDS}/{r.channel_refund_no}",
               **json_answer(refund_object(r.channel_refund_no)))
    adapter.query(r)
    assert seen == [(1, 2)]


def test_after_send_failpoint_fires_once_in_submit_only(
        adapter: WechatPayAdapter, mocked: responses.RequestsMock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hits: list[str] = []
    monkeypatch.setattr(failpoints, "failpoint", hits.append)
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no)))
    mocked.add(responses.GET, f"{REFUNDS}/{r.channel_refund_no}",
               **json_answer(refund_object(r.channel_refund_no)))
    adapter.query(r)
    assert hits == []
    adapter.submit(r)
    assert hits == [failpoints.AFTER_SEND]


def test_bad_refund_numbers_and_amounts_fail_before_io(adapter: WechatPayAdapter,
                                                       mocked: responses.RequestsMock) -> None:
    with pytest.raises(InvalidRequest):
        adapter.submit(canned.refund("bad no/with slash"))
    with pytest.raises(InvalidRequest):
        adapter.submit(canned.refund(amount=20_000))
    assert not mocked.calls


# -- query -------------------------------------------------------------------------------
def test_query_success_and_not_found(adapter: WechatPayAdapter,
                                     mocked: responses.RequestsMock) -> None:
    r = canned.refund()
    url = f"{REFUNDS}/{r.channel_refund_no}"
    mocked.add(responses.GET, url, **json_answer(refund_object(r.channel_refund_no, "SUCCESS")))
    mocked.add(responses.GET, url, **error(404, "RESOURCE_NOT_EXISTS"))
    assert adapter.query(r).status is S.SUCCEEDED
    verify_authorization(mocked.calls[0].request)
    gone = adapter.query(r)
    assert gone.status is S.NOT_FOUND and gone.channel_refund_no == r.channel_refund_no


@pytest.mark.parametrize(("http", "code", "outcome"), [
    (400, "PARAM_ERROR", OutcomeUnknown), (403, "NOT_ENOUGH", OutcomeUnknown),
    (500, "SYSTEM_ERROR", OutcomeUnknown), (429, "FREQUENCY_LIMITED", OutcomeUnknown),
    (401, "SIGN_ERROR", ChannelAuthError), (403, "NO_AUTH", ChannelAuthError)])
def test_query_errors_never_fail_the_refund(adapter: WechatPayAdapter,
                                            mocked: responses.RequestsMock, http: int,
                                            code: str, outcome: type) -> None:
    r = canned.refund()
    mocked.add(responses.GET, f"{REFUNDS}/{r.channel_refund_no}", **error(http, code))
    with pytest.raises(outcome):
        adapter.query(r)


# -- abnormal refund -----------------------------------------------------------------------
def abnormal_url(refund_id: str) -> str:
    return f"{REFUNDS}/{refund_id}/apply-abnormal-refund"


def test_abnormal_refund_to_user_card_encrypts_the_card(
        adapter: WechatPayAdapter, mocked: responses.RequestsMock) -> None:
    assert isinstance(adapter, AbnormalRefundPort)
    assert adapter.capabilities.abnormal_refund_api
    r = canned.refund(channel_refund_id="50000000382019052709732678859",
                      status=RefundStatus.ABNORMAL)
    mocked.add(responses.POST, abnormal_url(r.channel_refund_id or ""),
               **json_answer(refund_object(r.channel_refund_no, "PROCESSING",
                                           channel="OTHER_BANKCARD")))
    result = adapter.apply_abnormal_refund(r, AbnormalRefundInstruction(
        AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
    assert result.status is S.PROCESSING
    req = mocked.calls[0].request
    verify_authorization(req)
    assert req.headers["Wechatpay-Serial"] == PUB_ID
    sent = json.loads(req.body)
    assert sent["type"] == "USER_BANK_CARD" and sent["bank_type"] == "ICBC_DEBIT"
    assert sent["out_refund_no"] == r.channel_refund_no
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),  # noqa: S303
                        label=None)
    plat = keys().platform
    assert plat.decrypt(base64.b64decode(sent["bank_account"]), oaep) == \
        b"6222021234567890123"
    assert plat.decrypt(base64.b64decode(sent["real_name"]), oaep).decode() == "张三"
    assert "6222021234567890123" not in json.dumps(result.raw, ensure_ascii=False)


def test_abnormal_refund_to_merchant_card_sends_no_card(
        adapter: WechatPayAdapter, mocked: responses.RequestsMock) -> None:
    r = canned.refund(channel_refund_id="503", status=RefundStatus.ABNORMAL)
    mocked.add(responses.POST, abnormal_url("503"),
               **json_answer(refund_object(r.channel_refund_no, "PROCESSING")))
    adapter.apply_abnormal_refund(r, AbnormalRefundInstruction(
        AbnormalTarget.MERCHANT_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
    sent = json.loads(mocked.calls[0].request.body)
    assert sent == {"out_refund_no": r.channel_refund_no, "type": "MERCHANT_BANK_CARD"}


def test_refused_abnormal_application_leaves_the_refund_abnormal(
        adapter: WechatPayAdapter, mocked: responses.RequestsMock) -> None:
    r = canned.refund(channel_refund_id="503", status=RefundStatus.ABNORMAL)
    mocked.add(responses.POST, abnormal_url("503"), **error(400, "INVALID_REQUEST", "状态不符"))
    result = adapter.apply_abnormal_refund(r, AbnormalRefundInstruction(
        AbnormalTarget.MERCHANT_BANK_CARD))
    assert result.status is S.ABNORMAL and result.failure_code == "INVALID_REQUEST"


@pytest.mark.parametrize("instruction", [
    AbnormalRefundInstruction(AbnormalTarget.USER_BANK_CARD),
    AbnormalRefundInstruction(AbnormalTarget.USER_BANK_CARD, "icbc", "6222021234567890123",
                              "张三"),
    AbnormalRefundInstruction(AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "62-22", "张三"),
    AbnormalRefundInstruction(AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT",
                              "6222021234567890123", " "),
])
def test_abnormal_instruction_checked_before_io(adapter: WechatPayAdapter,
                                                mocked: responses.RequestsMock,
                                                instruction: AbnormalRefundInstruction
                                                ) -> None:
    r = canned.refund(channel_refund_id="503", status=RefundStatus.ABNORMAL)
    with pytest.raises(InvalidRequest) as info:
        adapter.apply_abnormal_refund(r, instruction)
    assert "6222021234567890123" not in str(info.value)
    with pytest.raises(InvalidRequest):
        adapter.apply_abnormal_refund(canned.refund(), AbnormalRefundInstruction(
            AbnormalTarget.MERCHANT_BANK_CARD))   # no refund_id yet
    assert not mocked.calls


# -- bills ---------------------------------------------------------------------------------
BILL = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
        "交易状态\r\n`2026-11-19 20:53:36,`wx,`1900000109,`0,`,`42000,`ORD1,`o,`JSAPI,"
        "`REFUND\r\n").encode()


def bill_answers(mocked: responses.RequestsMock, data: bytes, *, path: str = "tradebill",
                 digest: str | None = None, url: str | None = None) -> None:
    url = url or f"{BASE}/v3/billdownload/file?token=T0KEN"
    digest = digest or hashlib.sha1(data, usedforsecurity=False).hexdigest()
    mocked.add(responses.GET, re.compile(re.escape(f"{BASE}/v3/bill/{path}") + r"\?.*"),
               **json_answer({"hash_type": "SHA1",
                              "hash_value": digest,
                              "download_url": url}))
    mocked.add(responses.GET, re.compile(r".*/v3/billdownload/file.*"),
               body=gzip.compress(data), status=200, content_type="application/octet-stream")


def test_refund_bill_downloaded_and_hash_checked(adapter: WechatPayAdapter,
                                                mocked: responses.RequestsMock) -> None:
    bill_answers(mocked, BILL)
    assert adapter.download_statement(date(2026, 11, 19)) == BILL
    first = mocked.calls[0].request
    assert "bill_date=2026-11-19&bill_type=REFUND&tar_type=GZIP" in first.url
    verify_authorization(first)
    verify_authorization(mocked.calls[1].request)   # the download is signed too (CH §5.7)


def test_fundflow_and_all_bills(adapter: WechatPayAdapter,
                                mocked: responses.RequestsMock) -> None:
    bill_answers(mocked, BILL, path="fundflowbill")
    assert adapter.download_bill(date(2026, 11, 19), BillKind.FUNDFLOW_BASIC) == BILL
    assert "account_type=BASIC" in mocked.calls[0].request.url
    bill_answers(mocked, BILL)
    assert adapter.download_bill(date(2026, 11, 19), "ALL") == BILL
    assert "bill_type=ALL" in mocked.calls[2].request.url


def test_bill_hash_mismatch(adapter: WechatPayAdapter, mocked: responses.RequestsMock) -> None:
    bill_answers(mocked, BILL, digest="0" * 40)
    with pytest.raises(StatementError, match="SHA1"):
        adapter.download_statement(date(2026, 11, 19))


def test_bill_gzip_bomb_refused(adapter: WechatPayAdapter,
                                mocked: responses.RequestsMock) -> None:
    bomb = b"\0" * (64 << 20)
    bill_answers(mocked, bomb)
    with pytest.raises(StatementError, match="gzip guard"):
        adapter.download_statement(date(2026, 11, 19))


def test_bill_url_must_start_with_the_base_url(adapter: WechatPayAdapter,
                                              mocked: responses.RequestsMock) -> None:
    bill_answers(mocked, BILL, url="https://evil.example/v3/billdownload/file?token=T")
    with pytest.raises(StatementError, match="BASE_URL"):
        adapter.download_statement(date(2026, 11, 19))
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(("http", "code", "outcome"), [
    (400, "NO_STATEMENT_EXIST", StatementError), (400, "STATEMENT_CREATING", OutcomeUnknown),
    (400, "INVALID_REQUEST", StatementError), (403, "NO_AUTH", ChannelAuthError),
    (500, "SYSTEM_ERROR", OutcomeUnknown)])
def test_bill_errors(adapter: WechatPayAdapter, mocked: responses.RequestsMock, http: int,
                     code: str, outcome: type) -> None:
    mocked.add(responses.GET, re.compile(r".*/v3/bill/tradebill.*"), **error(http, code))
    with pytest.raises(outcome) as info:
        adapter.download_statement(date(2026, 11, 19))
    if code == "NO_STATEMENT_EXIST":
        assert "no statement for 2026-11-19" in str(info.value)
    if code == "STATEMENT_CREATING":
        assert isinstance(info.value, OutcomeUnknown) and info.value.code == code


# -- construction ----------------------------------------------------------------------------
def settings(**kw: Any) -> GatewaySettings:
    k = keys()
    base: dict[str, Any] = dict(
        mchid=canned.MCHID, appid=canned.APPID, private_key=SecretStr(k.merchant_pem),
        cert_serial_no=canned.CERT_SERIAL, apiv3_key=SecretStr(canned.APIV3),
        public_key=SecretStr(k.platform_public_pem), public_key_id=PUB_ID, base_url=BASE + "/",
        timeouts=Timeouts(connect=1, read=2))
    base.update(kw)
    return GatewaySettings(wechatpay=WechatPaySettings(**base))


def test_build_public_key_mode_with_a_pkcs1_key(mocked: responses.RequestsMock) -> None:
    adapter = build(settings(private_key=SecretStr(keys().merchant_pkcs1_pem)),
                    lambda: canned.NOW)
    assert isinstance(adapter, WechatPayAdapter)
    r = canned.refund()
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no)))
    adapter.submit(r)
    verify_authorization(mocked.calls[0].request)   # base_url without trailing slash
    adapter.close()


def test_build_needs_settings() -> None:
    with pytest.raises(ConfigurationError) as info:
        build(GatewaySettings(), lambda: canned.NOW)
    assert info.value.setting == "REFUND_GATEWAY_WECHATPAY"


@pytest.mark.parametrize(("kw", "setting"), [
    ({"apiv3_key": SecretStr("short")}, "REFUND_GATEWAY_WECHATPAY__APIV3_KEY"),
    ({"private_key": SecretStr("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")},
     "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"),
    ({"public_key_id": None}, "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID"),
    ({"public_key": None, "public_key_id": None, "verification": "both"},
     "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY"),
    ({"verification": "certificate"}, "REFUND_GATEWAY_WECHATPAY__VERIFICATION"),
    ({"sub_mchid": canned.MCHID}, "REFUND_GATEWAY_WECHATPAY__SUB_MCHID"),
])
def test_build_rejects_bad_settings_naming_them(kw: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build(settings(**kw), lambda: canned.NOW)
    assert info.value.setting == setting
    assert "PRIVATE KEY" not in str(info.value) and canned.APIV3 not in str(info.value)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []

    def refuse(*a: Any, **kw: Any) -> Any:
        calls.append(str(a[:2]))
        raise AssertionError("the SDK tried the network at construction")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    yield calls


def test_certificate_mode_builds_without_the_network(no_network: list[str]) -> None:
    # CH §0 #3: the SDK's own constructor would download from api.mch.weixin.qq.com
    adapter = build(settings(public_key=None, public_key_id=None), lambda: canned.NOW)
    assert isinstance(adapter, WechatPayAdapter)
    assert "verification='certificate'" in repr(adapter)
    assert no_network == []


def test_certificate_mode_with_a_seeded_dir(tmp_path: Path,
                                            mocked: responses.RequestsMock) -> None:
    serial = 0x5157F09EFDC096DE15EBE81A47057A72
    (tmp_path / f"{serial:X}.pem").write_text(keys().platform_cert(serial))
    adapter = build(settings(public_key=None, public_key_id=None, cert_dir=str(tmp_path)),
                    lambda: canned.NOW)
    assert isinstance(adapter, WechatPayAdapter)
    r = canned.refund()
    # the scheduled download fails (WeChat out of reach): the seeded certificate verifies
    mocked.add(responses.GET, BASE + "/v3/certificates",
               body=requests.ConnectionError("unreachable"))
    mocked.add(responses.POST, REFUNDS, **json_answer(refund_object(r.channel_refund_no),
                                                      serial=f"{serial:X}"))
    assert adapter.submit(r).status is S.PROCESSING
    assert [c.request.method for c in mocked.calls] == ["GET", "POST"]
    assert "Wechatpay-Serial" not in mocked.calls[1].request.headers


def test_capabilities_follow_ch_5() -> None:
    caps = WechatPayAdapter.capabilities
    assert caps.idempotent_submit and caps.refund_query and caps.notifications
    assert caps.statements and caps.partial_refunds and caps.abnormal_refund_api
    assert caps.max_refunds == 50 and caps.refund_window is not None
    assert caps.refund_window.days == 365 and caps.arrival_working_days == (0, 3)
    assert caps.refund_no is adapter_mod.OUT_REFUND_NO and caps.currencies == {"CNY"}
    assert caps.reason_max == 80 and caps.reason_unit == "utf8_bytes"   # addendum §9
    assert [s.total_seconds() for s in caps.query_schedule[:6]] == [60] * 5 + [600]
    assert caps.query_schedule is WECHAT_QUERY_SCHEDULE
    assert adapter_mod.OUT_REFUND_NO.fullmatch("A" * 64)


def test_oversized_bill_download_refused(clock: Any, mocked: responses.RequestsMock) -> None:
    k = keys()
    client = WechatPayClient(mchid=canned.MCHID, appid=canned.APPID,
                             private_key_pem=k.merchant_pem, cert_serial_no=canned.CERT_SERIAL,
                             apiv3_key=canned.APIV3, base_url=BASE, connect_timeout=1,
                             read_timeout=1, public_key_pem=k.platform_public_pem,
                             public_key_id=PUB_ID, max_bill_bytes=1024)
    bill_answers(mocked, bytes(range(256)) * 64)
    mocked.replace(responses.GET, re.compile(r".*/v3/billdownload/file.*"),
                   body=bytes(range(256)) * 64, status=200,
                   content_type="application/octet-stream")
    with pytest.raises(StatementError, match="above 1024 bytes"):
        WechatPayAdapter(client, clock=clock).download_statement(date(2026, 11, 19))
