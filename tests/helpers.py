"""Small builders shared by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Payment, RefundRequest, Route
from gateway.money import Money


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def payment(order: str = "ORD1", paid: int = 10_000, route: Route = Route.WECHATPAY,
            user_id: str | None = "u-1") -> Payment:
    return Payment(route=route, merchant_order_no=order, channel_trade_no=f"T{order}",
                   amount=Money(paid), user_id=user_id)


def request(key: str = "k1", amount: int = 2_500, order: str = "ORD1", paid: int = 10_000,
            route: Route = Route.WECHATPAY, reason: str = "goods not delivered"
            ) -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=payment(order, paid, route),
                         amount=Money(amount), reason=reason)
