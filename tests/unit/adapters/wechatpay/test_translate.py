"""The pure tables of ``adapters.wechatpay.translate``, row by row against CH §5.1-5.3, 5.7."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from adapters.wechatpay import translate
from adapters.wechatpay.translate import Operation, Verdict
from gateway.models import ChannelStatus
from gateway.money import Money

S = ChannelStatus
V = Verdict

# CH §5.3, copied by hand (not from the module): (HTTP, code, submit, query).
CH_5_3 = [
    (500, "SYSTEM_ERROR", V.UNKNOWN, V.UNKNOWN),
    (429, "FREQUENCY_LIMITED", V.UNKNOWN, V.UNKNOWN),
    (403, "NOT_ENOUGH", V.REFUSED, V.UNKNOWN),
    (403, "USER_ACCOUNT_ABNORMAL", V.REFUSED, V.UNKNOWN),
    (403, "NO_AUTH", V.AUTH, V.AUTH),
    (400, "PARAM_ERROR", V.REFUSED, V.UNKNOWN),
    (400, "INVALID_REQUEST", V.REFUSED, V.UNKNOWN),
    (404, "RESOURCE_NOT_EXISTS", V.REFUSED, V.NOT_FOUND),
    (404, "MCH_NOT_EXISTS", V.AUTH, V.AUTH),
    (401, "SIGN_ERROR", V.AUTH, V.AUTH),
    (502, "SERVICE_UNAVAILABLE", V.UNKNOWN, V.UNKNOWN),
    (503, "SERVICE_UNAVAILABLE", V.UNKNOWN, V.UNKNOWN),
]


@pytest.mark.parametrize(("http", "code", "submit", "query"), CH_5_3)
def test_refund_error_table_row(http: int, code: str, submit: Verdict, query: Verdict
                                ) -> None:
    assert translate.error_verdict(Operation.SUBMIT, http, code) is submit
    assert translate.error_verdict(Operation.QUERY, http, code) is query
    # the abnormal-refund application shares the submit table (the adapter turns a
    # refusal there into ABNORMAL, not FAILED)
    assert translate.error_verdict(Operation.ABNORMAL_REFUND, http, code) is submit


def test_every_table_row_is_covered_by_the_copy() -> None:
    assert set(translate.SUBMIT_CODES) == {(h, c) for h, c, _, _ in CH_5_3}
    assert set(translate.QUERY_CODES) == {(h, c) for h, c, _, _ in CH_5_3}


@pytest.mark.parametrize(("http", "code", "verdict"), [
    (400, "NO_STATEMENT_EXIST", V.NO_STATEMENT),
    (400, "STATEMENT_CREATING", V.UNKNOWN),
    (400, "INVALID_REQUEST", V.BAD_REQUEST),
    (400, "PARAM_ERROR", V.BAD_REQUEST),
    (403, "NO_AUTH", V.AUTH),
    (401, "SIGN_ERROR", V.AUTH),
    (404, "MCH_NOT_EXISTS", V.AUTH),
    (500, "SYSTEM_ERROR", V.UNKNOWN),
    (429, "FREQUENCY_LIMITED", V.UNKNOWN),
    (502, "SERVICE_UNAVAILABLE", V.UNKNOWN),
    (503, "SERVICE_UNAVAILABLE", V.UNKNOWN),
])
def test_statement_table_row(http: int, code: str, verdict: Verdict) -> None:
    assert translate.error_verdict(Operation.STATEMENT, http, code) is verdict
    assert (http, code) in translate.STATEMENT_CODES


@pytest.mark.parametrize("op", list(Operation))
@pytest.mark.parametrize(("http", "code", "verdict"), [
    (500, None, V.UNKNOWN),            # a proxy's HTML 500: no code
    (504, "GATEWAY_TIMEOUT", V.UNKNOWN),
    (429, None, V.UNKNOWN),
    (401, None, V.AUTH),               # CH §5.4: 401 = our signature
    (401, "WHATEVER", V.AUTH),
    (400, "SOMETHING_NEW", V.UNKNOWN),  # unknown code: never a refusal
    (403, "RULE_LIMIT", V.UNKNOWN),
    (409, None, V.UNKNOWN),
])
def test_unlisted_answers_are_unknown_never_refusals(op: Operation, http: int,
                                                     code: str | None, verdict: Verdict
                                                     ) -> None:
    assert translate.error_verdict(op, http, code) is verdict


@pytest.mark.parametrize(("value", "status"), [
    ("SUCCESS", S.SUCCEEDED), ("PROCESSING", S.PROCESSING), ("ABNORMAL", S.ABNORMAL),
    ("CLOSED", S.CLOSED),
    ("REFUNDCLOSE", S.PROCESSING), ("success", S.PROCESSING), ("", S.PROCESSING),
    (None, S.PROCESSING), (7, S.PROCESSING),
])
def test_status_table(value: object, status: ChannelStatus) -> None:
    assert translate.refund_status(value) is status


def test_event_table() -> None:
    assert translate.EVENT_STATUS == {"REFUND.SUCCESS": S.SUCCEEDED,
                                      "REFUND.ABNORMAL": S.ABNORMAL,
                                      "REFUND.CLOSED": S.CLOSED}


def test_rfc3339_beijing_to_utc() -> None:
    assert translate.parse_time("2020-12-01T16:18:12+08:00") == \
        datetime(2020, 12, 1, 8, 18, 12, tzinfo=UTC)
    assert translate.parse_time("2020-12-01T16:18:12") is None   # naive: not trusted
    assert translate.parse_time("yesterday") is None
    assert translate.parse_time(None) is None


@pytest.mark.parametrize(("account", "masked"), [
    ("招商银行信用卡0403", "招商银行信用卡0403"),
    ("支付用户零钱", "支付用户零钱"),
    ("工商银行借记卡6222021234567890123", "工商银行借记卡****0123"),
    ("6222 0212 3456 7890", "****7890"),   # a card printed in groups is still a card
    ("acct 12345", "acct ****2345"),
])
def test_mask_account(account: str, masked: str) -> None:
    assert translate.mask_account(account) == masked


def test_fen_and_redact() -> None:
    assert translate.fen({"refund": 888, "currency": "CNY"}) == Money(888)
    assert translate.fen({"refund": "888"}) is None
    assert translate.fen({"refund": True}) is None
    assert translate.fen({"refund": 1, "currency": "XXX"}) is None
    assert translate.fen(None) is None
    raw = translate.redact({"user_received_account": "工商银行6222021234567890123",
                            "bank_account": "x", "real_name": "y",
                            "amount": {"refund": 1}, "promotion_detail": [{"a": 1}]})
    assert raw == {"user_received_account": "工商银行****0123", "amount": {"refund": 1},
                   "promotion_detail": [{"a": 1}]}


def test_bank_ack_masks_and_keeps_strings_only() -> None:
    ack = translate.bank_ack({"channel": "ORIGINAL", "funds_account": "AVAILABLE",
                              "user_received_account": "x6222021234567890123",
                              "success_time": "2020-12-01T16:18:12+08:00", "refund_id": 5})
    assert ack == {"channel": "ORIGINAL", "funds_account": "AVAILABLE",
                   "user_received_account": "x****0123",
                   "success_time": "2020-12-01T16:18:12+08:00"}


# -- issue 15 item 6: a row in no table is unknown and logged; a status is PROCESSING -----
@pytest.mark.parametrize("op", list(Operation))
@pytest.mark.parametrize(("http", "code"), [(500, None), (504, "GATEWAY_TIMEOUT"),
                                            (429, "SOMETHING"), (401, "WHATEVER"),
                                            (400, "SOMETHING_NEW"), (403, "PARAM_ERROR")])
def test_unlisted_rows_are_logged(op: Operation, http: int, code: str | None) -> None:
    with capture_logs() as logs:
        assert translate.error_verdict(op, http, code) in (V.UNKNOWN, V.AUTH)
    assert [e["event"] for e in logs] == ["wechatpay.unknown_error_code"]


@pytest.mark.parametrize("op", [Operation.SUBMIT, Operation.QUERY])
@pytest.mark.parametrize(("http", "code"), [(h, c) for h, c, _, _ in CH_5_3])
def test_listed_rows_are_not_logged(op: Operation, http: int, code: str) -> None:
    with capture_logs() as logs:
        translate.error_verdict(op, http, code)
    assert logs == []


@pytest.mark.parametrize("value", ["REFUNDCLOSE", "FAIL", "success", "", None])
def test_unlisted_status_is_processing_with_a_warning(value: object) -> None:
    with capture_logs() as logs:
        assert translate.refund_status(value, source="refund_status") is S.PROCESSING
    assert [e["event"] for e in logs] == ["wechatpay.unknown_status"]
