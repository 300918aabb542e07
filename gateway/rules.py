"""The shared reading of a route's declared rules (``Capabilities``): one ``check`` that
every adapter's ``validate`` runs before the service writes anything.

Why here and not in each ``submit``: a rule checked after the reservation leaves a
PENDING row holding the payment's amount that the resolver resends forever (issue 15);
checked here, an ``InvalidRequest`` means nothing was stored. Pure: no I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from gateway.errors import InvalidRequest
from gateway.models import RefundRequest, Route

if TYPE_CHECKING:
    from gateway.ports import Capabilities


def reason_length(reason: str, unit: str) -> int:
    """The reason's length as the channel counts it (WeChat: UTF-8 bytes, addendum §9)."""
    return len(reason.encode("utf-8")) if unit == "utf8_bytes" else len(reason)


def check(route: Route, caps: Capabilities, request: RefundRequest, *,
          channel_refund_no: str, now: datetime, rerouted_from: Route | None = None) -> None:
    """Raise ``InvalidRequest`` naming the field for anything ``route`` would refuse."""
    payment, name = request.payment, route.value
    if rerouted_from is None and payment.route is not route:
        raise InvalidRequest(f"a {payment.route.value} payment is refunded on its own route, "
                             f"not {name}", field="payment.route")
    if rerouted_from is not None and not caps.takes_reroutes:
        raise InvalidRequest(f"{name} cannot carry a refund of a {rerouted_from.value} "
                             f"payment; reroute to the platform balance", field="to")
    currency = request.amount.currency
    if currency not in caps.currencies:
        raise InvalidRequest(f"{name} refunds only in {', '.join(sorted(caps.currencies))}, "
                             f"not {currency}", field="amount.currency")
    if not caps.partial_refunds and request.amount != payment.amount:
        raise InvalidRequest(f"{name} refunds only in full", field="amount")
    if not caps.refund_no.fullmatch(channel_refund_no):
        raise InvalidRequest(f"{name} takes refund numbers of the form "
                             f"{caps.refund_no.pattern}", field="channel_refund_no")
    used = reason_length(request.reason, caps.reason_unit)
    if used > caps.reason_max:
        unit = "bytes (UTF-8)" if caps.reason_unit == "utf8_bytes" else "characters"
        raise InvalidRequest(f"{name} takes a reason of at most {caps.reason_max} {unit}; "
                             f"this one has {used}", field="reason")
    if caps.order_no is not None and not caps.order_no.fullmatch(payment.merchant_order_no):
        raise InvalidRequest(f"{name} takes merchant order numbers of the form "
                             f"{caps.order_no.pattern}", field="payment.merchant_order_no")
    if (rerouted_from is None and caps.trade_no is not None
            and not caps.trade_no.fullmatch(payment.channel_trade_no)):
        raise InvalidRequest(f"{name} trade numbers have the form {caps.trade_no.pattern}",
                             field="payment.channel_trade_no")
    if caps.user_id is not None and not (payment.user_id
                                         and caps.user_id.fullmatch(payment.user_id)):
        raise InvalidRequest(f"{name} credits a platform user: payment.user_id is required, "
                             f"of the form {caps.user_id.pattern}", field="payment.user_id")
    if caps.refund_window is not None and payment.paid_at is not None \
            and now - payment.paid_at > caps.refund_window:
        raise InvalidRequest(f"{name} accepts refunds within {caps.refund_window.days} days "
                             f"of payment; this payment was made on "
                             f"{payment.paid_at.date().isoformat()}", field="payment.paid_at")
