"""Wallet-service answers -> the gateway's vocabulary (pure, total tables).

Owns: the wallet's refund statuses and error codes, and which of them is a refusal.
Must not do I/O. The wire contract is the sandbox's ``sandbox/balance.py`` docstring
(CHANNELS.md has no section on the in-house wallet); an unknown status is PROCESSING.
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
    UNKNOWN = "unknown"      # OutcomeUnknown: query first
    AUTH = "auth"            # ChannelAuthError: our key/signature rejected


# Wallet refund record "status" (sandbox/balance.py: always SUCCESS; credits are instant).
# Compared case-insensitively.
STATUS: Final[Mapping[str, ChannelStatus]] = {
    "success": ChannelStatus.SUCCEEDED,
    "succeeded": ChannelStatus.SUCCEEDED,
    "processing": ChannelStatus.PROCESSING,
    "failed": ChannelStatus.FAILED,
}

# Wallet error codes (sandbox/balance.py "Errors"; 401/429/500 are handled by the client).
# A frozen wallet is a refusal, not ABNORMAL: the balance route is itself the fallback, so
# nothing could reroute it; FAILED releases the amount and names the reason.
ERRORS: Final[Mapping[str, Verdict]] = {
    "ACCOUNT_FROZEN": Verdict.REFUSED,       # 403, nothing credited
    "INVALID_REQUEST": Verdict.REFUSED,      # 400, nothing recorded
    # 409: this refund_no was already credited with another body. The contract calls it a
    # refusal, but a credit exists under our number: failing ours could hide money that
    # moved. Unknown -> the query shows the record (and the service flags the conflict).
    "IDEMPOTENCY_CONFLICT": Verdict.UNKNOWN,
    "SIGN_ERROR": Verdict.AUTH,
    "TIMESTAMP_EXPIRED": Verdict.AUTH,
    "NONCE_REPLAYED": Verdict.AUTH,
}


def status_of(value: object) -> ChannelStatus:
    status = STATUS.get(str(value).lower()) if value is not None else None
    if status is None:
        log.warning("balance.unknown_status", status=str(value))
        return ChannelStatus.PROCESSING
    return status


def error_verdict(code: str | None) -> Verdict:
    """Unknown codes are not refusals: only a code we know refuses may fail a refund."""
    return ERRORS.get(code or "", Verdict.UNKNOWN)


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
