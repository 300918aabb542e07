"""The values the gateway stores and hands out: routes, payments, requests, refunds, events.

All are immutable. Timestamps are timezone-aware UTC; money is ``Money``. Validation that
needs no I/O happens here or in ``RefundRequest.validate`` so bad input fails before any
database or channel call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from gateway.errors import InvalidRequest
from gateway.money import Money


class Route(StrEnum):
    """The way the money came in, and so the way it goes back (原路退款)."""

    ALIPAY = "alipay"
    WECHATPAY = "wechatpay"
    BANKCARD = "bankcard"
    BALANCE = "balance"


class RefundStatus(StrEnum):
    """Refund states (DESIGN.md "States"); the transitions live in ``gateway.lifecycle``."""

    PENDING = "pending"        # stored, not yet confirmed sent
    PROCESSING = "processing"  # sent; accepted, or outcome unknown with next_check_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"          # only on a verified, explicit refusal
    CLOSED = "closed"          # the channel closed it
    ABNORMAL = "abnormal"      # original route cannot take the money; needs reroute()
    REROUTED = "rerouted"      # resolved through another route (linked refund)

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def counts_against_payment(self) -> bool:
        """Whether the amount still counts toward the payment's refunded total."""
        return self not in _RELEASED


_FINAL = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CLOSED,
                    RefundStatus.REROUTED})
# FAILED/CLOSED never moved money; REROUTED hands its amount to the linked refund.
_RELEASED = frozenset({RefundStatus.FAILED, RefundStatus.CLOSED, RefundStatus.REROUTED})


class ChannelStatus(StrEnum):
    """What a verified channel answer says about one refund."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CLOSED = "closed"
    ABNORMAL = "abnormal"
    NOT_FOUND = "not_found"    # the channel has no record of this refund number


class EventKind(StrEnum):
    """The kinds of step in a refund's evidence trail (``RefundEvent.kind``)."""

    REQUESTED = "requested"
    ATTEMPT = "attempt"
    STATUS_CHANGED = "status_changed"
    NOTIFICATION = "notification"
    DUPLICATE_NOTIFICATION = "duplicate_notification"   # event id applied before
    REROUTED = "rerouted"
    REROUTE_OF = "reroute_of"
    IGNORED = "ignored"
    CONFLICT = "conflict"
    # Money moved after the refund's amount was released (failed, closed, rerouted):
    # the amount counts against the payment again and finance must recover it.
    PAID_AFTER_RELEASE = "paid_after_release"


