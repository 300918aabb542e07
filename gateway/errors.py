"""The exception tree a caller can act on.

Each class says, as class attributes, whether the operation may be tried again
(``retryable``) and whether a *resend of the same refund* is safe without asking the
channel first (``resubmit_safe``). The retry policy (``gateway.retry``) reads only these
attributes; it never matches on class names or messages.

    GatewayError
    ├── ConfigurationError        bad settings or keys
    ├── InvalidRequest            caught before any write or I/O: amount, currency, the
    │   │                         route's rules (the adapter's ``validate``); nothing stored
    │   └── RerouteRefused        the original route does not confirm the refund as
    │                             abnormal or failed: it may still pay; nothing changed
    ├── StoreUnavailable          the database failed before the channel was called:
    │                             nothing was sent; retry the same request
    ├── OverRefund                would exceed what is left to refund
    ├── IdempotencyConflict       same key, different request (names the fields that differ)
    ├── RefundNotFound            no refund with that id
    ├── ChannelError              raised by adapters only; channel, operation, http status, code
    │   ├── ChannelUnavailable    provably not processed (connect refused/timeout): retry
    │   ├── OutcomeUnknown        sent, answer not established (read timeout, 5xx, 429), or
    │   │                         the database failed after the call: carries ``refund_id``;
    │   │                         never refund again, the resolver finds out
    │   ├── ChannelAuthError      our credentials or signature rejected: never retried
    │   └── SignatureInvalid      a response or notification failed verification
    ├── StatementError            a statement file is unreadable; file, line number, reason
    └── CalendarRangeError        a date outside the working-day data

No database driver's or SQLAlchemy's exception leaves the public API: the store raises
``StoreUnavailable``, and the service turns one that happens after a channel call into
``OutcomeUnknown`` (the CLI exits 3 for it, never 1).

Messages never carry secrets: adapters pass channel codes and request ids, not payloads.
"""

from __future__ import annotations

from collections.abc import Sequence


