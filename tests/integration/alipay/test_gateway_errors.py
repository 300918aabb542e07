"""Alipay gateway-level errors (CHANNELS-ADDENDUM §6) through the real Alipay adapter and
RefundGateway against the sandbox, on SQLite and PostgreSQL.

The adapter's decision for each is the one ``adapters/alipay/translate.py`` tables: our
credentials or permissions rejected (a bad signature, an unknown or missing app_id, a
missing sign, 20001, 40006) is ``ChannelAuthError`` and the refund stays PENDING, never
FAILED; an unsigned answer that names no credential, 20000, or any refused query is
``OutcomeUnknown``; only a SIGNED 40001/40002 about a parameter is FAILED (verified, and
the gateway stopped it before the refund ran). The sandbox's truth shows nothing executed
each time, and once the cause is gone the same ``out_request_no`` refunds exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.errors import ChannelAuthError, ChannelError, OutcomeUnknown
from gateway.models import ChannelStatus, Refund
from gateway.settings import load_settings
from tests.helpers import FakeClock
from tests.integration.alipay import test_alipay_sandbox as sandbox_tests

S = RefundStatus
P = "REFUND_GATEWAY_ALIPAY__"


class Control(sandbox_tests.Control):
    def fault(self, operation: str, kind: str, count: int = 1, **params: Any) -> None:
        self._call("POST", "/_sandbox/faults", {"route": "alipay", "operation": operation,
                                                "kind": kind, "count": count, **params})

    def executions(self) -> list[int]:
        rows = self._call("GET", "/_sandbox/refunds")["refunds"]
        return [r["executions"] for r in rows if r["route"] == "alipay"]


@pytest.fixture
def control(refund_sandbox: Any) -> Control:
    return Control(refund_sandbox.url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def gateway(database_url: str, settings: Mapping[str, str], clock: FakeClock,
            monkeypatch: pytest.MonkeyPatch, **override: str) -> RefundGateway:
    for key, value in settings.items():
        if key.startswith(P):
            monkeypatch.setenv(key, value)
    for key, value in override.items():
        monkeypatch.setenv(P + key, value)
    monkeypatch.setenv(P + "TIMEOUTS__READ", "2")
    return build_gateway(load_settings(database_url=database_url), clock=clock,
                         sleep=lambda _: None, configure_logs=False)


@pytest.fixture
def gw(database_url: str, sandbox_settings: Mapping[str, str], clock: FakeClock,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    built = gateway(database_url, sandbox_settings, clock, monkeypatch)
    yield built
    built.close()


def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def ask(payment: Payment, key: str = "k1") -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=payment, amount=Money(2_500),
                         reason="gateway error")


def bare_refund(payment: Payment, no: str = "RFGWERR0001") -> Refund:
    now = datetime.now(UTC)
    return Refund(id=no, idempotency_key=no, route=Route.ALIPAY, payment=payment,
                  amount=Money(1_000), reason="gateway error", status=S.PENDING,
                  channel_refund_no=no, created_at=now, updated_at=now)


# -- the real triggers: our credentials are wrong ----------------------------------------------
@pytest.mark.parametrize(("setting", "sub_code"), [
    ("APP_PRIVATE_KEY", "isv.invalid-signature"),    # signed answer: verified, then AUTH
    ("APP_ID", "isv.invalid-app-id"),                # unsigned answer under the method key
])
def test_wrong_credentials_are_an_auth_error_and_the_refund_waits(
        database_url: str, sandbox_settings: Mapping[str, str], clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch, control: Control, setting: str,
        sub_code: str) -> None:
    wrong = {setting: other_key() if setting == "APP_PRIVATE_KEY" else "2021009999999999"}
    payment = control.payment(10_000)
    broken = gateway(database_url, sandbox_settings, clock, monkeypatch, **wrong)
    try:
        with pytest.raises(ChannelAuthError) as raised:
            broken.adapters[Route.ALIPAY].submit(bare_refund(payment))
        assert raised.value.code == sub_code
        refund = broken.refund(ask(payment))
        assert (refund.status, refund.failure_code) == (S.PENDING, None)   # never FAILED
    finally:
        broken.close()
    assert control.executions() == []
    # the credentials fixed: the resolver sends the same out_request_no, refunded once
    fixed = gateway(database_url, sandbox_settings, clock, monkeypatch)
    try:
        clock.advance(minutes=61)
        fixed.resolve_due()
        after = fixed.get(refund.id)
        if after.status is S.PROCESSING:
            after = fixed.sync(refund.id)
        assert after.status is S.SUCCEEDED
        assert after.channel_refund_no == refund.channel_refund_no
    finally:
        fixed.close()
    assert control.executions() == [1]


# -- the fault kinds: what the adapter decides for each --------------------------------------
AUTH, UNKNOWN = ChannelAuthError, OutcomeUnknown


@pytest.mark.parametrize(("kind", "params", "error", "code"), [
    ("invalid_signature", {}, AUTH, "isv.invalid-signature"),
    ("invalid_app_id", {}, AUTH, "isv.invalid-app-id"),
    ("missing_parameter", {}, AUTH, "isv.missing-signature"),
    ("missing_parameter", {"parameter": "app_id"}, AUTH, "isv.missing-app-id"),
    ("missing_parameter", {"parameter": "sign_type"}, AUTH, "isv.missing-signature-type"),
    # unsigned and about no credential: not a verified refusal, so not a failure
    ("missing_parameter", {"parameter": "method"}, UNKNOWN, "isv.missing-method"),
    # signed, but about our clock: the refund waits for it to be fixed, never FAILED
    ("missing_parameter", {"parameter": "timestamp"}, AUTH, "isv.missing-timestamp"),
    ("invalid_auth_token", {}, AUTH, "aop.invalid-app-auth-token"),
    ("insufficient_permissions", {}, AUTH, "isv.insufficient-isv-permissions"),
    ("service_unavailable", {}, UNKNOWN, "isp.unknow-error"),
])
def test_gateway_errors_on_submit_are_never_a_failure(
        gw: RefundGateway, control: Control, kind: str, params: dict[str, Any],
        error: type[ChannelError], code: str) -> None:
    payment = control.payment(10_000)
    control.fault("refund", kind, **params)
    with pytest.raises(error) as raised:
        gw.adapters[Route.ALIPAY].submit(bare_refund(payment))
    assert type(raised.value) is error and raised.value.code == code
    control.fault("refund", kind, **params)
    refund = gw.refund(ask(payment))
    expected = S.PENDING if error is AUTH else S.PROCESSING
    assert (refund.status, refund.failure_code) == (expected, None)
    assert control.executions() == []


def test_a_signed_missing_parameter_is_a_verified_refusal(gw: RefundGateway,
                                                          control: Control) -> None:
    """Signed 40001 isv.missing-version: verified, stopped at the gateway, nothing moved
    (addendum §6 "final refusal"): FAILED by the table, which frees the amount safely.
    (A refused *timestamp* is our clock: ChannelAuthError, the refund waits; below.)"""
    payment = control.payment(10_000)
    control.fault("refund", "missing_parameter", parameter="version")
    result = gw.adapters[Route.ALIPAY].submit(bare_refund(payment))
    assert (result.status, result.failure_code) == (ChannelStatus.FAILED,
                                                    "isv.missing-version")
    assert control.executions() == []


@pytest.mark.parametrize(("kind", "params"), [
    ("missing_parameter", {"parameter": "version"}),
    ("service_unavailable", {}),
    ("missing_parameter", {"parameter": "method"}),
])
def test_a_refused_query_never_decides_the_refund(gw: RefundGateway, control: Control,
                                                  kind: str, params: dict[str, Any]) -> None:
    refund = gw.refund(ask(control.payment(10_000)))
    assert refund.status is S.SUCCEEDED
    control.fault("query", kind, **params)
    with pytest.raises(OutcomeUnknown):
        gw.adapters[Route.ALIPAY].query(refund)
    assert gw.get(refund.id).status is S.SUCCEEDED


def test_service_unavailable_after_executing_is_resolved_by_the_query(
        gw: RefundGateway, control: Control) -> None:
    control.fault("refund", "service_unavailable", executed=True)
    refund = gw.refund(ask(control.payment(10_000)))
    assert (refund.status, refund.failure_code) == (S.PROCESSING, None)
    assert gw.sync(refund.id).status is S.SUCCEEDED
    assert control.executions() == [1]
