"""The channel port: what the core needs from a route, and what a route declares it can do.

Adapters implement ``ChannelAdapter``; they translate, verify and do one HTTP exchange per
call. They never touch the store, never retry and never sleep: the service does, driven by
``Capabilities`` and by the ``retryable``/``resubmit_safe`` attributes of the errors they
raise. Optional operations are separate abstract ports (``AbnormalRefundPort``) declared
through ``Capabilities``; a test checks the two agree, so nothing raises
NotImplementedError at run time.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Final, Literal

from gateway.models import ChannelResult, NotificationAck, Refund, RefundRequest, Route

# DESIGN.md "States": first query <= 60 s after an unknown outcome, then 5, 10, 20, 30 min,
# then hourly (a day of them) and then daily. Never a reason to give up.
DEFAULT_QUERY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=30), timedelta(minutes=5), timedelta(minutes=10),
    timedelta(minutes=20), timedelta(minutes=30), *([timedelta(hours=1)] * 24),
    timedelta(days=1),
)


# The gateway's refund ids (service.new_refund_id) are 26 of [A-Z0-9]: valid everywhere.
DEFAULT_REFUND_NO: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a route can do and the rules it enforces, declared once on its adapter.

    The service reads the behaviour fields; ``gateway.rules.check`` (the adapter's
    ``validate``) reads the rule fields before anything is written, so a request the
    route would refuse is refused with ``InvalidRequest`` and nothing stored.

    Attributes:
        idempotent_submit: the same channel refund number is refunded at most once, so
            a resend under it is safe (every route here: out_request_no, out_refund_no,
            orderId, refund no).
        refund_query: the channel can be asked what became of a refund.
        notifications: the channel notifies refund outcomes (the wallet does not).
        statements: the channel has a statement for reconciliation.
        partial_refunds: a payment may be refunded in parts.
        max_refunds: most refunds per payment (WeChat: 50, CH §5.1); None: no limit.
        refund_window: how long after payment a refund is accepted (WeChat 1 year,
            UnionPay 11 months), checked when ``Payment.paid_at`` is given.
        arrival_working_days: (earliest, latest) working days until the user sees the
            money (``Refund.expected_arrival``; reconciliation's "in transit").
        abnormal_refund_api: the channel resolves ABNORMAL refunds itself (WeChat
            ``apply-abnormal-refund``, CH §5.6): ``reroute(instruction=...)``.
        query_schedule: the delays between checks of an unknown outcome.
        currencies: the currencies the route carries (CNY).
        refund_no: the form of the channel refund number (UnionPay: 8-32
            alphanumerics; the gateway's ids fit every route).
        reason_max: the longest refund reason, in ``reason_unit``.
        reason_unit: how the channel counts the reason: ``chars``, or ``utf8_bytes``
            (WeChat: 80 bytes, CHANNELS-ADDENDUM §9).
        order_no: the form of ``Payment.merchant_order_no`` when the route sends it.
        trade_no: the form of ``Payment.channel_trade_no``.
        user_id: when set, ``Payment.user_id`` is required and of this form (balance).
        takes_reroutes: a refund of another route's payment may be sent here (the
            balance takes reroutes).
    """

    idempotent_submit: bool          # same channel refund number => refunded at most once
    refund_query: bool
    notifications: bool
    statements: bool
    partial_refunds: bool
    max_refunds: int | None          # per payment (WeChat: 50); checked under the lock
    refund_window: timedelta | None  # how long after payment a refund is accepted
    arrival_working_days: tuple[int, int]  # (earliest, latest) working days to the user
    abnormal_refund_api: bool = False      # channel resolves ABNORMAL itself (WeChat §5.6)
    query_schedule: tuple[timedelta, ...] = DEFAULT_QUERY_SCHEDULE
    # -- rules read by gateway.rules.check ---------------------------------------------
    currencies: frozenset[str] = frozenset({"CNY"})   # what the route carries
    refund_no: re.Pattern[str] = DEFAULT_REFUND_NO    # the channel refund number
    reason_max: int = 256
    reason_unit: Literal["chars", "utf8_bytes"] = "chars"   # how the channel counts it
    order_no: re.Pattern[str] | None = None   # merchant order number, when it is sent
    trade_no: re.Pattern[str] | None = None   # the channel's trade number
    user_id: re.Pattern[str] | None = None    # required, of this form, when set
    # Whether a refund of another route's payment can be sent here (a reroute target).
    takes_reroutes: bool = False


