"""UnionPay trust by chain (issue 19, CH §6) through RefundGateway against the sandbox, on
SQLite and PostgreSQL: the signing certificate rotates (a new key, a new leaf from the
same middle CA) and refunds, queries, back notifications and the settlement file go on
being verified with nothing reconfigured; a leaf from another CA, an expired one or one
with another CN is refused: never a success, and the refund is resolved once UnionPay
signs with a certificate we trust again. A pinned gateway (the explicit opt-in) is the
contrast: the rotation is exactly what it cannot follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from gateway import Money, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.clock import BEIJING
from gateway.settings import load_settings
from reconciliation.statements import LineKind, Source, read_lines
from tests.integration.bankcard.conftest import Receiver, fault, paid, settle, truth
from tests.integration.bankcard.test_sandbox_codes import wait_for

S = RefundStatus
BANK = Route.BANKCARD
PREFIX = "REFUND_GATEWAY_BANKCARD__"


def ask(sandbox_url: str, key: str, fen: int = 2_500) -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=paid(sandbox_url, BANK),
                         amount=Money(fen), reason="test")


def signing_cert(sandbox_url: str) -> str:
    """The signPubKeyCert of a real answer right now (a query of an unknown order)."""
    r = requests.post(f"{sandbox_url}/gateway/api/queryTrans.do", data={}, timeout=5)
    text = r.content.decode("utf-8")
    start = text.index("signPubKeyCert=") + len("signPubKeyCert=")
    return text[start:text.index("-----END CERTIFICATE-----", start)]


def refused_signatures(gw: RefundGateway, refund_id: str) -> int:
    """How many of the refund's attempts ended with an answer that did not verify."""
    return sum(1 for e in gw.events(refund_id)
               if e.kind == "attempt" and "SIGNATURE_INVALID" in repr(e.data))


def test_refund_query_notice_and_file_verified_across_a_rotation(
        gw: RefundGateway, sandbox_url: str, receiver: Receiver,
        sandbox_settings: dict[str, str]) -> None:
    first = gw.refund(ask(sandbox_url, "k1"))       # settles at once: a notice follows
    assert wait_for(lambda: gw.get(first.id).status is S.SUCCEEDED)
    before = signing_cert(sandbox_url)
    fault(sandbox_url, BANK, "refund", "cert_rotated")
    settle(sandbox_url, BANK, "after_queries", 1)   # the query settles, then a notice
    second = gw.refund(ask(sandbox_url, "k2"))      # answered under the new certificate
    after = signing_cert(sandbox_url)
    assert after != before and before in sandbox_settings[PREFIX + "UNIONPAY_PUBLIC_KEY"]
    assert second.status is S.PROCESSING and second.channel_refund_id   # verified 00
    assert refused_signatures(gw, second.id) == 0
    assert gw.sync(second.id).status is S.SUCCEEDED                     # query verified
    third = gw.refund(ask(sandbox_url, "k3"))
    settle(sandbox_url, BANK, "immediate")
    receiver.answers.clear()
    gw.sync(third.id)
    assert wait_for(lambda: receiver.answers.count(200) >= 1)           # notice verified
    assert 400 not in receiver.answers
    today = datetime.now(BEIJING).date()
    data = gw.adapters[BANK].download_statement(today)                  # file verified
    listed = {ln.channel_refund_no for ln in read_lines(Source.of(data, "bankcard"),
                                                        route=BANK)
              if ln.kind is LineKind.REFUND}
    assert {first.channel_refund_no, second.channel_refund_no} <= listed
    assert all(r["executions"] == 1 for r in truth(sandbox_url, BANK))


@pytest.mark.parametrize("params", [
    {"issuer": "foreign"},                      # another CA, the same names
    {"expired": True},
    {"cn": "041@Z12@00040001:SIGN@00000062"},   # not UnionPay's signing CN
], ids=["another-ca", "expired", "wrong-cn"])
def test_an_untrusted_certificate_is_never_a_success(
        gw: RefundGateway, sandbox_url: str, receiver: Receiver,
        params: dict[str, Any]) -> None:
    fault(sandbox_url, BANK, "refund", "cert_rotated", **params)
    refund = gw.refund(ask(sandbox_url, "k1"))      # executed, notified, answered: all
    assert refund.status is S.PROCESSING            # ... under the untrusted certificate
    assert refused_signatures(gw, refund.id) == 1
    assert wait_for(lambda: 400 in receiver.answers)    # the notice is refused too
    assert 200 not in receiver.answers
    assert gw.sync(refund.id).status is S.PROCESSING    # and the query's answer
    assert refused_signatures(gw, refund.id) == 2
    fault(sandbox_url, BANK, "query", "cert_rotated")   # UnionPay signs properly again
    assert gw.sync(refund.id).status is S.SUCCEEDED
    [row] = truth(sandbox_url, BANK)
    assert (row["status"], row["executions"]) == ("SUCCESS", 1)


@pytest.fixture
def pinned(database_url: str, sandbox_settings: dict[str, str], receiver: Receiver,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    for key, value in sandbox_settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(PREFIX + "BACK_URL", receiver.url)
    monkeypatch.setenv(PREFIX + "TRUST", "pin")      # UNIONPAY_PUBLIC_KEY: today's leaf
    settings = load_settings(database_url=database_url)
    gateway = build_gateway(settings, adapters=build_adapters(settings, routes=[BANK]),
                            sleep=lambda _: None, configure_logs=False)
    receiver.gateway = gateway
    yield gateway
    receiver.gateway = None
    gateway.close()


def test_a_pinned_gateway_cannot_follow_the_rotation(
        pinned: RefundGateway, sandbox_url: str, receiver: Receiver) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    before = pinned.refund(ask(sandbox_url, "k1"))
    assert before.status is S.PROCESSING and refused_signatures(pinned, before.id) == 0
    fault(sandbox_url, BANK, "refund", "cert_rotated")
    after = pinned.refund(ask(sandbox_url, "k2"))
    assert after.status is S.PROCESSING and refused_signatures(pinned, after.id) == 1
    assert pinned.sync(after.id).status is S.PROCESSING    # stuck until the pin changes
