"""The adapter with the real SDK signing and verifying, over a canned transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from adapters.alipay.adapter import AlipayAdapter, build
from adapters.alipay.client import AlipayClient
from gateway.errors import ChannelAuthError, ConfigurationError, OutcomeUnknown
from gateway.models import ChannelStatus, Payment, Refund, RefundStatus, Route
from gateway.money import Money
from gateway.settings import GatewaySettings
from tests.unit.adapters.alipay.conftest import APP_ID, Canned, KeyPair, signed_answer

REFUND = "alipay.trade.refund"
QUERY = "alipay.trade.fastpay.refund.query"


def make_refund(amount: int = 1230, reason: str = "退货") -> Refund:
    at = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    return Refund(id="rf1", idempotency_key="k1", route=Route.ALIPAY,
                  payment=Payment(Route.ALIPAY, "ORD1", "2026112022001", Money(10_000)),
                  amount=Money(amount), reason=reason, status=RefundStatus.PENDING,
                  channel_refund_no="RFabc123", created_at=at, updated_at=at)


def test_submit_request_fields(adapter: AlipayAdapter, canned: Canned,
                               answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(REFUND, code="10000", msg="Success", fund_change="Y",
                                 buyer_logon_id="159****5620",
                                 gmt_refund_pay="2026-11-20 10:00:05"))
    result = adapter.submit(make_refund())
    params, biz = canned.params(), canned.biz()
    assert params["method"] == REFUND and params["sign_type"] == "RSA2"
    assert params["app_id"] == APP_ID and params["sign"]
    assert params["timestamp"] == "2026-11-20 10:00:00"      # Beijing, from the clock
    assert biz == {"refund_amount": "12.30", "out_request_no": "RFabc123",
                   "trade_no": "2026112022001", "out_trade_no": "ORD1",
                   "refund_reason": "退货", "query_options": ["refund_detail_item_list"]}
    assert canned.urls[0].startswith("http://127.0.0.1:9/gateway.do?")
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.succeeded_at == datetime(2026, 11, 20, 2, 0, 5, tzinfo=UTC)
    assert result.received_account == "159****5620"


def test_submit_fund_change_n_is_processing(adapter: AlipayAdapter, canned: Canned,
                                            answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(REFUND, code="10000", msg="Success", fund_change="N"))
    assert adapter.submit(make_refund()).status is ChannelStatus.PROCESSING


def test_submit_signed_refusal_is_a_result(adapter: AlipayAdapter, canned: Canned,
                                           answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(REFUND, code="40004", msg="Business Failed",
                                 sub_code="ACQ.TRADE_NOT_ALLOW_REFUND", sub_msg="不允许退款"))
    result = adapter.submit(make_refund())
    assert result.status is ChannelStatus.FAILED
    assert result.failure_code == "ACQ.TRADE_NOT_ALLOW_REFUND"
    assert result.failure_message == "不允许退款"


@pytest.mark.parametrize("code,sub_code", [("40004", "ACQ.SYSTEM_ERROR"),
                                           ("20000", "isp.unknow-error"),
                                           ("40004", "isv.app-call-limited"),
                                           ("40004", "ACQ.DISCORDANT_REPEAT_REQUEST")])
def test_submit_signed_unknowns_raise(adapter: AlipayAdapter, canned: Canned,
                                      answer: Callable[..., bytes], code: str,
                                      sub_code: str) -> None:
    canned.answers.append(answer(REFUND, code=code, msg="x", sub_code=sub_code))
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(make_refund())
    assert info.value.code == sub_code and info.value.operation == "submit"


def test_submit_signed_auth_failure(adapter: AlipayAdapter, canned: Canned,
                                   answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(REFUND, code="40002", msg="Invalid Arguments",
                                 sub_code="isv.invalid-signature"))
    with pytest.raises(ChannelAuthError):
        adapter.submit(make_refund())


def test_unsigned_error_response(adapter: AlipayAdapter, canned: Canned) -> None:
    canned.answers.append(json.dumps({"error_response": {
        "code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id"}}
    ).encode())
    with pytest.raises(ChannelAuthError) as info:
        adapter.submit(make_refund())
    assert info.value.code == "isv.invalid-app-id"
    canned.answers.append(json.dumps({"alipay_trade_refund_response": {
        "code": "10000", "fund_change": "Y"}}).encode())          # no sign: not trusted
    with pytest.raises(OutcomeUnknown):
        adapter.submit(make_refund())


def test_wrong_signature_is_unknown_not_failed(adapter: AlipayAdapter, canned: Canned,
                                               other_keys: KeyPair) -> None:
    canned.answers.append(signed_answer(REFUND, {"code": "40004", "sub_code":
                                                 "ACQ.TRADE_NOT_EXIST"}, other_keys))
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(make_refund())
    assert info.value.code == "SIGNATURE_INVALID"


@pytest.mark.parametrize("body", [b"<html>502</html>", b"", b"\xff\xfe", b"[1,2]"])
def test_unparseable_answers_are_unknown(adapter: AlipayAdapter, canned: Canned,
                                         body: bytes) -> None:
    canned.answers.append(body)
    with pytest.raises(OutcomeUnknown):
        adapter.submit(make_refund())


def test_query_request_and_deposit_back(adapter: AlipayAdapter, canned: Canned,
                                        answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(
        QUERY, code="10000", msg="Success", out_request_no="RFabc123", refund_amount="12.30",
        refund_status="REFUND_SUCCESS", gmt_refund_pay="2026-11-20 10:00:05",
        deposit_back_info={"has_deposit_back": "true", "dback_status": "P",
                           "dback_amount": "12.30",
                           "est_bank_receipt_time": "2026-11-23 10:00:00"}))
    result = adapter.query(make_refund())
    assert canned.params()["method"] == QUERY
    assert canned.biz() == {"out_request_no": "RFabc123", "trade_no": "2026112022001",
                            "out_trade_no": "ORD1", "query_options": [
                                "gmt_refund_pay", "deposit_back_info",
                                "refund_detail_item_list"]}
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.amount == Money(1230)
    assert result.bank_ack == {"dback_status": "P", "dback_amount": "12.30",
                               "est_bank_receipt_time": "2026-11-23 10:00:00"}


def test_query_absent_status_and_missing_trade_are_not_found(
        adapter: AlipayAdapter, canned: Canned, answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(QUERY, code="10000", msg="Success",
                                 out_request_no="RFabc123"))
    assert adapter.query(make_refund()).status is ChannelStatus.NOT_FOUND
    canned.answers.append(answer(QUERY, code="40004", msg="Business Failed",
                                 sub_code="ACQ.TRADE_NOT_EXIST"))
    assert adapter.query(make_refund()).status is ChannelStatus.NOT_FOUND


def test_query_other_refusal_is_unknown(adapter: AlipayAdapter, canned: Canned,
                                       answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(QUERY, code="40004", sub_code="ACQ.INVALID_PARAMETER"))
    with pytest.raises(OutcomeUnknown):
        adapter.query(make_refund())


def test_raw_has_no_signature(adapter: AlipayAdapter, canned: Canned,
                              answer: Callable[..., bytes]) -> None:
    canned.answers.append(answer(REFUND, code="10000", fund_change="Y",
                                 buyer_user_id="2088101117955611"))
    result = adapter.submit(make_refund())
    blob = json.dumps(dict(result.raw))
    assert "sign" not in result.raw and "2088101117955611" not in blob


def test_ack() -> None:
    ack = AlipayAdapter.notification_ack(AlipayAdapter.__new__(AlipayAdapter), True)
    assert (ack.http_status, ack.body, ack.content_type) == (200, b"success", "text/plain")
    nack = AlipayAdapter.notification_ack(AlipayAdapter.__new__(AlipayAdapter), False)
    assert nack.body == b"fail" and not nack.accepted


def test_capabilities() -> None:
    caps = AlipayAdapter.capabilities
    assert caps.idempotent_submit and caps.refund_query and caps.notifications
    assert caps.statements and caps.partial_refunds and not caps.abnormal_refund_api
    assert caps.arrival_working_days == (0, 3) and caps.currencies == {"CNY"}
    assert caps.refund_no.fullmatch("A" * 64) and not caps.refund_no.fullmatch("A" * 65)
    assert caps.reason_max == 256 and caps.reason_unit == "chars"


def test_build(app_keys: KeyPair, alipay_keys: KeyPair) -> None:
    with pytest.raises(ConfigurationError) as info:
        build(GatewaySettings(_env_file=None), lambda: datetime.now(UTC))
    assert info.value.setting == "REFUND_GATEWAY_ALIPAY"
    settings = GatewaySettings(_env_file=None, alipay={
        "app_id": APP_ID, "app_private_key": app_keys.private_pem,
        "alipay_public_key": alipay_keys.public_pem.replace("\n", "\\n"),
        "gateway_url": "http://127.0.0.1:1/gateway.do"})
    adapter = build(settings, lambda: datetime.now(UTC))
    assert isinstance(adapter, AlipayAdapter)
    bad = GatewaySettings(_env_file=None, alipay={
        "app_id": APP_ID, "app_private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"
        "-----END PRIVATE KEY-----", "alipay_public_key": alipay_keys.public_pem})
    with pytest.raises(ConfigurationError) as err:
        build(bad, lambda: datetime.now(UTC))
    assert "AAAA" not in str(err.value)


def test_client_keys_loaded_once(client: AlipayClient) -> None:
    assert client._sdk._gateway == "http://127.0.0.1:9/gateway.do"
    assert client._sdk._config.timeout == 2.0


def test_failpoint_between_answer_and_parse(adapter: AlipayAdapter, canned: Canned,
                                           answer: Callable[..., bytes],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import failpoints

    hits: list[tuple[str, int]] = []
    monkeypatch.setattr(failpoints, "failpoint",
                        lambda name: hits.append((name, len(canned.urls))))
    canned.answers.append(answer(REFUND, code="10000", fund_change="Y"))
    adapter.submit(make_refund())
    assert hits == [(failpoints.AFTER_SEND, 1)]      # after the one request was sent
    canned.answers.append(answer(QUERY, code="10000"))
    adapter.query(make_refund())
    assert len(hits) == 1                            # submit only
