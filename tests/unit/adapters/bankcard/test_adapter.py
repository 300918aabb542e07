"""The bank-card adapter against canned UnionPay answers (``responses``)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
import requests
import responses
from urllib3.exceptions import NewConnectionError, ProtocolError

from adapters.bankcard import signing
from adapters.bankcard.adapter import BankcardAdapter, build
from adapters.bankcard.client import BACK_TRANS_PATH, QUERY_PATH
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    SignatureInvalid,
)
from gateway.models import ChannelStatus
from gateway.money import Money
from gateway.settings import GatewaySettings
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.bankcard.canned import (
    BASE,
    CERT_PEM,
    MER_ID,
    make_refund,
    signed_answer,
)

REFUND = make_refund()
SUBMIT_URL = BASE + BACK_TRANS_PATH
QUERY_URL = BASE + QUERY_PATH


def sent(mocked: responses.RequestsMock, i: int = 0) -> dict[str, str]:
    body = mocked.calls[i].request.body
    text = body if isinstance(body, str) else (body or b"").decode()
    return dict(parse_qsl(text, keep_blank_values=True))


def answer_submit(mocked: responses.RequestsMock, code: str, **extra: str) -> None:
    mocked.post(SUBMIT_URL, body=signed_answer(
        txnType="04", orderId=REFUND.channel_refund_no, respCode=code,
        respMsg=extra.pop("respMsg", "msg"), **extra))


# -- the request ---------------------------------------------------------------------------
def test_refund_request_fields_and_signature(adapter: BankcardAdapter,
                                             mocked: responses.RequestsMock) -> None:
    answer_submit(mocked, "00", queryId="Q1")
    adapter.submit(REFUND)
    req = sent(mocked)
    assert mocked.calls[0].request.headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded")
    assert {k: v for k, v in req.items() if k != "signature"} == {
        "version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "04",
        "txnSubType": "00", "bizType": "000201", "accessType": "0", "channelType": "07",
        "backUrl": "http://127.0.0.1:9/notify/bankcard", "merId": MER_ID,
        "orderId": REFUND.channel_refund_no, "txnTime": "20261120100000", "txnAmt": "2500",
        "origQryId": "762611201000000000001", "currencyCode": "156",
        "certId": "69629715588"}
    assert signing.verify(req, certs.KEY.public_key())


def test_query_uses_the_refunds_own_order_and_time(adapter: BankcardAdapter,
                                                   mocked: responses.RequestsMock) -> None:
    mocked.post(QUERY_URL, body=signed_answer(respCode="34", respMsg="no such txn"))
    adapter.query(REFUND)
    req = sent(mocked)
    assert (req["txnType"], req["txnSubType"], req["bizType"]) == ("00", "00", "000000")
    assert (req["orderId"], req["txnTime"]) == (REFUND.channel_refund_no, "20261120100000")
    assert "txnAmt" not in req and "backUrl" not in req
    assert signing.verify(req, certs.KEY.public_key())


@pytest.mark.parametrize("no", ["RF-2026-0001", "RF_20261120", "short", "A" * 33, "退款单号12345"])
def test_order_id_must_be_8_to_32_alphanumerics(adapter: BankcardAdapter,
                                                mocked: responses.RequestsMock,
                                                no: str) -> None:
    with pytest.raises(InvalidRequest):
        adapter.submit(make_refund(no=no))
    with pytest.raises(InvalidRequest):
        adapter.query(make_refund(no=no))
    assert len(mocked.calls) == 0


# -- submit outcomes ---------------------------------------------------------------------
def test_accepted_is_processing_with_query_id(adapter: BankcardAdapter,
                                              mocked: responses.RequestsMock) -> None:
    answer_submit(mocked, "00", queryId="762611201000000000777", respMsg="成功[0000000]")
    result = adapter.submit(REFUND)
    assert result.status is ChannelStatus.PROCESSING
    assert result.channel_refund_id == "762611201000000000777"
    assert "signature" not in result.raw and "signPubKeyCert" not in result.raw


# 03/04/05/12/37 per addendum §2; "A2", "98" and "" are in no table: unknown, not FAILED.
@pytest.mark.parametrize("code", ["03", "04", "05", "12", "37", "A2", "98", ""])
def test_unknown_codes_raise_outcome_unknown(adapter: BankcardAdapter,
                                             mocked: responses.RequestsMock,
                                             code: str) -> None:
    answer_submit(mocked, code)
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(REFUND)
    assert info.value.code == (code or None)


@pytest.mark.parametrize("code", ["02", "06"])
def test_not_accepted_is_unavailable(adapter: BankcardAdapter,
                                     mocked: responses.RequestsMock, code: str) -> None:
    answer_submit(mocked, code)
    with pytest.raises(ChannelUnavailable):
        adapter.submit(REFUND)


def test_bad_signature_is_auth(adapter: BankcardAdapter,
                               mocked: responses.RequestsMock) -> None:
    mocked.post(SUBMIT_URL, body=signed_answer(respCode="11"))
    with pytest.raises(ChannelAuthError):
        adapter.submit(REFUND)


@pytest.mark.parametrize("code", ["01", "30", "35", "36", "61", "99"])
def test_listed_failure_codes_fail_with_code_and_message(adapter: BankcardAdapter,
                                                mocked: responses.RequestsMock,
                                                code: str) -> None:
    answer_submit(mocked, code, respMsg="原交易不存在或状态不正确")
    result = adapter.submit(REFUND)
    assert result.status is ChannelStatus.FAILED
    assert (result.failure_code, result.failure_message) == (code, "原交易不存在或状态不正确")


def test_answer_about_another_order_is_unknown(adapter: BankcardAdapter,
                                               mocked: responses.RequestsMock) -> None:
    mocked.post(SUBMIT_URL, body=signed_answer(orderId="RFOTHER00000001", respCode="00"))
    with pytest.raises(OutcomeUnknown, match="another orderId"):
        adapter.submit(REFUND)


# -- verification ------------------------------------------------------------------------
def _tampered(text: str) -> str:
    return text.replace("respCode=30", "respCode=00")


@pytest.mark.parametrize("body", [
    _tampered(signed_answer(orderId=REFUND.channel_refund_no, respCode="30")),
    "respCode=00&orderId=X",                                             # unsigned
    signed_answer(respCode="00").replace(CERT_PEM, ""),                 # no certificate
    signed_answer(respCode="00").replace(CERT_PEM, certs.pem(certs.certificate(
        certs.other_key()))),                                            # untrusted cert
])
def test_unverified_answers_are_unknown(adapter: BankcardAdapter,
                                        mocked: responses.RequestsMock, body: str) -> None:
    mocked.post(SUBMIT_URL, body=body)
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(REFUND)
    assert info.value.code == "SIGNATURE_INVALID"


def test_forged_answer_signed_with_another_key_is_unknown(
        adapter: BankcardAdapter, mocked: responses.RequestsMock) -> None:
    rogue = certs.other_key()
    body = {"respCode": "00", "signPubKeyCert": certs.pem(certs.certificate(rogue))}
    body["signature"] = signing.sign(body, rogue)
    mocked.post(SUBMIT_URL, body="&".join(f"{k}={v}" for k, v in body.items()))
    with pytest.raises(OutcomeUnknown, match="pinned UnionPay public key"):
        adapter.submit(REFUND)


# -- transport ---------------------------------------------------------------------------
@pytest.mark.parametrize("status,error", [(500, OutcomeUnknown), (502, OutcomeUnknown),
                                          (429, OutcomeUnknown), (404, OutcomeUnknown),
                                          (403, ChannelAuthError)])
def test_http_statuses(adapter: BankcardAdapter, mocked: responses.RequestsMock,
                       status: int, error: type[Exception]) -> None:
    mocked.post(SUBMIT_URL, status=status, body="busy")
    with pytest.raises(error):
        adapter.submit(REFUND)


@pytest.mark.parametrize("exc,error", [
    (requests.ConnectTimeout("connect"), ChannelUnavailable),
    (requests.ConnectionError(NewConnectionError(None, "refused")),   # type: ignore[arg-type]
     ChannelUnavailable),
    (requests.ReadTimeout("read"), OutcomeUnknown),
    (requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
     OutcomeUnknown),
    (requests.exceptions.ChunkedEncodingError("cut"), OutcomeUnknown),
])
def test_transport_errors(adapter: BankcardAdapter, mocked: responses.RequestsMock,
                          exc: Exception, error: type[Exception]) -> None:
    mocked.post(SUBMIT_URL, body=exc)
    with pytest.raises(error) as info:
        adapter.submit(REFUND)
    assert info.value.channel == "bankcard"   # type: ignore[attr-defined]


def test_unparseable_answer_is_unknown(adapter: BankcardAdapter,
                                       mocked: responses.RequestsMock) -> None:
    mocked.post(SUBMIT_URL, body="<html>gateway error</html>")
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(REFUND)
    assert info.value.code == "UNPARSEABLE"


# -- query outcomes ----------------------------------------------------------------------
def test_query_success_keeps_unionpay_references(adapter: BankcardAdapter,
                                                 mocked: responses.RequestsMock) -> None:
    mocked.post(QUERY_URL, body=signed_answer(
        respCode="00", origRespCode="00", origRespMsg="成功", orderId=REFUND.channel_refund_no,
        queryId="762611201000000000777", txnAmt="2500", settleDate="1120", traceNo="123456",
        accNo="6216261000000000018"))
    result = adapter.query(REFUND)
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.amount == Money(2500)
    assert result.channel_refund_id == "762611201000000000777"
    assert dict(result.bank_ack) == {"queryId": "762611201000000000777", "settleDate": "1120",
                                     "traceNo": "123456"}
    assert result.raw["accNo"] == "****0018"


@pytest.mark.parametrize("orig,status", [("05", ChannelStatus.PROCESSING),
                                         ("03", ChannelStatus.PROCESSING),
                                         ("61", ChannelStatus.ABNORMAL)])
def test_query_orig_codes(adapter: BankcardAdapter, mocked: responses.RequestsMock,
                          orig: str, status: ChannelStatus) -> None:
    mocked.post(QUERY_URL, body=signed_answer(respCode="00", origRespCode=orig,
                                              origRespMsg="账户已销户", queryId="Q9"))
    result = adapter.query(REFUND)
    assert result.status is status
    if status is ChannelStatus.ABNORMAL:
        assert (result.failure_code, result.failure_message) == (orig, "账户已销户")
        assert not result.bank_ack


def test_query_no_such_transaction_and_query_timeout(adapter: BankcardAdapter,
                                                      mocked: responses.RequestsMock) -> None:
    mocked.post(QUERY_URL, body=signed_answer(respCode="34"))
    assert adapter.query(REFUND).status is ChannelStatus.NOT_FOUND
    mocked.replace(responses.POST, QUERY_URL, body=signed_answer(respCode="04"))
    with pytest.raises(OutcomeUnknown):
        adapter.query(REFUND)


# -- notifications -----------------------------------------------------------------------
def notice(**fields: str) -> bytes:
    body = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "04",
            "txnSubType": "00", "bizType": "000201", "merId": MER_ID,
            "orderId": REFUND.channel_refund_no, "txnTime": "20261120100000",
            "txnAmt": "2500", "queryId": "Q77", "respMsg": "成功", "signPubKeyCert": CERT_PEM,
            **fields}
    body["signature"] = signing.sign(body, certs.KEY)
    return urlencode(body).encode()


def test_notification_success(adapter: BankcardAdapter) -> None:
    result = adapter.parse_notification({}, notice(respCode="00", settleDate="1120"))
    assert result.status is ChannelStatus.SUCCEEDED
    assert (result.channel_refund_no, result.amount) == (REFUND.channel_refund_no,
                                                         Money(2500))
    assert result.event_id == "Q77:00"
    assert dict(result.bank_ack) == {"queryId": "Q77", "settleDate": "1120"}
    assert adapter.notification_ack(True).body == b"ok"
    assert adapter.notification_ack(True).http_status == 200


def test_notification_failure_after_acceptance_is_abnormal(adapter: BankcardAdapter) -> None:
    result = adapter.parse_notification({}, notice(respCode="61", respMsg="账户已销户"))
    assert result.status is ChannelStatus.ABNORMAL
    assert (result.failure_code, result.event_id) == ("61", "Q77:61")


@pytest.mark.parametrize("body", [
    notice(respCode="00").replace(b"txnAmt=2500", b"txnAmt=9999"),   # tampered
    notice(respCode="00", merId="999999999999999"),                  # other merchant
    notice(respCode="00", txnType="01"),                             # a payment, not ours
    b"respCode=00&orderId=RF1",                                      # unsigned
    b"\xff\xfe",                                                      # not UTF-8
    b"a=1&a=2",
])
def test_notifications_rejected(adapter: BankcardAdapter, body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, body)
    assert adapter.notification_ack(False).http_status == 400


# -- A6 有缺陷的成功 and codes in no table (addendum §2, issue 15 item 6) ---------------------
# A6 is final success on all three answers. Before the fix it was FAILED on the sync
# answer and ABNORMAL on the query and the notice; a reroute then paid the customer twice.
def test_a6_on_the_sync_answer_is_success(adapter: BankcardAdapter,
                                          mocked: responses.RequestsMock) -> None:
    answer_submit(mocked, "A6", queryId="762611201000000000777", txnAmt="2500",
                  respMsg="有缺陷的成功")
    result = adapter.submit(REFUND)
    assert result.status is ChannelStatus.SUCCEEDED
    assert (result.failure_code, result.failure_message) == (None, None)
    assert result.channel_refund_id == "762611201000000000777"
    assert result.amount == Money(2500)
    assert dict(result.bank_ack) == {"queryId": "762611201000000000777"}


def test_a6_in_the_query_is_success(adapter: BankcardAdapter,
                                    mocked: responses.RequestsMock) -> None:
    mocked.post(QUERY_URL, body=signed_answer(
        respCode="00", origRespCode="A6", origRespMsg="有缺陷的成功",
        orderId=REFUND.channel_refund_no, queryId="Q9", txnAmt="2500", settleDate="1120"))
    result = adapter.query(REFUND)
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.failure_code is None
    assert (result.amount, dict(result.bank_ack)) == (
        Money(2500), {"queryId": "Q9", "settleDate": "1120"})


def test_a6_in_the_back_notification_is_success(adapter: BankcardAdapter) -> None:
    result = adapter.parse_notification({}, notice(respCode="A6", respMsg="有缺陷的成功",
                                                   settleDate="1120"))
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.failure_code is None
    assert dict(result.bank_ack) == {"queryId": "Q77", "settleDate": "1120"}


@pytest.mark.parametrize("orig", ["A2", "98", "12"])
def test_unlisted_orig_code_is_processing_not_abnormal(adapter: BankcardAdapter,
                                                       mocked: responses.RequestsMock,
                                                       orig: str) -> None:
    mocked.post(QUERY_URL, body=signed_answer(respCode="00", origRespCode=orig,
                                              orderId=REFUND.channel_refund_no))
    result = adapter.query(REFUND)
    assert (result.status, result.failure_code) == (ChannelStatus.PROCESSING, None)


@pytest.mark.parametrize("code", ["A2", "98", "05"])
def test_unlisted_notification_code_is_processing_not_abnormal(adapter: BankcardAdapter,
                                                               code: str) -> None:
    result = adapter.parse_notification({}, notice(respCode=code))
    assert (result.status, result.failure_code) == (ChannelStatus.PROCESSING, None)


# -- build -------------------------------------------------------------------------------
def test_build_requires_settings() -> None:
    with pytest.raises(ConfigurationError) as info:
        build(GatewaySettings(), lambda: None)   # type: ignore[arg-type,return-value]
    assert info.value.setting == "REFUND_GATEWAY_BANKCARD"


def test_build_rejects_bad_keys_without_echoing_them() -> None:
    settings = GatewaySettings(bankcard={
        "mer_id": MER_ID, "cert_id": "1", "private_key": "-----BEGIN PRIVATE KEY-----\nxx\n",
        "unionpay_public_key": certs.public_pem(), "trust": "pin",
        "back_url": "http://x/notify"})
    with pytest.raises(ConfigurationError) as info:
        build(settings, lambda: None)   # type: ignore[arg-type,return-value]
    assert info.value.setting == "REFUND_GATEWAY_BANKCARD__PRIVATE_KEY"
    assert "xx" not in str(info.value)
