"""Wallet-service answers -> the gateway's vocabulary (pure, total tables).

Owns: the wallet's refund statuses and error codes, and which of them is a refusal.
Must not do I/O. The wire contract is the sandbox's ``sandbox/balance.py`` docstring
(CHANNELS.md has no section on the in-house wallet). A status or (HTTP status, code) not
in a table is PROCESSING / outcome unknown with a warning, never success or failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import structlog

from gateway.clock import from_beijing
from gateway.models import ChannelStatus
from gateway.money import Money

log = structlog.get_logger(__name__)


class Verdict(StrEnum):
    REFUSED = "refused"      # a verified business refusal: FAILED
    NOT_FOUND = "not_found"  # query: the wallet has no such refund
    UNKNOWN = "unknown"      # OutcomeUnknown: query first
    AUTH = "auth"            # ChannelAuthError: our key/signature rejected


# sandbox/balance.py "Refund record": ``status`` is always ``SUCCESS`` (credits are
# instant; "Only 200 means credited"). Nothing else is published, so nothing else is
# final: no "failed" here, a refund record never refuses.
STATUS: Final[Mapping[str, ChannelStatus]] = {
    "SUCCESS": ChannelStatus.SUCCEEDED,
}

# sandbox/balance.py "Errors", one row per (HTTP status, code):
#   400 INVALID_REQUEST, 403 ACCOUNT_FROZEN: refusals, nothing recorded or credited.
#   A frozen wallet is a refusal, not ABNORMAL: the balance route is itself the fallback,
#   so nothing could reroute it; FAILED releases the amount and names the reason.
#   409 IDEMPOTENCY_CONFLICT: this refund_no was already credited with another body. The
#   contract calls it a refusal, but a credit exists under our number: failing ours could
#   hide money that moved. Unknown -> the query shows the record (and the service flags
#   the conflict).
#   401 SIGN_ERROR / TIMESTAMP_EXPIRED / NONCE_REPLAYED: our signature -> AUTH.
#   429 RATE_LIMITED, 500 SYSTEM_ERROR: nothing done, retry later -> unknown.
#   404 NOT_FOUND: on a query, the wallet has no such refund (resent under the same
#   refund_no, which the wallet dedupes); on a submit it is not documented.
ERRORS: Final[Mapping[tuple[int, str], Verdict]] = {
    (400, "INVALID_REQUEST"): Verdict.REFUSED,
    (403, "ACCOUNT_FROZEN"): Verdict.REFUSED,
    (409, "IDEMPOTENCY_CONFLICT"): Verdict.UNKNOWN,
    (401, "SIGN_ERROR"): Verdict.AUTH,
    (401, "TIMESTAMP_EXPIRED"): Verdict.AUTH,
    (401, "NONCE_REPLAYED"): Verdict.AUTH,
    (429, "RATE_LIMITED"): Verdict.UNKNOWN,
    (500, "SYSTEM_ERROR"): Verdict.UNKNOWN,
}
QUERY_ERRORS: Final[Mapping[tuple[int, str], Verdict]] = {
    # A refused query says nothing about the refund: never a refusal of it.
    **{row: (Verdict.UNKNOWN if verdict is Verdict.REFUSED else verdict)
       for row, verdict in ERRORS.items()},
    (404, "NOT_FOUND"): Verdict.NOT_FOUND,
}


def status_of(value: object) -> ChannelStatus:
    status = STATUS.get(value) if isinstance(value, str) else None
    if status is None:
        log.warning("balance.unknown_status", status=str(value)[:32])
        return ChannelStatus.PROCESSING
    return status


def error_verdict(http_status: int, code: str | None, *, query: bool = False) -> Verdict:
    """Only a row of the contract refuses; anything else is unknown, with a warning."""
    verdict = (QUERY_ERRORS if query else ERRORS).get((http_status, code or ""))
    if verdict is None:
        log.warning("balance.unknown_error_code", http_status=http_status,
                    code=(code or "")[:64], query=query)
        return Verdict.UNKNOWN
    return verdict


def amount_of(record: Mapping[str, Any]) -> Money | None:
    value = record.get("amount_fen")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Money(value)
    return None


def time_of(value: object) -> datetime | None:
    """ISO-8601; a naive time is Beijing wall-clock (how channels write it)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return from_beijing(moment) if moment.tzinfo is None else moment


def redact(record: Mapping[str, Any]) -> dict[str, Any]:
    """Wallet answers hold no card numbers; drop anything that looks like a credential."""
    return {k: record[k] for k in sorted(record)
            if k.lower() not in {"signature", "hmac", "key", "token"}}
