"""Canned UnionPay answers signed with the fixed test key (shared by unit and gateway tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.bankcard import signing
from gateway.models import Payment, Refund, RefundStatus, Route
from gateway.money import Money
from tests.unit.adapters.bankcard import certs

BASE = "https://unionpay.test"
MER_ID = "777290058110048"
# Valid from 2020 for 20 years, so tests on a fixed clock (2026-11-20) trust it.
CERT_PEM = certs.pem(certs.certificate(not_before=datetime(2020, 1, 1, tzinfo=UTC),
                                       days=20 * 365))
NOW = datetime.now(UTC)


def signed_answer(**fields: str) -> str:
    """A UnionPay answer as the gateway sends it: raw k=v, signed, with signPubKeyCert."""
    body = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "merId": MER_ID,
            "certId": "69629715588", **fields, "signPubKeyCert": CERT_PEM}
    body["signature"] = signing.sign(body, certs.KEY)
    return "&".join(f"{k}={v}" for k, v in body.items())


def signed_form(**fields: str) -> dict[str, str]:
    """A back notification's fields, signed (the caller URL-encodes them)."""
    body = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "merId": MER_ID,
            "certId": "69629715588", **fields, "signPubKeyCert": CERT_PEM}
    body["signature"] = signing.sign(body, certs.KEY)
    return body


def make_refund(no: str = "RF20261120A1B2C3D4E5F60718", amount: int = 2500,
                status: RefundStatus = RefundStatus.PENDING) -> Refund:
    created = datetime(2026, 11, 20, 2, 0, 0, tzinfo=UTC)   # 10:00:00 Beijing
    pay = Payment(route=Route.BANKCARD, merchant_order_no="ORD1",
                  channel_trade_no="762611201000000000001", amount=Money(10_000))
    return Refund(id=no, idempotency_key="k1", route=Route.BANKCARD, payment=pay,
                  amount=Money(amount), reason="test", status=status,
                  channel_refund_no=no, created_at=created, updated_at=created)
