"""A bank-card adapter wired to ``responses`` with the fixed test key on both sides."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import responses

from adapters.bankcard import signing
from adapters.bankcard.adapter import BankcardAdapter
from adapters.bankcard.client import UnionPayClient
from gateway.models import Payment, Refund, RefundStatus, Route
from gateway.money import Money
from tests.unit.adapters.bankcard import certs

BASE = "https://unionpay.test"
MER_ID = "777290058110048"
CERT_PEM = certs.pem(certs.certificate())
NOW = datetime.now(UTC)


def signed_answer(**fields: str) -> str:
    """A UnionPay answer as the gateway sends it: raw k=v, signed, with signPubKeyCert."""
    body = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "merId": MER_ID,
            "certId": "69629715588", **fields, "signPubKeyCert": CERT_PEM}
    body["signature"] = signing.sign(body, certs.KEY)
    return "&".join(f"{k}={v}" for k, v in body.items())


def make_refund(no: str = "RF20261120A1B2C3D4E5F60718", amount: int = 2500,
                status: RefundStatus = RefundStatus.PENDING) -> Refund:
    created = datetime(2026, 11, 20, 2, 0, 0, tzinfo=UTC)   # 10:00:00 Beijing
    pay = Payment(route=Route.BANKCARD, merchant_order_no="ORD1",
                  channel_trade_no="762611201000000000001", amount=Money(10_000))
    return Refund(id=no, idempotency_key="k1", route=Route.BANKCARD, payment=pay,
                  amount=Money(amount), reason="test", status=status,
                  channel_refund_no=no, created_at=created, updated_at=created)


@pytest.fixture
def trust() -> signing.TrustAnchor:
    return signing.load_trust_anchor(certs.public_pem())


@pytest.fixture
def adapter(trust: signing.TrustAnchor) -> Iterator[BankcardAdapter]:
    client = UnionPayClient(base_url=BASE, mer_id=MER_ID, cert_id="69629715588",
                            private_key=certs.KEY, trust=trust, connect_timeout=1,
                            read_timeout=2)
    yield BankcardAdapter(client, back_url="http://127.0.0.1:9/notify/bankcard",
                          channel_type="07", trust=trust, clock=lambda: NOW)
    client.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps
