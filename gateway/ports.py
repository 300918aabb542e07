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
    route would refuse is refused with ``InvalidRequest`` and nothing stored."""

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
    """Where the channel's own abnormal-refund API sends the money (CH §5.6)."""

    USER_BANK_CARD = "USER_BANK_CARD"
    MERCHANT_BANK_CARD = "MERCHANT_BANK_CARD"


@dataclass(frozen=True, slots=True)
class AbnormalRefundInstruction:
    """For USER_BANK_CARD: the card the user supplied (held only for the call, never stored)."""

    target: AbnormalTarget
    bank_type: str | None = None
    bank_account: str | None = None
    real_name: str | None = None

    def __repr__(self) -> str:  # never print the account or name
        return f"AbnormalRefundInstruction(target={self.target.value})"


class ChannelAdapter(abc.ABC):
    """One route's channel. Every method either returns a verified ``ChannelResult`` or
    raises a ``ChannelError`` subclass; a business refusal is a result, not an error."""

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