class AbnormalTarget(StrEnum):
    """Where the channel's own abnormal-refund API sends the money (CH §5.6).

    Attributes:
        USER_BANK_CARD: to a bank card the user supplies (``bank_type``,
            ``bank_account`` and ``real_name`` of the instruction required).
        MERCHANT_BANK_CARD: to the merchant's settlement account; the platform then
            pays the user by other means. Needs nothing else.
    """

    USER_BANK_CARD = "USER_BANK_CARD"
    MERCHANT_BANK_CARD = "MERCHANT_BANK_CARD"


@dataclass(frozen=True, slots=True)
class AbnormalRefundInstruction:
    """How WeChat's abnormal-refund API should resend an ABNORMAL refund (CH §5.6).

    Given to ``RefundGateway.reroute(refund_id, instruction=...)`` for a WeChat refund
    the channel confirms as ABNORMAL; the same refund goes on, PROCESSING. The card
    details are held only for the call (encrypted with WeChat's platform key on the
    wire), never stored or logged; ``repr`` shows the target only.

    Attributes:
        target: where the money goes (``AbnormalTarget``).
        bank_type: for ``USER_BANK_CARD``: WeChat's bank code of the card, e.g.
            ``ICBC_DEBIT``, ``CMB_DEBIT`` (CH §5.6 lists them).
        bank_account: for ``USER_BANK_CARD``: the card number, 8-32 digits.
        real_name: for ``USER_BANK_CARD``: the card holder's name, as the bank has it.
    """

    target: AbnormalTarget
    bank_type: str | None = None
    bank_account: str | None = None
    real_name: str | None = None

    def __repr__(self) -> str:  # never print the account or name
        return f"AbnormalRefundInstruction(target={self.target.value})"


class ChannelAdapter(abc.ABC):
    """One route's channel. Every method either returns a verified ``ChannelResult`` or
    raises a ``ChannelError`` subclass; a business refusal is a result, not an error.

    Registered under the entry-point group ``refund_gateway.adapters`` (route value ->
    ``build(settings, clock)``).

    Attributes:
        route: the route it serves.
        capabilities: what the route can do and the rules it enforces.
    """

    route: ClassVar[Route]
    capabilities: ClassVar[Capabilities]

    @abc.abstractmethod
    def submit(self, refund: Refund) -> ChannelResult:
        """Ask the channel to refund, under ``refund.channel_refund_no``."""

    @abc.abstractmethod
    def query(self, refund: Refund) -> ChannelResult:
        """Ask the channel what became of ``refund.channel_refund_no``."""

    @abc.abstractmethod
    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelResult:
        """Verify and decode a notification; ``SignatureInvalid`` if it is not genuine."""

    @abc.abstractmethod
    def download_statement(self, day: date) -> bytes:
        """The channel's statement for ``day`` in its own format (what the parsers read)."""

    def validate(self, request: RefundRequest, *, channel_refund_no: str, now: datetime,
                 rerouted_from: Route | None = None) -> None:
        """Refuse, before anything is written, what this route would refuse: the rules
        declared in ``capabilities`` (``gateway.rules.check``). Pure: no I/O. An adapter
        with a rule that cannot be declared extends this and calls ``super()``."""
        from gateway.rules import check  # noqa: PLC0415 - rules reads Capabilities

        check(self.route, self.capabilities, request, channel_refund_no=channel_refund_no,
              now=now, rerouted_from=rerouted_from)

    def notification_ack(self, accepted: bool) -> NotificationAck:
        """The HTTP answer the channel expects; channels differ (Alipay wants ``success``)."""
        if accepted:
            return NotificationAck(200, b'{"code":"SUCCESS"}', "application/json")
        return NotificationAck(400, b'{"code":"FAIL","message":"rejected"}',
                               "application/json", accepted=False)

    def close(self) -> None:  # noqa: B027 - optional hook with a sensible no-op default
        """Release pooled connections; the default has none."""


class AbnormalRefundPort(abc.ABC):
    """Implemented by adapters whose channel resolves ABNORMAL refunds itself."""

    @abc.abstractmethod
    def validate_instruction(self, refund: Refund,
                             instruction: AbnormalRefundInstruction) -> None:
        """Refuse a bad instruction (``InvalidRequest``) before any state changes. Pure."""

    @abc.abstractmethod
    def apply_abnormal_refund(self, refund: Refund,
                              instruction: AbnormalRefundInstruction) -> ChannelResult:
        """Re-send an ABNORMAL refund to another account through the channel."""
