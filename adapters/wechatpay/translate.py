"""WeChat Pay v3 answers -> the gateway's vocabulary (pure, total tables; CH §5).

Owns: refund ``status`` / notification ``refund_status`` -> ``ChannelStatus``; the HTTP
status + ``code`` table of CH §5.3 per operation -> a ``Verdict``; RFC3339 times; the
receiving account masked (by ``gateway.masking``); the redaction of answers kept as
evidence. Must not do I/O, read settings or raise channel errors (the adapter turns a
verdict into an error). Anything not in a table is "unknown": PROCESSING for a status,
OutcomeUnknown for an error code, never success or failure (DESIGN invariant 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import structlog

from gateway.errors import InvalidRequest
from gateway.masking import mask_account
from gateway.models import ChannelStatus
from gateway.money import Money

log = structlog.get_logger(__name__)


# CH §5.1 "Enums" (wechatpay-go refunddomestic/Status.md) and CH §5.5 (`refund_status` of
# REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED notifications).
STATUS: Final[Mapping[str, ChannelStatus]] = {
    "SUCCESS": ChannelStatus.SUCCEEDED,
    "PROCESSING": ChannelStatus.PROCESSING,
    "ABNORMAL": ChannelStatus.ABNORMAL,   # card cancelled/frozen: reroute (CH §5.6)
    "CLOSED": ChannelStatus.CLOSED,
}

# CH §5.5: the event types of refund notifications and the status each announces.
EVENT_STATUS: Final[Mapping[str, ChannelStatus]] = {
    "REFUND.SUCCESS": ChannelStatus.SUCCEEDED,
    "REFUND.ABNORMAL": ChannelStatus.ABNORMAL,
    "REFUND.CLOSED": ChannelStatus.CLOSED,
}


def refund_status(value: object, *, source: str = "status") -> ChannelStatus:
    """A refund status; an unknown or missing one is PROCESSING with a warning."""
    status = STATUS.get(value) if isinstance(value, str) else None
    if status is None:
        log.warning("wechatpay.unknown_status", field=source, value=str(value)[:32])
        return ChannelStatus.PROCESSING
    return status


class Verdict(StrEnum):
    """What an HTTP status + code means for the operation that got it."""

    REFUSED = "refused"          # a verified, explicit refusal: ChannelResult(FAILED)
    NOT_FOUND = "not_found"      # query: the channel has no such refund
    UNKNOWN = "unknown"          # OutcomeUnknown: query first, resend only with same no
    AUTH = "auth"                # ChannelAuthError: our credentials/permissions
    NO_STATEMENT = "no_statement"  # statement: there is no bill for that day
    BAD_REQUEST = "bad_request"  # statement: our request is wrong (date too old, ...)


class Operation(StrEnum):
    SUBMIT = "submit"
    QUERY = "query"
    ABNORMAL_REFUND = "abnormal_refund"
    STATEMENT = "statement"


# CH §5.3 "Refund codes" (egzosn WxRefundResult javadoc, a copy of the official table),
# one row per (HTTP status, code), for POST /v3/refund/domestic/refunds.
#   500 SYSTEM_ERROR, 429 FREQUENCY_LIMITED, 502/503 SERVICE_UNAVAILABLE: retry / unknown
#   (query first: a timed-out SYSTEM_ERROR may have been executed; 429 is "not accepted,
#   back off, resend the same out_refund_no", CHANNELS-ADDENDUM §9).
#   401 SIGN_ERROR, 404 MCH_NOT_EXISTS, 403 NO_AUTH: our configuration -> auth error.
#   403 NOT_ENOUGH, 403 USER_ACCOUNT_ABNORMAL, 400 PARAM_ERROR, 400 INVALID_REQUEST,
#   404 RESOURCE_NOT_EXISTS: explicit refusals of this refund -> FAILED (nothing moved;
#   NOT_ENOUGH may be resubmitted later under the same out_refund_no, CH §5.3).
SUBMIT_CODES: Final[Mapping[tuple[int, str], Verdict]] = {
    (500, "SYSTEM_ERROR"): Verdict.UNKNOWN,
    (429, "FREQUENCY_LIMITED"): Verdict.UNKNOWN,
    (502, "SERVICE_UNAVAILABLE"): Verdict.UNKNOWN,
    (503, "SERVICE_UNAVAILABLE"): Verdict.UNKNOWN,
    (401, "SIGN_ERROR"): Verdict.AUTH,
    (404, "MCH_NOT_EXISTS"): Verdict.AUTH,
    (403, "NO_AUTH"): Verdict.AUTH,
    (403, "NOT_ENOUGH"): Verdict.REFUSED,
    (403, "USER_ACCOUNT_ABNORMAL"): Verdict.REFUSED,
    (400, "PARAM_ERROR"): Verdict.REFUSED,
    (400, "INVALID_REQUEST"): Verdict.REFUSED,
    (404, "RESOURCE_NOT_EXISTS"): Verdict.REFUSED,
}

# CH §5.2 + §5.3 for GET /v3/refund/domestic/refunds/{out_refund_no}: not found is
# NOT_FOUND (never FAILED: the service resends under the same number). A query that is
# refused says nothing about the refund, so the refusal rows of the submit table are
# UNKNOWN here (keep asking); the configuration rows stay AUTH.
QUERY_CODES: Final[Mapping[tuple[int, str], Verdict]] = {
    **{row: (Verdict.UNKNOWN if verdict is Verdict.REFUSED else verdict)
       for row, verdict in SUBMIT_CODES.items()},
    (404, "RESOURCE_NOT_EXISTS"): Verdict.NOT_FOUND,
}

# CH §5.6 apply-abnormal-refund uses the refund error table of §5.3. A refusal there
# refuses the *application*, not the refund: the adapter answers ABNORMAL with the code
# (the refund still waits for a person), never FAILED. Not found is a refusal too.
ABNORMAL_CODES: Final[Mapping[tuple[int, str], Verdict]] = dict(SUBMIT_CODES)

# CH §5.7 bill errors: 400 NO_STATEMENT_EXIST, 400 STATEMENT_CREATING (retry later, after
# ~08:00 / ~10:00 Beijing: UNKNOWN so callers try again), 400 INVALID_REQUEST (e.g. older
# than 3 months), 403 NO_AUTH, 500 SYSTEM_ERROR.
STATEMENT_CODES: Final[Mapping[tuple[int, str], Verdict]] = {
    (400, "NO_STATEMENT_EXIST"): Verdict.NO_STATEMENT,
    (400, "STATEMENT_CREATING"): Verdict.UNKNOWN,
    (400, "INVALID_REQUEST"): Verdict.BAD_REQUEST,
    (400, "PARAM_ERROR"): Verdict.BAD_REQUEST,
    (403, "NO_AUTH"): Verdict.AUTH,
    (401, "SIGN_ERROR"): Verdict.AUTH,
    (404, "MCH_NOT_EXISTS"): Verdict.AUTH,
    (500, "SYSTEM_ERROR"): Verdict.UNKNOWN,
    (429, "FREQUENCY_LIMITED"): Verdict.UNKNOWN,
    (502, "SERVICE_UNAVAILABLE"): Verdict.UNKNOWN,
    (503, "SERVICE_UNAVAILABLE"): Verdict.UNKNOWN,
}

_TABLES: Final[Mapping[Operation, Mapping[tuple[int, str], Verdict]]] = {
    Operation.SUBMIT: SUBMIT_CODES,
    Operation.QUERY: QUERY_CODES,
    Operation.ABNORMAL_REFUND: ABNORMAL_CODES,
    Operation.STATEMENT: STATEMENT_CODES,
}


def error_verdict(operation: Operation, http_status: int, code: str | None) -> Verdict:
    """The verdict for a non-2xx answer. Total: rows first, then by HTTP class.

    A 401 is always our signature (CH §5.4: "401 if invalid"); 429 and 5xx are always
    unknown whatever the body says (a proxy's HTML 502 has no code); any other unlisted
    combination is unknown, never a refusal. Every unlisted row is logged as a warning.
    """
    verdict = _TABLES[operation].get((http_status, code or ""))
    if verdict is not None:
        return verdict
    log.warning("wechatpay.unknown_error_code", operation=operation.value,
                http_status=http_status, code=(code or "")[:64])
    if http_status == 401:
        return Verdict.AUTH
    return Verdict.UNKNOWN


def parse_time(value: object) -> datetime | None:
    """RFC3339 with offset (``2020-12-01T16:18:12+08:00``) -> aware UTC; else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        log.warning("wechatpay.bad_time", value=value[:40])
        return None
    if moment.tzinfo is None:   # CH §5: times carry +08:00; a naive one is not trusted
        log.warning("wechatpay.naive_time", value=value[:40])
        return None
    return moment.astimezone(UTC)


def fen(amount: object, key: str = "refund") -> Money | None:
    """``amount.<key>`` in fen as Money (CNY); None when absent or not an integer."""
    if not isinstance(amount, Mapping):
        return None
    value = amount.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    currency = amount.get("currency") or "CNY"
    try:
        return Money(value, str(currency))
    except InvalidRequest:   # a currency we do not know, a negative amount
        log.warning("wechatpay.bad_amount", key=key, currency=str(currency)[:8])
        return None


# Fields never kept, whatever the channel sends back (CH §5.6 encrypted request fields,
# in case an emulator or a future API echoes them).
_DROP: Final = frozenset({"bank_account", "real_name", "ciphertext", "signature",
                          "authorization", "apiv3_key", "private_key"})


def redact(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The answer as evidence: the receiving account masked, secret-looking fields dropped."""
    out: dict[str, Any] = {}
    for key, value in answer.items():
        if key.lower() in _DROP:
            continue
        if key == "user_received_account" and isinstance(value, str):
            out[key] = mask_account(value)
        elif isinstance(value, Mapping):
            out[key] = redact(value)
        elif isinstance(value, list):
            out[key] = [redact(v) if isinstance(v, Mapping) else v for v in value]
        else:
            out[key] = value
    return out


def bank_ack(answer: Mapping[str, Any]) -> dict[str, str]:
    """Where the money went, as WeChat states it (CH §5.1): channel, funds account,
    receiving account (masked), success time. Only string values, only those present."""
    ack: dict[str, str] = {}
    for key in ("channel", "funds_account", "user_received_account", "success_time",
                "refund_id"):
        value = answer.get(key)
        if isinstance(value, str) and value:
            ack[key] = mask_account(value) if key == "user_received_account" else value
    return ack