@dataclass(frozen=True, slots=True)
class Payment:
    """What was paid, as the refund service knows it. ``amount`` is what was actually paid."""

    route: Route
    merchant_order_no: str
    channel_trade_no: str
    amount: Money
    user_id: str | None = None   # the platform user; used by the balance route
    # When the payment was made (aware); lets a route's refund window be checked before
    # anything is sent (WeChat: 1 year, UnionPay: 11 months). Optional.
    paid_at: datetime | None = None

    def __post_init__(self) -> None:
        # A route's string value is accepted wherever a Route is (``Route("alipay")``).
        if not isinstance(self.route, Route) and isinstance(self.route, str) \
                and self.route in Route._value2member_map_:
            object.__setattr__(self, "route", Route(self.route))

    def validate(self) -> None:
        if not isinstance(self.route, Route):
            raise InvalidRequest(f"unknown route {self.route!r}", field="payment.route")
        if self.paid_at is not None and (not isinstance(self.paid_at, datetime)
                                         or self.paid_at.tzinfo is None):
            raise InvalidRequest("payment.paid_at must be an aware datetime",
                                 field="payment.paid_at")
        if not isinstance(self.amount, Money):
            raise InvalidRequest("payment.amount must be Money", field="payment.amount")
        if self.amount.minor <= 0:
            raise InvalidRequest("payment amount must be positive", field="payment.amount")
        for name in ("merchant_order_no", "channel_trade_no"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 64:
                raise InvalidRequest(f"payment.{name} must be 1-64 characters",
                                     field=f"payment.{name}")


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """"Refund this much of that payment", under an idempotency key."""

    idempotency_key: str
    payment: Payment
    amount: Money
    reason: str = ""

    def validate(self) -> None:
        """Every check that needs no I/O (InvalidRequest before any call)."""
        key = self.idempotency_key
        if not isinstance(key, str) or not key.strip() or len(key) > 128:
            raise InvalidRequest("idempotency_key must be 1-128 characters",
                                 field="idempotency_key")
        if not isinstance(self.payment, Payment):
            raise InvalidRequest("payment must be a Payment", field="payment")
        self.payment.validate()
        if not isinstance(self.amount, Money):
            raise InvalidRequest("amount must be Money (integer minor units)", field="amount")
        if self.amount.minor <= 0:
            raise InvalidRequest("refund amount must be positive", field="amount")
        if self.amount.currency != self.payment.amount.currency:
            raise InvalidRequest(
                f"refund currency {self.amount.currency} differs from the payment's "
                f"{self.payment.amount.currency}", field="amount.currency")
        if self.amount.minor > self.payment.amount.minor:
            raise InvalidRequest("refund amount exceeds the amount paid", field="amount")
        if not isinstance(self.reason, str) or len(self.reason) > 256:
            raise InvalidRequest("reason must be at most 256 characters", field="reason")

    def canonical(self) -> dict[str, str]:
        """The fields that define "the same request", as strings (for fingerprint and diff)."""
        p = self.payment
        return {
            "route": p.route.value,
            "merchant_order_no": p.merchant_order_no,
            "channel_trade_no": p.channel_trade_no,
            "paid_minor": str(p.amount.minor),
            "currency": self.amount.currency,
            "amount_minor": str(self.amount.minor),
            "reason": self.reason,
            "user_id": p.user_id or "",
            # only when given, so requests stored before paid_at existed keep their
            # fingerprint (a replay of them must not become an IdempotencyConflict)
            **({"paid_at": p.paid_at.isoformat()} if p.paid_at is not None else {}),
        }

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form (sorted keys, no whitespace)."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ArrivalWindow:
    """When the user should see the money, in calendar dates (derived from working days)."""

    earliest: date
    latest: date


@dataclass(frozen=True, slots=True)
class Refund:
    """A stored refund. ``channel_refund_no`` never changes once the refund exists."""

    id: str
    idempotency_key: str
    route: Route
    payment: Payment
    amount: Money
    reason: str
    status: RefundStatus
    channel_refund_no: str
    created_at: datetime
    updated_at: datetime
    channel_refund_id: str | None = None
    succeeded_at: datetime | None = None
    next_check_at: datetime | None = None
    check_count: int = 0
    failure_code: str | None = None
    failure_message: str | None = None
    received_account: str | None = None
    bank_ack: Mapping[str, str] = field(default_factory=dict)
    expected_arrival: ArrivalWindow | None = None
    rerouted_from: str | None = None
    rerouted_to: str | None = None      # the live (latest) linked refund
    linked_refunds: tuple[str, ...] = ()   # every linked refund, oldest first
    abnormal_applied_at: datetime | None = None   # WeChat abnormal-refund API (CH §5.6)
    paid_after_release_at: datetime | None = None   # see EventKind.PAID_AFTER_RELEASE
    version: int = 0

    @property
    def counts_against_payment(self) -> bool:
        """Whether this refund's amount counts toward the payment's refunded total: a
        released amount counts again once the channel says the money moved after all."""
        return (self.status.counts_against_payment
                or self.paid_after_release_at is not None)


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """One append-only step of a refund's history (the evidence trail)."""

    refund_id: str
    seq: int
    at: datetime
    kind: EventKind
    status_from: RefundStatus | None
    status_to: RefundStatus | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One channel call made for a refund, with its (redacted) outcome."""

    refund_id: str
    operation: str
    started_at: datetime
    finished_at: datetime
    outcome: str                 # a ChannelStatus value, or the error class name
    http_status: int | None = None
    code: str | None = None
    request_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelResult:
    """A verified channel answer, normalised. A refusal is data, not an exception.

    ``replay_key`` is a value the channel never repeats for a genuine message (WeChat's
    nonce): seen twice means a replay. ``event_id`` identifies a notification that the
    channel may legitimately redeliver (WeChat envelope id, Alipay notify_id).
    """

    status: ChannelStatus
    channel_refund_no: str | None = None
    channel_refund_id: str | None = None
    amount: Money | None = None
    succeeded_at: datetime | None = None
    received_account: str | None = None
    bank_ack: Mapping[str, str] = field(default_factory=dict)
    failure_code: str | None = None
    failure_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    replay_key: str | None = None
    occurred_at: datetime | None = None   # when the channel says the notified event happened


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One status change of a refund, as the refund service hears of it
    (``RefundGateway.events_since`` / ``subscribe``). Delivered at least once: dedupe on
    ``event_id``. ``cursor`` orders events; ``status_from`` is None for a new refund."""

    cursor: int
    event_id: str
    refund_id: str
    idempotency_key: str
    merchant_order_no: str
    route: Route
    status_from: RefundStatus | None
    status_to: RefundStatus
    amount: Money
    at: datetime


@dataclass(frozen=True, slots=True)
class NotificationAck:
    """What to answer the channel's HTTP notification with."""

    http_status: int
    body: bytes
    content_type: str = "text/plain"
    refund_id: str | None = None
    accepted: bool = True
