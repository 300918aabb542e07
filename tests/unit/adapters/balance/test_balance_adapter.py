"""The balance adapter against canned wallet answers (``responses``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import requests
import responses
from structlog.testing import capture_logs
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from adapters.balance import translate
from adapters.balance.adapter import BalanceAdapter, build
from adapters.balance.client import WalletClient
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    InvalidRequest,
    OutcomeUnknown,
    SignatureInvalid,
)
from gateway.models import ChannelStatus, Payment, Refund, RefundStatus, Route
from gateway.money import Money
from gateway.settings import GatewaySettings

BASE = "https://wallet.test/balance"
KEY = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def make_refund(no: str = "RF20261120ABCDEF0123456789", user: str | None = "u-1",
                route: Route = Route.BANKCARD) -> Refund:
    pay = Payment(route=route, merchant_order_no="ORD1", channel_trade_no="T1",
                  amount=Money(10_000), user_id=user)
    return Refund(id=no, idempotency_key="k", route=Route.BALANCE, payment=pay,
                  amount=Money(2500), reason="reroute", status=RefundStatus.PENDING,
                  channel_refund_no=no, created_at=NOW, updated_at=NOW)


REFUND = make_refund()


@pytest.fixture
def adapter() -> Iterator[BalanceAdapter]:
    client = WalletClient(base_url=BASE, hmac_key=KEY, connect_timeout=1, read_timeout=2,
                          now=lambda: 1_790_000_000.0)
    yield BalanceAdapter(client, lambda: NOW)
    client.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def record(**extra: object) -> dict[str, object]:
    return {"refund_no": REFUND.channel_refund_no, "wallet_txn_id": "WT202611200000000001",
            "status": "SUCCESS", "amount_fen": 2500, "user_id": "u-1", "order_no": "ORD1",
            "currency": "CNY",
            "credited_at": "2026-11-20T10:00:01+08:00", **extra}


def test_request_is_signed_json(adapter: BalanceAdapter, mocked: responses.RequestsMock) -> None:
    mocked.post(BASE + "/v1/refunds", json=record())
    result = adapter.submit(REFUND)
    req = mocked.calls[0].request
    body = req.body if isinstance(req.body, bytes) else str(req.body).encode()
    assert json.loads(body) == {"refund_no": REFUND.channel_refund_no, "user_id": "u-1",
                                "order_no": "ORD1", "amount_fen": 2500, "currency": "CNY",
                                "reason": "reroute"}
    signed = b"\n".join([b"POST", b"/balance/v1/refunds", req.headers["X-Timestamp"].encode(),
                         req.headers["X-Nonce"].encode(), body])
    assert req.headers["X-Signature"] == hmac.new(KEY, signed, hashlib.sha256).hexdigest()
    assert req.headers["X-Timestamp"] == "1790000000"
    assert result.status is ChannelStatus.SUCCEEDED
    assert (result.channel_refund_id, result.amount) == ("WT202611200000000001", Money(2500))
    assert result.succeeded_at == datetime(2026, 11, 20, 2, 0, 1, tzinfo=UTC)
    assert dict(result.bank_ack) == {"wallet_txn_id": "WT202611200000000001"}


@pytest.mark.parametrize("user", [None, "", "user with spaces"])
def test_wallet_needs_a_user_id(adapter: BalanceAdapter, mocked: responses.RequestsMock,
                                user: str | None) -> None:
    with pytest.raises(InvalidRequest):
        adapter.submit(make_refund(user=user))
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("status,code", [(403, "ACCOUNT_FROZEN"), (400, "INVALID_REQUEST")])
def test_refusals_fail(adapter: BalanceAdapter, mocked: responses.RequestsMock,
                       status: int, code: str) -> None:
    mocked.post(BASE + "/v1/refunds", status=status, json={"code": code, "message": "no"})
    result = adapter.submit(REFUND)
    assert (result.status, result.failure_code) == (ChannelStatus.FAILED, code)


@pytest.mark.parametrize("status,body,error", [
    (401, {"code": "SIGN_ERROR"}, ChannelAuthError),
    (401, {"code": "TIMESTAMP_EXPIRED"}, ChannelAuthError),
    (401, {"code": "NONCE_REPLAYED"}, ChannelAuthError),
    (409, {"code": "IDEMPOTENCY_CONFLICT"}, OutcomeUnknown),
    (400, {"code": "SOMETHING_NEW"}, OutcomeUnknown),   # unknown code: never a failure
    (500, {"code": "SYSTEM_ERROR"}, OutcomeUnknown),
    (429, {"code": "RATE_LIMITED"}, OutcomeUnknown),
])
def test_error_answers(adapter: BalanceAdapter, mocked: responses.RequestsMock, status: int,
                       body: dict[str, str], error: type[Exception]) -> None:
    mocked.post(BASE + "/v1/refunds", status=status, json=body)
    with pytest.raises(error):
        adapter.submit(REFUND)


@pytest.mark.parametrize("exc,error", [
    (requests.ConnectTimeout("c"), ChannelUnavailable),
    (requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(  # type: ignore[arg-type]
        None, "refused"))), ChannelUnavailable),  # type: ignore[arg-type]
    (requests.ReadTimeout("r"), OutcomeUnknown),
    (requests.ConnectionError(ProtocolError("aborted", ConnectionResetError())),
     OutcomeUnknown),
])
def test_transport(adapter: BalanceAdapter, mocked: responses.RequestsMock, exc: Exception,
                   error: type[Exception]) -> None:
    mocked.post(BASE + "/v1/refunds", body=exc)
    with pytest.raises(error):
        adapter.submit(REFUND)


def test_garbage_and_mismatched_answers_are_unknown(adapter: BalanceAdapter,
                                                    mocked: responses.RequestsMock) -> None:
    mocked.post(BASE + "/v1/refunds", body="<html>")
    with pytest.raises(OutcomeUnknown):
        adapter.submit(REFUND)
    mocked.replace(responses.POST, BASE + "/v1/refunds", json=record(refund_no="OTHER"))
    with pytest.raises(OutcomeUnknown):
        adapter.submit(REFUND)


def test_query(adapter: BalanceAdapter, mocked: responses.RequestsMock) -> None:
    url = f"{BASE}/v1/refunds/{REFUND.channel_refund_no}"
    mocked.get(url, status=404, json={"code": "NOT_FOUND"})
    assert adapter.query(REFUND).status is ChannelStatus.NOT_FOUND
    mocked.replace(responses.GET, url, json=record(status="weird"))
    assert adapter.query(REFUND).status is ChannelStatus.PROCESSING
    mocked.replace(responses.GET, url, json=record())
    assert adapter.query(REFUND).status is ChannelStatus.SUCCEEDED


def test_statement(adapter: BalanceAdapter, mocked: responses.RequestsMock) -> None:
    mocked.get(f"{BASE}/v1/ledger/2026-11-20", body=b"entry_id,type\n")
    assert adapter.download_statement(date(2026, 11, 20)) == b"entry_id,type\n"


def test_no_notifications(adapter: BalanceAdapter) -> None:
    assert not adapter.capabilities.notifications
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, b"{}")


def test_bad_refund_no(adapter: BalanceAdapter) -> None:
    with pytest.raises(InvalidRequest):
        adapter.submit(make_refund(no="bad no!"))


def test_build() -> None:
    with pytest.raises(ConfigurationError):
        build(GatewaySettings(), lambda: NOW)
    with pytest.raises(ConfigurationError) as info:
        build(GatewaySettings(balance={"base_url": BASE, "hmac_key": "k3y!"}), lambda: NOW)
    assert "k3y!" not in str(info.value)


# sandbox/balance.py (the wallet's contract): a record's status is always SUCCESS. Nothing
# else is published, so nothing else is final; "failed" used to be FAILED.
@pytest.mark.parametrize("value,status", [("SUCCESS", ChannelStatus.SUCCEEDED),
                                          ("PROCESSING", ChannelStatus.PROCESSING),
                                          ("failed", ChannelStatus.PROCESSING),
                                          ("FAILED", ChannelStatus.PROCESSING),
                                          ("success", ChannelStatus.PROCESSING),
                                          (None, ChannelStatus.PROCESSING),
                                          (7, ChannelStatus.PROCESSING),
                                          ("new", ChannelStatus.PROCESSING)])
def test_status_table(value: object, status: ChannelStatus) -> None:
    with capture_logs() as logs:
        assert translate.status_of(value) is status
    assert any(e["event"] == "balance.unknown_status" for e in logs) == (value != "SUCCESS")


def test_a_record_saying_failed_does_not_fail_the_refund(
        adapter: BalanceAdapter, mocked: responses.RequestsMock) -> None:
    mocked.post(BASE + "/v1/refunds", json=record(status="FAILED"))
    result = adapter.submit(REFUND)
    assert (result.status, result.failure_code) == (ChannelStatus.PROCESSING, None)


V = translate.Verdict
# sandbox/balance.py "Errors", copied by hand: (HTTP, code, submit, query).
CONTRACT_ERRORS = [
    (400, "INVALID_REQUEST", V.REFUSED, V.UNKNOWN),
    (403, "ACCOUNT_FROZEN", V.REFUSED, V.UNKNOWN),
    (409, "IDEMPOTENCY_CONFLICT", V.UNKNOWN, V.UNKNOWN),
    (401, "SIGN_ERROR", V.AUTH, V.AUTH),
    (401, "TIMESTAMP_EXPIRED", V.AUTH, V.AUTH),
    (401, "NONCE_REPLAYED", V.AUTH, V.AUTH),
    (429, "RATE_LIMITED", V.UNKNOWN, V.UNKNOWN),
    (500, "SYSTEM_ERROR", V.UNKNOWN, V.UNKNOWN),
]


@pytest.mark.parametrize("http,code,submit,query", CONTRACT_ERRORS)
def test_error_table(http: int, code: str, submit: translate.Verdict,
                     query: translate.Verdict) -> None:
    assert translate.error_verdict(http, code) is submit
    assert translate.error_verdict(http, code, query=True) is query


def test_error_table_is_the_contract() -> None:
    assert set(translate.ERRORS) == {(h, c) for h, c, _, _ in CONTRACT_ERRORS}
    assert translate.error_verdict(404, "NOT_FOUND", query=True) is V.NOT_FOUND


@pytest.mark.parametrize("http,code,query", [
    (400, "SOMETHING_NEW", False), (403, "INVALID_REQUEST", False),   # code under another
    (404, "NOT_FOUND", False), (404, None, True), (418, None, False),  # HTTP status
    (400, "ACCOUNT_FROZEN", True),
])
def test_unlisted_errors_are_unknown_with_a_warning(http: int, code: str | None,
                                                    query: bool) -> None:
    with capture_logs() as logs:
        assert translate.error_verdict(http, code, query=query) is V.UNKNOWN
    assert any(e["event"] == "balance.unknown_error_code" for e in logs)


def test_query_404_without_the_contract_code_is_unknown(
        adapter: BalanceAdapter, mocked: responses.RequestsMock) -> None:
    url = f"{BASE}/v1/refunds/{REFUND.channel_refund_no}"
    mocked.get(url, status=404, json={"error": "no route"})
    with pytest.raises(OutcomeUnknown):
        adapter.query(REFUND)
