"""UnionPay answer codes -> the gateway's vocabulary (pure, total tables; CH §6).

Owns: what each ``respCode`` / ``origRespCode`` means for a refund, and the redaction of
answers kept as evidence. Must not do I/O or read settings. An unknown code never becomes
success: on the synchronous refund answer it is a refusal only because CH §6 says
"others failed", with the exceptions listed in ``SUBMIT_NOT_A_REFUSAL``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import structlog

from gateway.masking import mask_account, mask_opaque
from gateway.models import ChannelStatus
from gateway.money import Money

log = structlog.get_logger(__name__)


class Verdict(StrEnum):
    """What the adapter does with an answer code."""

    ACCEPTED = "accepted"        # a verified business state: see ``status``
    UNKNOWN = "unknown"          # OutcomeUnknown: query first
    UNAVAILABLE = "unavailable"  # ChannelUnavailable: provably not processed
    AUTH = "auth"                # ChannelAuthError: our signature/credentials rejected


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    status: ChannelStatus | None = None


# CH §6 "Sync respCode": 00 accepted (final result by back notification or query);
# 03/04/05 timeout / state unknown / accepted-pending -> query; others failed.
SUBMIT_UNKNOWN: Final = frozenset({"03", "04", "05"})
# Codes CH §6 lumps under "others failed" that are not a refusal of *this* refund, so
# failing it would break DESIGN invariant 4 (unknown is never failure). UnionPay's
# respCode list (acp 5.1.0 appendix): 06 system busy, 11 signature verification failed,
# 12 duplicate transaction (this orderId was already sent: its fate is the first one's),
# 37 too many requests.
SUBMIT_NOT_A_REFUSAL: Final[Mapping[str, Verdict]] = {
    "06": Verdict.UNAVAILABLE,
    "11": Verdict.AUTH,
    "12": Verdict.UNKNOWN,
    "37": Verdict.UNKNOWN,
}


def submit_outcome(resp_code: str) -> Outcome:
    """A verified synchronous refund (txnType=04) answer."""
    if resp_code == "00":
        return Outcome(Verdict.ACCEPTED, ChannelStatus.PROCESSING)
    if resp_code in SUBMIT_UNKNOWN:
        return Outcome(Verdict.UNKNOWN)
    if resp_code in SUBMIT_NOT_A_REFUSAL:
        return Outcome(SUBMIT_NOT_A_REFUSAL[resp_code])
    return Outcome(Verdict.ACCEPTED, ChannelStatus.FAILED)


# CH §6 Query: respCode is the query's own result; 34 = no such transaction (acp 5.1.0
# appendix "查无此交易"); 03/04/05 = the query itself timed out -> ask again.
# origRespCode is the refund's: 00 success, 03/04/05 still processing, else failed. A query
# hit proves UnionPay accepted the refund, so a failure there is a failure after
# acceptance (card closed...): ABNORMAL, to be rerouted (DESIGN "States").
ORIG_PROCESSING: Final = frozenset({"03", "04", "05"})


def query_outcome(resp_code: str, orig_resp_code: str | None) -> Outcome:
    """A verified query (txnType=00) answer about one refund."""
    if resp_code == "34":
        return Outcome(Verdict.ACCEPTED, ChannelStatus.NOT_FOUND)
    if resp_code == "11":
        return Outcome(Verdict.AUTH)
    if resp_code != "00":
        # 03/04/05 per CH §6; anything else (busy, too frequent, format) tells us nothing
        # about the refund either, and a query must never fail a refund.
        return Outcome(Verdict.UNKNOWN)
    if orig_resp_code == "00":
        return Outcome(Verdict.ACCEPTED, ChannelStatus.SUCCEEDED)
    if not orig_resp_code:
        log.warning("bankcard.query_without_origRespCode")
        return Outcome(Verdict.ACCEPTED, ChannelStatus.PROCESSING)
    if orig_resp_code in ORIG_PROCESSING:
        return Outcome(Verdict.ACCEPTED, ChannelStatus.PROCESSING)
    return Outcome(Verdict.ACCEPTED, ChannelStatus.ABNORMAL)


# CH §6: the back notification carries the refund's final respCode: 00 success; any other
# value is a failure after acceptance (the refund was accepted, or there'd be no notice).
def notification_status(resp_code: str) -> ChannelStatus:
    if resp_code == "00":
        return ChannelStatus.SUCCEEDED
    if resp_code in ORIG_PROCESSING:
        # Not documented for back notifications; never treat "pending" as final.
        log.warning("bankcard.notification_pending_code", resp_code=resp_code)
        return ChannelStatus.PROCESSING
    return ChannelStatus.ABNORMAL


# -- evidence ------------------------------------------------------------------------------
# Dropped from stored answers: signatures and certificates (bulk, and not evidence we
# need); card numbers masked by the one rule (gateway.masking); customerInfo (the
# cardholder's details, Base64, CH §6) holds nothing for a person: its last 4 only.
_DROP: Final = frozenset({"signature", "signPubKeyCert"})
_MASK: Final = frozenset({"accNo", "payCardNo"})
_OPAQUE: Final = frozenset({"customerInfo"})


def redact(fields: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(fields):
        if key in _DROP:
            continue
        value = fields[key]
        out[key] = mask_account(value) if key in _MASK else \
            mask_opaque(value) if key in _OPAQUE else value
    return out


def bank_ack(fields: Mapping[str, str]) -> dict[str, str]:
    """UnionPay's references for a receipt: queryId, plus settleDate/traceNo if given."""
    return {k: fields[k] for k in ("queryId", "settleDate", "traceNo", "traceTime")
            if fields.get(k)}


_FEN = re.compile(r"[0-9]{1,15}")


def fen(text: str | None) -> Money | None:
    """``txnAmt`` (integer fen, CH §6) as Money; None when absent or not a plain number."""
    if text is None or not _FEN.fullmatch(text):
        return None
    return Money(int(text))

