"""The values the gateway stores and hands out: routes, payments, requests, refunds, events.

All are immutable. Timestamps are timezone-aware UTC; money is ``Money``. Validation that
needs no I/O happens here or in ``RefundRequest.validate`` so bad input fails before any
database or channel call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from gateway.errors import InvalidRequest
from gateway.money import Money

_ACCOUNT = re.compile(r"[a-z0-9_-]{1,32}")


class Route(StrEnum):
    """The way the money came in, and so the way it goes back (原路退款).

    The values are the strings used alike in settings, CLI flags, database columns,
    sandbox paths and file names; wherever a route is taken, ``"alipay"`` works as well
    as ``Route.ALIPAY``.

    Attributes:
        ALIPAY: Alipay OpenAPI, RSA2 (CH §1, §4); refund number ``out_request_no``.
        WECHATPAY: WeChat Pay API v3, public-key mode (CH §5); refund number
            ``out_refund_no``; at most 50 refunds per order, within a year of payment.
        BANKCARD: UnionPay online gateway 5.1.0 (CH §6); refund number ``orderId``
            (8-32 alphanumerics); within 11 months; 1-5 working days to the card.
        BALANCE: the platform's own wallet: credits ``Payment.user_id`` at once; the
            default target of ``RefundGateway.reroute``.
    """

    ALIPAY = "alipay"
    WECHATPAY = "wechatpay"
    BANKCARD = "bankcard"
    BALANCE = "balance"


class RefundStatus(StrEnum):
    """Refund states (DESIGN.md "States"); the transitions live in ``gateway.lifecycle``
    (the docs' "Refund states" page draws them).

    Attributes:
        PENDING: stored, not yet confirmed sent (the channel could not be reached, or
            the submit is in flight); the resolver checks it.
        PROCESSING: sent: the channel accepted it, or the outcome is unknown and
            ``Refund.next_check_at`` says when it is asked again.
        SUCCEEDED: the channel says the money went back. Final.
        FAILED: a verified, explicit refusal: no money moved. Final; the amount is
            released (it may be refunded again).
        CLOSED: the channel closed it without paying. Final; the amount is released.
        ABNORMAL: the original route cannot take the money (card cancelled, account
            frozen); resolve it with ``RefundGateway.reroute``.
        REROUTED: resolved through another route: ``Refund.rerouted_to`` is the linked
            refund that carries the amount now. Final.
    """

    PENDING = "pending"        # stored, not yet confirmed sent
    PROCESSING = "processing"  # sent; accepted, or outcome unknown with next_check_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"          # only on a verified, explicit refusal
    CLOSED = "closed"          # the channel closed it
    ABNORMAL = "abnormal"      # original route cannot take the money; needs reroute()
    REROUTED = "rerouted"      # resolved through another route (linked refund)

    @property
    def is_final(self) -> bool:
        """Whether nothing moves the refund any more (succeeded, failed, closed,
        rerouted); ``abnormal`` is not final: it waits for a reroute."""
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
    """What a verified channel answer says about one refund (``ChannelResult.status``).

    Each adapter maps its channel's statuses here in one table (its ``translate.py``);
    a status it does not know maps to ``PROCESSING``, never to success or failure.

    Attributes:
        PROCESSING: accepted, not final yet (WeChat PROCESSING, UnionPay 05).
        SUCCEEDED: the money went back (Alipay fund_change Y, WeChat SUCCESS, UnionPay
            origRespCode 00/A6, wallet 200).
        FAILED: a verified, explicit refusal: nothing moved.
        CLOSED: the channel closed the refund without paying (WeChat CLOSED).
        ABNORMAL: accepted, but the account cannot take the money (WeChat ABNORMAL,
            Alipay's bank leg F, UnionPay 63 after acceptance, wallet frozen).
        NOT_FOUND: the channel has no record of this refund number (a query); the
            resolver resends under the same number.
    """

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
    """What was paid, as the refund service knows it: the payment a refund goes back to.

    A payment is its channel trade (``route``, ``channel_trade_no``): one cap per trade,
    so the same trade under another ``merchant_order_no`` is refused with both named.

    Attributes:
        route: the route the money came in by (a ``Route`` or its string value).
        merchant_order_no: the platform's order number the payment was made under
            (Alipay/WeChat ``out_trade_no``, UnionPay's consume ``orderId``, the
            wallet's ``order_no``); 1-64 characters.
        channel_trade_no: the channel's number for the payment (Alipay ``trade_no``,
            WeChat ``transaction_id``, UnionPay's consume ``queryId`` - sent as
            ``origQryId`` -, the wallet's transaction id); 1-64 characters.
        amount: what was actually paid (after promotions, never the list price): the
            refunds of this payment that are not failed or closed never add up to more.
        user_id: the platform user who paid. Required by the balance route (it credits
            this user, 1-64 of ``[A-Za-z0-9_.:-]``), so also by a reroute to the balance.
        paid_at: when it was paid (timezone-aware). When given, the route's refund
            window is checked before anything is stored (WeChat: 1 year, UnionPay: 11
            months); when not, the channel's own refusal decides.
        merchant_account: the merchant account of the route the money came through
            (``default``, or a name from ``REFUND_GATEWAY_<ROUTE>__ACCOUNTS__<NAME>``);
            part of the payment's identity, its cap and the idempotency fingerprint.
    """

    route: Route
    merchant_order_no: str
    channel_trade_no: str
    amount: Money
    user_id: str | None = None   # the platform user; used by the balance route
    # When the payment was made (aware); lets a route's refund window be checked before
    # anything is sent (WeChat: 1 year, UnionPay: 11 months). Optional.
    paid_at: datetime | None = None
    # The merchant account the money came through (settings ``..._ACCOUNTS__<NAME>``);
    # part of the payment's identity, its cap and the idempotency fingerprint.
    merchant_account: str = "default"

    def __post_init__(self) -> None:
        # A route's string value is accepted wherever a Route is (``Route("alipay")``).
        if not isinstance(self.route, Route) and isinstance(self.route, str) \
                and self.route in Route._value2member_map_:
            object.__setattr__(self, "route", Route(self.route))

    def validate(self) -> None:
        """Refuse a malformed payment (``InvalidRequest`` naming the field); no I/O."""
        if not isinstance(self.route, Route):
            raise InvalidRequest(f"unknown route {self.route!r}", field="payment.route")
        if not isinstance(self.merchant_account, str) or not _ACCOUNT.fullmatch(
                self.merchant_account):
            raise InvalidRequest("payment.merchant_account must be 1-32 of [a-z0-9_-]",
                                 field="payment.merchant_account")
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
    """"Refund this much of that payment", under an idempotency key.

    Attributes:
        idempotency_key: your key for this refund (1-128 characters): the same key and
            the same request return the stored refund without calling the channel
            again; the same key with another request is ``IdempotencyConflict``.
        payment: the payment to refund (``Payment``).
        amount: how much to refund, in the payment's currency (``Money``, integer
            minor units), at most what is left of the payment (else ``OverRefund``).
        reason: shown to the user by the channel; at most 256 characters, and the
            route's own limit as the channel counts it (WeChat: 80 bytes of UTF-8,
            CHANNELS-ADDENDUM §9; Alipay: 256 characters).
    """

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
            **({"merchant_account": p.merchant_account}
               if p.merchant_account != "default" else {}),
        }

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form (sorted keys, no whitespace)."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ArrivalWindow:
    """When the user should see the money, in calendar dates (Beijing), derived from the
    route's arrival window in Chinese working days (holidays and make-up days).

    Attributes:
        earliest: the first day the money may show (the same day for the balance).
        latest: the day after which "not received" is a problem: reconciliation then
            classes a refund the channel does not list as refunded, not received.
    """

    earliest: date
    latest: date


@dataclass(frozen=True, slots=True)
class Refund:
    """A stored refund, as ``refund()``, ``get()``, ``sync()`` and ``reroute()`` return it.

    Attributes:
        id: the gateway's refund id (``RF`` + Beijing date + 16 hex, 26 of ``[A-Z0-9]``).
        idempotency_key: the key it was requested under.
        route: the route it is sent along (a linked refund's is the reroute target).
        payment: the payment it refunds.
        amount: how much it refunds.
        reason: the reason sent to the channel.
        status: where it stands (``RefundStatus``).
        channel_refund_no: the number the channel knows it by (Alipay
            ``out_request_no``, WeChat ``out_refund_no``, UnionPay ``orderId``, the
            wallet's refund no); derived from ``id`` and never changed, so a resend
            cannot refund twice.
        created_at: when it was stored (UTC).
        updated_at: when it last changed (UTC).
        channel_refund_id: the channel's own id for it, once known (Alipay trade_no of
            the refund, WeChat ``refund_id``, UnionPay ``queryId``).
        succeeded_at: when the channel says the money went back.
        next_check_at: when the resolver asks the channel next (None: nothing to ask).
        check_count: how many checks were made (the backoff schedule's position).
        failure_code: the channel's code for a refusal or an abnormal end (e.g. WeChat
            ``ABNORMAL``, UnionPay ``63``), or the gateway's for an unknown outcome.
        failure_message: the channel's message with ``failure_code``.
        received_account: where the money went, as the channel says, masked (WeChat
            ``user_received_account``); at most the last 4 digits of an account.
        bank_ack: the bank's acknowledgement where the channel gives one (Alipay
            ``deposit_back_info``, UnionPay ``queryId``/trace fields), for receipts.
        expected_arrival: when the user should see the money (``ArrivalWindow``).
        rerouted_from: on a linked refund: the id of the abnormal refund it replaces.
        rerouted_to: on a ``REROUTED`` original: its live (latest) linked refund.
        linked_refunds: on a ``REROUTED`` original: every linked refund, oldest first.
        abnormal_applied_at: when WeChat's abnormal-refund API (CH §5.6) was asked to
            send the money to another account.
        paid_after_release_at: when the channel reported money moved after this
            refund's amount was released (failed, closed, rerouted): paid twice; the
            amount counts against the payment again and finance must recover it.
        version: a counter that grows with every change (optimistic checks).
    """

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
    """One append-only step of a refund's history (the evidence trail), kept for good.

    Attributes:
        refund_id: the refund it belongs to.
        seq: its position in that refund's history (1, 2, ...).
        at: when it happened (UTC).
        kind: what happened (requested, attempt, status_changed, notification,
            rerouted, paid_after_release, ...).
        status_from: the status before, for a status change.
        status_to: the status after, for a status change.
        data: the step's evidence: the channel's answer (redacted), the note of a
            reroute, the notification's event id.
    """

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

    What an adapter returns from ``submit``, ``query`` and ``parse_notification``.

    Attributes:
        status: what the channel says (``ChannelStatus``).
        channel_refund_no: the refund number the answer is about (a notification is
            matched to its refund by it).
        channel_refund_id: the channel's own id for the refund.
        amount: the refund amount the channel states; a notification whose amount
            differs from the stored refund's changes nothing.
        succeeded_at: when the channel says the money went back.
        received_account: where it went, masked (WeChat ``user_received_account``).
        bank_ack: the bank's acknowledgement (Alipay ``deposit_back_info``, ...).
        failure_code: the channel's code for a refusal or abnormal end.
        failure_message: the channel's message with it.
        raw: the answer's fields, redacted (no keys, signatures or full account
            numbers), kept as evidence.
        event_id: identifies a notification the channel may legitimately redeliver
            (WeChat envelope id, Alipay notify_id): applied once, acknowledged again.
        replay_key: a value the channel never repeats for a genuine message (WeChat's
            nonce): seen twice means a replay, refused.
        occurred_at: when the channel says the notified event happened (a stale
            notification, more than 300 s old, is refused).
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
    ``event_id``. ``cursor`` orders events; ``status_from`` is None for a new refund.

    Attributes:
        cursor: the event's position: pass the last one you handled to ``events_since``.
        event_id: the event's unique id; a redelivered event has the same one.
        refund_id: the refund that changed.
        idempotency_key: the key that refund was requested under.
        merchant_order_no: the order of the refunded payment.
        route: the refund's route.
        status_from: the status before (None: the refund was just created).
        status_to: the status after.
        amount: the refund's amount.
        at: when the change was committed (UTC).
    """

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
    """What to answer the channel's HTTP notification with (``handle_notification``).

    Attributes:
        http_status: the HTTP status to answer (200/204 accepted; 4xx refused; 503 when
            the database could not record it, so the channel delivers it again).
        body: the body to answer (Alipay expects ``success``; WeChat a JSON code).
        content_type: the ``Content-Type`` of ``body``.
        refund_id: the refund it was applied to, when it was.
        accepted: whether it was verified and applied (or a harmless redelivery).
        reason: why, in one word: ``applied``, ``duplicate``, ``signature_invalid``,
            ``unknown_route``, ``route_sends_none``, ``replayed``, ``unknown_refund``,
            ``amount_mismatch``, ``account_mismatch``, ``store_unavailable`` (metrics).
    """

    http_status: int
    body: bytes
    content_type: str = "text/plain"
    refund_id: str | None = None
    accepted: bool = True
    reason: str | None = None