class GatewayError(Exception):
    """Base of every error this project raises on purpose: catch it to handle them all;
    ``retryable`` and ``resubmit_safe`` say what may be done next.

    Attributes:
        retryable: trying the same operation again may succeed.
        resubmit_safe: sending the same refund to the channel again without asking it
            first is safe (nothing was sent, or the channel dedupes and said nothing).
        message: the one-line explanation (never a secret).
    """

    retryable: bool = False
    resubmit_safe: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(GatewayError):
    """Settings or keys are missing or malformed: fix the setting it names and start
    again (retrying does not help). Never carries a setting's value. The CLI exits 2.

    Attributes:
        setting: the ``REFUND_GATEWAY_...`` variable at fault, when there is one.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InvalidRequest(GatewayError, ValueError):
    """The request is wrong in itself, or breaks a rule of its route (currency, reason
    length as the channel counts it, number formats, refund window, the balance's
    ``user_id``): detected before any I/O, nothing stored. Fix ``field``; never retry
    as is.

    Attributes:
        field: the request field at fault (``amount``, ``payment.user_id``, ...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RerouteRefused(InvalidRequest):
    """``reroute()`` asked the original route first and it does not confirm the refund as
    abnormal or finally unsuccessful: money may still arrive there, so nothing changed.
    Wait for the refund to end (the resolver keeps asking) and try again.

    Attributes:
        refund_id: the refund that was not rerouted.
        channel_status: what the channel said (None if it could not be asked).
    """

    def __init__(self, message: str, *, refund_id: str, channel_status: str | None) -> None:
        super().__init__(message, field="refund_id")
        self.refund_id = refund_id
        self.channel_status = channel_status


class StoreUnavailable(GatewayError):
    """The database failed (down, full, locked past the wait, read-only) before any
    channel call: nothing was sent, so the same request can simply be retried.

    Attributes:
        operation: what the store was doing (``reserve``, ``get``, ...).
        refund_id: the refund concerned, when there is one.
    """

    retryable = True
    resubmit_safe = True

    def __init__(self, message: str, *, operation: str, refund_id: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.refund_id = refund_id


class OverRefund(GatewayError):
    """The refund would take the payment's refunds past what was paid: nothing stored.
    Refund at most ``remaining_minor``.

    Attributes:
        paid_minor: what the payment was, in minor units.
        refunded_minor: what its refunds that still count already take.
        requested_minor: what this request asked for.
        currency: the currency of these amounts.
        remaining_minor: what is left to refund (``paid_minor - refunded_minor``).
    """

    def __init__(self, message: str, *, paid_minor: int, refunded_minor: int,
                 requested_minor: int, currency: str) -> None:
        super().__init__(message)
        self.paid_minor = paid_minor
        self.refunded_minor = refunded_minor
        self.requested_minor = requested_minor
        self.currency = currency

    @property
    def remaining_minor(self) -> int:
        return self.paid_minor - self.refunded_minor


class IdempotencyConflict(GatewayError):
    """The idempotency key was used before for a different request: nothing sent.
    Send the original request again to get its refund, or use a new key for a new
    refund.

    Attributes:
        key: the idempotency key.
        fields: the request fields that differ from the stored request's.
    """

    def __init__(self, message: str, *, key: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.key = key
        self.fields = tuple(fields)


class RefundNotFound(GatewayError, LookupError):
    """No stored refund has that id (or channel refund number): check the id (and that
    the gateway uses the database the refund was made in)."""


class ChannelError(GatewayError):
    """A channel call did not give a verified business answer. Raised by adapters
    only; ``refund()`` records them and returns the refund (PENDING or PROCESSING, for
    the resolver to follow), so a caller mostly meets ``OutcomeUnknown``.

    Attributes:
        channel: the route (or ``store`` for a database failure after the call).
        operation: the call: ``submit``, ``query``, ``notify``, ``statement``, ...
        http_status: the channel's HTTP status, when it answered.
        code: the channel's (or the gateway's) error code, e.g. ``DEADLINE_EXCEEDED``.
        request_id: the channel's request id, for its support.
        refund_id: the stored refund concerned, once there is one.
    """

    def __init__(self, message: str, *, channel: str, operation: str,
                 http_status: int | None = None, code: str | None = None,
                 request_id: str | None = None, refund_id: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel
        self.operation = operation
        self.http_status = http_status
        self.code = code
        self.request_id = request_id
        self.refund_id = refund_id   # set by the service once the refund is stored

    def describe(self) -> dict[str, object]:
        """Fields safe for logs and stored attempts (no payloads, no secrets)."""
        return {
            "error": type(self).__name__,
            "channel": self.channel,
            "operation": self.operation,
            "http_status": self.http_status,
            "code": self.code,
            "request_id": self.request_id,
            "message": self.message,
        }


class ChannelUnavailable(ChannelError):
    """Provably not processed: the connection was never made. Safe to send again; the
    gateway does so itself, and the resolver resends a refund left PENDING."""

    retryable = True
    resubmit_safe = True


class OutcomeUnknown(ChannelError):
    """Sent, but the answer was not established (read timeout, 5xx, 429, unparseable),
    or the channel answered and the database failed to record it (``channel`` is then
    ``store``). ``refund_id`` names the stored refund to ask about.

    Invariant 4 of DESIGN.md: this is never a failure. Query first; resend only with the
    same channel refund number.
    """

    retryable = True
    resubmit_safe = False


class ChannelAuthError(ChannelError):
    """The channel rejected our credentials or request signature. Fix config; no retry."""


class SignatureInvalid(ChannelError):
    """A response or notification failed verification: treated as not received."""


class StatementError(GatewayError):
    """A statement file or line cannot be read: download it again, or check it is the
    statement the message names (reconciliation exits 2).

    Attributes:
        reason: what is wrong, without the location.
        file: the file, when known.
        line: the 1-based line number, when known.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None) -> None:
        where = f"{file or '<statement>'}" + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.file = file
        self.line = line


class CalendarRangeError(GatewayError):
    """A date lies outside the years the holiday data covers; we do not guess. Update
    ``chinese-calendar``; meanwhile a refund gets no expected arrival (a warning is
    logged), nothing else changes."""
