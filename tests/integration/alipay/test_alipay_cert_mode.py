"""Alipay public-key-certificate mode and ISV mode (issue 19, CHANNELS-ADDENDUM §5) end to
end: RefundGateway with the sandbox's certificate app, on SQLite and PostgreSQL.

Refund, query, notification and bill in certificate mode; a rotation of Alipay's
certificate (the answer names a new ``alipay_cert_sn``: downloaded, chained to the root,
used), also one first seen on a notification (refused until an answer names it, then the
redelivery is accepted); certificates from another CA or expired are never trusted, and
the refund resolves once Alipay signs with a trusted one; ISV refunds carry the
authorised merchant's ``app_auth_token`` and a wrong token waits, never FAILED.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from adapters.alipay.client import AlipayClient
from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.clock import to_beijing, utcnow
from gateway.settings import load_settings
from sandbox.alipay import AUTH_APP_ID, CERT_APP_ID, AlipayChannel
from sandbox.server import SandboxServer
from tests.helpers import FakeClock

S = RefundStatus
PREFIX = "REFUND_GATEWAY_ALIPAY__"
Make = Callable[..., RefundGateway]


class Sandbox:
    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        channel = server.channel("alipay")
        assert isinstance(channel, AlipayChannel)
        self.channel = channel

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = requests.post(self.server.url + path, json=body, timeout=5)
        r.raise_for_status()
        return r.json()

    def payment(self, fen: int = 10_000) -> Payment:
        doc = self.post("/_sandbox/payments", {"route": "alipay", "amount_fen": fen})
        return Payment(Route.ALIPAY, doc["merchant_order_no"], doc["channel_trade_no"],
                       Money(fen))

    def fault(self, operation: str, kind: str, **params: Any) -> None:
        self.post("/_sandbox/faults", {"route": "alipay", "operation": operation,
                                       "kind": kind, **params})

    def settle_after_queries(self, n: int = 1) -> None:
        self.post("/_sandbox/config", {"settle": {"alipay": {"mode": "after_queries",
                                                             "n": n}}})

    def truth(self) -> list[dict[str, Any]]:
        r = requests.get(self.server.url + "/_sandbox/refunds", timeout=5)
        return [x for x in r.json()["refunds"] if x["route"] == "alipay"]

    def notices(self) -> list[tuple[dict[str, str], bytes]]:
        return [(n.headers, n.body) for n in self.server.pending_notifications("alipay")]


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> Sandbox:
    return Sandbox(refund_sandbox)


@pytest.fixture
def make(database_url: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Make]:
    made: list[RefundGateway] = []

    def build(mode: str = "cert", isv: bool = False, **extra: str) -> RefundGateway:
        settings = sandbox.channel.app_settings(sandbox.server.url, mode=mode, isv=isv)
        for key, value in {**settings, **extra}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv(PREFIX + "TIMEOUTS__READ", "2")
        gw = build_gateway(load_settings(database_url=database_url), clock=FakeClock(),
                           sleep=lambda _: None, configure_logs=False)
        made.append(gw)
        return gw

    yield build
    for gw in made:
        gw.close()


def ask(sandbox: Sandbox, key: str = "k1", fen: int = 2_500) -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=sandbox.payment(), amount=Money(fen),
                         reason="cert mode")


def client_of(gw: RefundGateway) -> AlipayClient:
    client = gw.adapters[Route.ALIPAY]._client   # type: ignore[attr-defined]
    assert isinstance(client, AlipayClient)
    return client


def deliver(gw: RefundGateway, notices: list[tuple[dict[str, str], bytes]]) -> list[bool]:
    return [gw.handle_notification(Route.ALIPAY, h, b).accepted for h, b in notices]


def test_refund_query_notification_and_bill_in_certificate_mode(
        make: Make, sandbox: Sandbox) -> None:
    gw = make()
    assert client_of(gw).certificate_mode
    refund = gw.refund(ask(sandbox))
    assert refund.status is S.SUCCEEDED                       # fund_change Y, verified
    assert gw.sync(refund.id).status is S.SUCCEEDED           # the query verified
    assert deliver(gw, sandbox.notices()) == [True]           # trade_status_sync verified
    [row] = sandbox.truth()
    assert (row["extra"]["app_id"], row["executions"]) == (CERT_APP_ID, 1)
    data = gw.adapters[Route.ALIPAY].download_statement(to_beijing(utcnow()).date())
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        text = b"".join(zf.read(n) for n in zf.namelist()).decode("gbk")
    assert refund.channel_refund_no in text


def test_a_rotated_alipay_certificate_is_downloaded_and_trusted(make: Make,
                                                                sandbox: Sandbox) -> None:
    gw = make()
    first = client_of(gw).alipay_cert_sns
    sandbox.fault("refund", "cert_rotated")
    refund = gw.refund(ask(sandbox))                # the answer names the new certificate
    assert refund.status is S.SUCCEEDED
    held = client_of(gw).alipay_cert_sns
    assert len(held) == 2 and held[0] == sandbox.channel.alipay_cert.sn and held[1:] == first
    assert deliver(gw, sandbox.notices()) == [True]       # signed with the new key
    assert gw.sync(refund.id).status is S.SUCCEEDED


def test_a_rotation_first_seen_on_a_notification_is_not_stuck(make: Make,
                                                               sandbox: Sandbox) -> None:
    """A notification names no certificate: signed by one not held yet it is refused
    (Alipay redelivers); the next answer names it, and the redelivery is accepted."""
    gw = make()
    sandbox.post("/_sandbox/config", {"settle": {"alipay": {"mode": "after_seconds",
                                                            "seconds": 0.3}}})
    sandbox.fault("notify", "cert_rotated")
    refund = gw.refund(ask(sandbox))
    assert refund.status is S.PROCESSING            # settles later, on the sandbox's own
    notices = wait_for_notices(sandbox)             # ... and its notice comes rotated
    assert deliver(gw, notices) == [False]          # signed by a certificate not held
    assert gw.sync(refund.id).status is S.SUCCEEDED  # the answer names it: downloaded
    assert client_of(gw).alipay_cert_sns[0] == sandbox.channel.alipay_cert.sn
    assert deliver(gw, notices) == [True]           # the redelivery


def wait_for_notices(sandbox: Sandbox, seconds: float = 5.0
                     ) -> list[tuple[dict[str, str], bytes]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        notices = sandbox.notices()
        if notices:
            return notices
        time.sleep(0.05)
    raise AssertionError("no notification")


@pytest.mark.parametrize("params", [{"issuer": "foreign"}, {"expired": True}],
                         ids=["another-ca", "expired"])
def test_an_untrusted_certificate_is_never_a_success(make: Make, sandbox: Sandbox,
                                                     params: dict[str, Any]) -> None:
    gw = make()
    sandbox.fault("refund", "cert_rotated", **params)
    refund = gw.refund(ask(sandbox))            # executed, answered under the bad cert
    assert refund.status is S.PROCESSING
    assert sandbox.channel.alipay_cert.sn not in client_of(gw).alipay_cert_sns
    assert deliver(gw, sandbox.notices()) == [False]
    assert gw.sync(refund.id).status is S.PROCESSING     # the query: the same certificate
    sandbox.fault("query", "cert_rotated")               # Alipay signs properly again
    assert gw.sync(refund.id).status is S.SUCCEEDED
    [row] = sandbox.truth()
    assert (row["status"], row["executions"]) == ("SUCCESS", 1)


@pytest.mark.parametrize("mode", ["cert", "key"])
def test_isv_refunds_for_the_authorised_merchant(make: Make, sandbox: Sandbox,
                                                 mode: str) -> None:
    gw = make(mode=mode, isv=True)
    refund = gw.refund(ask(sandbox))
    assert refund.status is S.SUCCEEDED
    [row] = sandbox.truth()
    assert row["extra"]["auth_app_id"] == AUTH_APP_ID
    [(headers, body)] = sandbox.notices()
    assert f"auth_app_id={AUTH_APP_ID}".encode() in body
    assert deliver(gw, [(headers, body)]) == [True]


def test_a_wrong_app_auth_token_waits_never_failed(make: Make, sandbox: Sandbox) -> None:
    gw = make(isv=True, **{PREFIX + "APP_AUTH_TOKEN": "202611BBnot0the0merchants0tokenX01"})
    refund = gw.refund(ask(sandbox))            # 20001 aop.invalid-app-auth-token
    assert (refund.status, refund.failure_code) == (S.PENDING, None)
    assert sandbox.truth() == []


def test_one_gateway_two_alipay_apps_one_in_certificate_mode(
        database_url: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19's setup: the public-key app as the account ``default`` and the
    certificate app (for the authorised merchant) as the account ``cert``; each refunds
    through its own app, and each notification is verified by the account it is for."""
    url = sandbox.server.url
    env = {**sandbox.channel.app_settings(url, mode="key"),
           **sandbox.channel.app_settings(url, mode="cert", isv=True,
                                          prefix=PREFIX + "ACCOUNTS__CERT__")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    gw = build_gateway(load_settings(database_url=database_url), clock=FakeClock(),
                       sleep=lambda _: None, configure_logs=False)
    try:
        own = gw.refund(ask(sandbox, "k1"))
        paid = sandbox.payment()
        theirs = gw.refund(RefundRequest("k2", Payment(
            Route.ALIPAY, paid.merchant_order_no, paid.channel_trade_no, paid.amount,
            merchant_account="cert"), Money(1_000), "the authorised merchant's"))
        assert (own.status, theirs.status) == (S.SUCCEEDED, S.SUCCEEDED)
        apps = {r["channel_refund_no"]: (r["extra"]["app_id"], r["extra"]["auth_app_id"])
                for r in sandbox.truth()}
        assert apps == {own.channel_refund_no: ("2021000000000001", None),
                        theirs.channel_refund_no: (CERT_APP_ID, AUTH_APP_ID)}
        assert deliver(gw, sandbox.notices()) == [True, True]
    finally:
        gw.close()
