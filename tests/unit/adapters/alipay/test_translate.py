"""CH §4.1-4.3 tables, row by row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from adapters.alipay import translate as t
from gateway.models import ChannelStatus
from gateway.money import Money

FINAL = ["ACQ.SELLER_BALANCE_NOT_ENOUGH", "ACQ.INVALID_PARAMETER",
         "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "ACQ.REASON_TRADE_BEEN_FREEZEN",
         "ACQ.TRADE_NOT_EXIST", "ACQ.TRADE_HAS_FINISHED", "ACQ.TRADE_STATUS_ERROR",
         "ACQ.REASON_TRADE_REFUND_FEE_ERR", "ACQ.TRADE_NOT_ALLOW_REFUND"]


@pytest.mark.parametrize("sub_code", FINAL)
def test_final_refusals_are_failed(sub_code: str) -> None:
    assert t.refund_failure("40004", sub_code) == t.Outcome(t.Verdict.RESULT,
                                                            ChannelStatus.FAILED)


@pytest.mark.parametrize("code,sub_code", [("40004", "ACQ.SYSTEM_ERROR"),
                                           ("20000", "isp.unknow-error"),
                                           ("20000", None),
                                           ("20000", "isp.some-other-error")])
def test_unknown_outcomes_query_first(code: str, sub_code: str | None) -> None:
    assert t.refund_failure(code, sub_code).verdict is t.Verdict.UNKNOWN


@pytest.mark.parametrize("sub_code", ["isv.app-call-limited", "isv.method-call-limited",
                                      "app-call-limited"])
def test_rate_limits(sub_code: str) -> None:
    assert t.refund_failure("40004", sub_code).verdict is t.Verdict.RATE_LIMITED
    assert t.query_failure("40004", sub_code).verdict is t.Verdict.RATE_LIMITED


def test_discordant_repeat_is_not_failed() -> None:
    # Deliberate deviation from CH §4.3 (see translate.py): the earlier request may have
    # moved money, so this refund must be queried, never released.
    assert t.refund_failure("40004", "ACQ.DISCORDANT_REPEAT_REQUEST").verdict is \
        t.Verdict.UNKNOWN


def test_every_ch43_row_is_in_the_table() -> None:
    rows = set(FINAL) | {"ACQ.SYSTEM_ERROR", "isp.unknow-error", "isv.app-call-limited",
                         "isv.method-call-limited", "app-call-limited",
                         "ACQ.DISCORDANT_REPEAT_REQUEST"}
    assert set(t.REFUND_SUB_CODES) == rows


def test_unlisted_40004_sub_code_is_unknown_not_failed() -> None:
    assert t.refund_failure("40004", "ACQ.SOMETHING_NEW").verdict is t.Verdict.UNKNOWN
    assert t.refund_failure("99999", None).verdict is t.Verdict.UNKNOWN


@pytest.mark.parametrize("code,sub_code", [("40002", "isv.invalid-signature"),
                                           ("40002", "isv.invalid-app-id"),
                                           ("40006", "isv.insufficient-isv-permissions"),
                                           ("20001", "aop.invalid-auth-token")])
def test_auth_failures(code: str, sub_code: str) -> None:
    assert t.refund_failure(code, sub_code).verdict is t.Verdict.AUTH
    assert t.query_failure(code, sub_code).verdict is t.Verdict.AUTH


def test_invalid_arguments_rejected_before_processing_are_failed() -> None:
    assert t.refund_failure("40002", "isv.invalid-arguments") == t.Outcome(
        t.Verdict.RESULT, ChannelStatus.FAILED)


def test_query_failures_never_fail_the_refund() -> None:
    assert t.query_failure("40004", "ACQ.TRADE_NOT_EXIST") == t.Outcome(
        t.Verdict.RESULT, ChannelStatus.NOT_FOUND)
    for sub_code in [*FINAL[:-1], "ACQ.SYSTEM_ERROR", None]:
        if sub_code == "ACQ.TRADE_NOT_EXIST":
            continue
        assert t.query_failure("40004", sub_code).verdict is t.Verdict.UNKNOWN


@pytest.mark.parametrize("value,status", [("Y", ChannelStatus.SUCCEEDED),
                                          ("N", ChannelStatus.PROCESSING),
                                          (None, ChannelStatus.PROCESSING),
                                          ("", ChannelStatus.PROCESSING),
                                          ("X", ChannelStatus.PROCESSING)])
def test_fund_change(value: str | None, status: ChannelStatus) -> None:
    assert t.fund_change_status(value) is status


@pytest.mark.parametrize("value,status", [("REFUND_SUCCESS", ChannelStatus.SUCCEEDED),
                                          (None, ChannelStatus.NOT_FOUND),
                                          ("", ChannelStatus.NOT_FOUND),
                                          ("REFUND_PROCESSING", ChannelStatus.PROCESSING)])
def test_refund_status(value: str | None, status: ChannelStatus) -> None:
    assert t.refund_status(value) is status


def test_parse_time_is_beijing() -> None:
    assert t.parse_time("2014-11-27 15:45:57") == datetime(2014, 11, 27, 7, 45, 57,
                                                           tzinfo=UTC)
    assert t.parse_time("2014-11-27 15:45:57.320") == datetime(2014, 11, 27, 7, 45, 57,
                                                               320_000, tzinfo=UTC)
    assert t.parse_time("27/11/2014") is None
    assert t.parse_time(None) is None


def test_submit_result_success_fields() -> None:
    body = {"code": "10000", "msg": "Success", "trade_no": "2014112611001004680073956707",
            "out_trade_no": "6823789339978248", "buyer_logon_id": "159****5620",
            "fund_change": "Y", "refund_fee": "88.88", "gmt_refund_pay": "2014-11-27 15:45:57",
            "refund_detail_item_list": [{"fund_channel": "ALIPAYACCOUNT", "amount": "10"}],
            "buyer_user_id": "2088101117955611"}
    r = t.submit_result(body, "R1")
    assert r.status is ChannelStatus.SUCCEEDED
    assert r.amount is None                       # refund_fee is cumulative
    assert r.succeeded_at == datetime(2014, 11, 27, 7, 45, 57, tzinfo=UTC)
    assert r.received_account == "159****5620"
    assert r.raw["buyer_user_id"] == "****5611"
    assert r.raw["refund_detail_item_list"][0]["fund_channel"] == "ALIPAYACCOUNT"
    assert "sign" not in r.raw


def test_submit_result_processing_has_no_success_fields() -> None:
    r = t.submit_result({"code": "10000", "fund_change": "N",
                         "gmt_refund_pay": "2014-11-27 15:45:57"}, "R1")
    assert r.status is ChannelStatus.PROCESSING and r.succeeded_at is None


@pytest.mark.parametrize("dback,received", [("S", None), ("P", None),
                                            ("F", t.RECEIVED_IN_BALANCE)])
def test_query_result_deposit_back(dback: str, received: str | None) -> None:
    body = {"code": "10000", "out_request_no": "R1", "refund_amount": "12.33",
            "refund_status": "REFUND_SUCCESS", "gmt_refund_pay": "2014-11-27 15:45:57",
            "deposit_back_info": {"has_deposit_back": "true", "dback_status": dback,
                                  "dback_amount": "12.33",
                                  "bank_ack_time": "2020-06-02 14:03:48",
                                  "est_bank_receipt_time": "2020-06-03 14:03:48"}}
    r = t.query_result(body, "R1")
    assert r.status is ChannelStatus.SUCCEEDED     # Alipay refunded in every case
    assert r.amount == Money(1233)
    assert r.bank_ack["dback_status"] == dback
    assert r.bank_ack["est_bank_receipt_time"] == "2020-06-03 14:03:48"
    assert r.received_account == received


def test_query_result_absent_status_is_not_found() -> None:
    r = t.query_result({"code": "10000", "out_request_no": "R1"}, "R1")
    assert r.status is ChannelStatus.NOT_FOUND
    assert r.failure_code is None


def test_deposit_back_unknown_status_kept_with_warning() -> None:
    assert t.deposit_back({"dback_status": "Z"}) == {"dback_status": "Z"}
    assert t.deposit_back(None) == {}
    assert t.deposit_back({"has_deposit_back": "false"}) == {}


def test_redact_drops_sign_and_masks_buyer() -> None:
    out = t.redact({"sign": "abc", "sign_type": "RSA2", "buyer_id": "2088101117955611",
                    "buyer_logon_id": "someone@example.com", "x": "1"})
    assert out == {"buyer_id": "****5611", "buyer_logon_id": "s***@example.com", "x": "1"}
    assert t.redact({"buyer_logon_id": "159****5620", "buyer_open_id": "074a1CcTG1LelxKe4x",
                     "buyer_user_id": "2088101117955611"}) == {
        "buyer_logon_id": "159****5620", "buyer_open_id": "****Ke4x",
        "buyer_user_id": "****5611"}


# -- CHANNELS-ADDENDUM §6 gateway codes, and codes in no table (issue 15 item 6) -----------
# (code, sub_code, verdict, status), copied by hand from the addendum's table.
ADDENDUM_6 = [
    ("20000", "isp.unknow-error", t.Verdict.UNKNOWN, None),
    ("20000", "aop.unknow-error", t.Verdict.UNKNOWN, None),
    ("20001", "aop.invalid-auth-token", t.Verdict.AUTH, None),
    ("20001", "aop.app-auth-token-time-out", t.Verdict.AUTH, None),
    ("40001", "isv.missing-method", t.Verdict.RESULT, ChannelStatus.FAILED),
    ("40001", "isv.missing-signature", t.Verdict.AUTH, None),
    ("40002", "isv.invalid-parameter", t.Verdict.RESULT, ChannelStatus.FAILED),
    ("40002", "isv.invalid-signature", t.Verdict.AUTH, None),
    ("40003", "isv.decryption-error-unknown", t.Verdict.AUTH, None),
    ("40006", "isv.insufficient-isv-permissions", t.Verdict.AUTH, None),
    ("40006", "isv.insufficient-user-permissions", t.Verdict.AUTH, None),
]


@pytest.mark.parametrize("code,sub_code,verdict,status", ADDENDUM_6)
def test_gateway_code_table(code: str, sub_code: str, verdict: t.Verdict,
                            status: ChannelStatus | None) -> None:
    assert t.refund_failure(code, sub_code) == t.Outcome(verdict, status)
    # a refused query never fails the refund
    assert t.query_failure(code, sub_code).status is None


def test_gateway_table_is_the_addendum() -> None:
    assert set(t.GATEWAY_CODES) == {code for code, *_ in ADDENDUM_6}


@pytest.mark.parametrize("code,sub_code", [("40004", "ACQ.SOMETHING_NEW"),
                                           ("40004", None),
                                           ("40005", "isv.whatever"),
                                           ("99999", None), ("", None)])
def test_unlisted_codes_are_unknown_with_a_warning(code: str, sub_code: str | None) -> None:
    with capture_logs() as logs:
        assert t.refund_failure(code, sub_code) == t.Outcome(t.Verdict.UNKNOWN)
        assert t.query_failure(code, sub_code) == t.Outcome(t.Verdict.UNKNOWN)
    events = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert events == ["alipay.unknown_refund_code", "alipay.unknown_query_code"]


@pytest.mark.parametrize("value", ["X", "y", "true"])
def test_fund_change_unlisted_is_processing_with_a_warning(value: str) -> None:
    with capture_logs() as logs:
        assert t.fund_change_status(value) is ChannelStatus.PROCESSING
    assert [e["event"] for e in logs] == ["alipay.unknown_fund_change"]


@pytest.mark.parametrize("value", ["REFUND_PROCESSING", "REFUND_FAIL", "success"])
def test_refund_status_unlisted_is_processing_with_a_warning(value: str) -> None:
    with capture_logs() as logs:
        assert t.refund_status(value) is ChannelStatus.PROCESSING
    assert [e["event"] for e in logs] == ["alipay.unknown_refund_status"]


@pytest.mark.parametrize("value,status", [("S", ChannelStatus.SUCCEEDED),
                                          ("P", ChannelStatus.SUCCEEDED),
                                          ("F", ChannelStatus.SUCCEEDED),
                                          ("Z", ChannelStatus.PROCESSING),
                                          ("", ChannelStatus.PROCESSING),
                                          (None, ChannelStatus.PROCESSING)])
def test_depositback_status_table(value: str | None, status: ChannelStatus) -> None:
    with capture_logs() as logs:
        assert t.depositback_status(value) is status
    assert bool(logs) == (status is ChannelStatus.PROCESSING)


@pytest.mark.parametrize("value,status", [("TRADE_SUCCESS", ChannelStatus.SUCCEEDED),
                                          ("TRADE_CLOSED", ChannelStatus.SUCCEEDED),
                                          ("TRADE_FINISHED", ChannelStatus.PROCESSING),
                                          ("WAIT_BUYER_PAY", ChannelStatus.PROCESSING),
                                          (None, ChannelStatus.PROCESSING)])
def test_trade_notification_status_table(value: str | None, status: ChannelStatus) -> None:
    with capture_logs() as logs:
        assert t.trade_notification_status(value) is status
    assert bool(logs) == (status is ChannelStatus.PROCESSING)


def test_a_refused_timestamp_is_our_clock_not_a_failed_refund() -> None:
    from adapters.alipay.translate import Verdict, refund_failure

    for sub_code in ("isv.invalid-timestamp", "isv.missing-timestamp"):
        assert refund_failure("40002", sub_code).verdict is Verdict.AUTH
