"""The exception tree a caller can act on.

Each class says, as class attributes, whether the operation may be tried again
(``retryable``) and whether a *resend of the same refund* is safe without asking the
channel first (``resubmit_safe``). The retry policy (``gateway.retry``) reads only these
attributes; it never matches on class names or messages.

    GatewayError
    ├── ConfigurationError        bad settings or keys
    ├── InvalidRequest            caught before any I/O (amount <= 0, currency, route mismatch)
    ├── OverRefund                would exceed what is left to refund
    ├── IdempotencyConflict       same key, different request (names the fields that differ)
    ├── RefundNotFound            no refund with that id
    ├── ChannelError              raised by adapters only; channel, operation, http status, code
    │   ├── ChannelUnavailable    provably not processed (connect refused/timeout): retry
    │   ├── OutcomeUnknown        sent, answer not established (read timeout, 5xx, 429): query
    │   ├── ChannelAuthError      our credentials or signature rejected: never retried
    │   └── SignatureInvalid      a response or notification failed verification
    └── StatementError            a statement file is unreadable; file, line number, reason

Messages never carry secrets: adapters pass channel codes and request ids, not payloads.
"""

from __future__ import annotations

from collections.abc import Sequence


class GatewayError(Exception):
    """Base of every error this project raises on purpose."""

    retryable: bool = False
    resubmit_safe: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(GatewayError):
    """Settings or keys are missing or malformed; names the setting, never its value."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InvalidRequest(GatewayError, ValueError):
    """The request is wrong in itself; detected before any I/O. Never retry as is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OverRefund(GatewayError):
    """The refund would take the payment's refunds past what was paid."""

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
    """The idempotency key was used before for a different request."""

    def __init__(self, message: str, *, key: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.key = key
        self.fields = tuple(fields)


class RefundNotFound(GatewayError, LookupError):
    """No stored refund has that id (or channel refund number)."""


class ChannelError(GatewayError):
    """A channel call did not give a verified business answer. Raised by adapters only."""

    def __init__(self, message: str, *, channel: str, operation: str,
                 http_status: int | None = None, code: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel
        self.operation = operation
        self.http_status = http_status
        self.code = code
        self.request_id = request_id

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
    """Provably not processed: the connection was never made. Safe to send again."""

    retryable = True
    resubmit_safe = True


class OutcomeUnknown(ChannelError):
    """Sent, but the answer was not established (read timeout, 5xx, 429, unparseable).

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
    """A statement file or line cannot be read. Carries file and 1-based line number."""

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None) -> None:
        where = f"{file or '<statement>'}" + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.reason = message
        self.file = file
        self.line = line


class CalendarRangeError(GatewayError):
    """A date lies outside the years the holiday data covers; we do not guess."""
