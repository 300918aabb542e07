"""UnionPay answer codes -> the gateway's vocabulary (pure, total tables; CH §6, addendum §2).

Owns: what each ``respCode`` / ``origRespCode`` means for a refund, and the redaction of
answers kept as evidence. Must not do I/O or read settings. A code that no table below
lists is never success, failure or ABNORMAL: it is "outcome unknown" (query first) on
an answer and PROCESSING on a state, with a warning (issue 15 item 6; DESIGN invariant 4).
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


# -- the published codes, by class ----------------------------------------------------------
# CHANNELS-ADDENDUM §2 "UnionPay response codes for refunds" (public copies of the ACP
# 应答码 table; handling per PaySharp Form_6_4_Refund / Form_6_5_Query / BackRcvResponse).
# A6 有缺陷的成功 is "交易成功，请向资金到账行确认" (addendum §2): final success, the money
# moved; the bank leg is for reconciliation to confirm, so it is logged as a warning.
WITH_DEFECTS: Final = "A6"
SUCCESS: Final = frozenset({"00", WITH_DEFECTS})
PENDING: Final = frozenset({"03", "04", "05"})    # 交易通讯超时 / 交易状态未明 / 交易已受理
NOT_ACCEPTED: Final = frozenset({"02", "06", "37"})  # 系统未开放 / 系统繁忙 / 过于频繁
DUPLICATE: Final = "12"                           # 重复交易: the first request's fate
NO_SUCH_TXN: Final = "34"                         # 查无此交易
SIGNATURE_FAILED: Final = "11"                    # 验签失败 (in the failure row, see below)
FINAL_FAILURE: Final = frozenset({
    "01", "10", "11", "13", "30", "31", "32", "33", "35", "36", "38", "39", "45",
    "60", "61", "62", "63", "99"})


def _unlisted(event: str, **codes: str | None) -> None:
    log.warning(event, **{k: (v or "")[:8] for k, v in codes.items()})


def _defects(where: str, code: str) -> None:
    if code == WITH_DEFECTS:
        log.warning("bankcard.success_with_defects", where=where, code=code)


# -- the synchronous refund answer (txnType=04) --------------------------------------------
# Addendum §2 "class" column for the sync answer, and CH §6 "Sync respCode":
#   00 accepted (the result comes by back notification or query) -> PROCESSING;
#   A6 final success -> SUCCEEDED (issue 15: failing it paid customers twice);
#   03/04/05 unknown -> query; 12 duplicate orderId -> the first one's fate, query it;
#   02/06/37 not accepted -> retry later: 02/06 are transient refusals to process, resent
#   inline (ChannelUnavailable); 37 "too frequent" waits for the resolver (an inline
#   resend would hit the limit again), so it is unknown;
#   the addendum's failure row -> FAILED. One deviation, on purpose: 11 验签失败 rejects
#   our signature, not the refund; it is a configuration error (ChannelAuthError) so the
#   refund stays open and the same orderId goes out once the key is fixed.
SUBMIT: Final[Mapping[str, Outcome]] = {
    "00": Outcome(Verdict.ACCEPTED, ChannelStatus.PROCESSING),
    WITH_DEFECTS: Outcome(Verdict.ACCEPTED, ChannelStatus.SUCCEEDED),
    **{code: Outcome(Verdict.UNKNOWN) for code in PENDING},
    DUPLICATE: Outcome(Verdict.UNKNOWN),
    "02": Outcome(Verdict.UNAVAILABLE),
    "06": Outcome(Verdict.UNAVAILABLE),
    "37": Outcome(Verdict.UNKNOWN),
    **{code: Outcome(Verdict.ACCEPTED, ChannelStatus.FAILED) for code in FINAL_FAILURE},
    SIGNATURE_FAILED: Outcome(Verdict.AUTH),
}


def submit_outcome(resp_code: str) -> Outcome:
    """A verified synchronous refund (txnType=04) answer."""
    outcome = SUBMIT.get(resp_code)
    if outcome is None:
        _unlisted("bankcard.unknown_submit_code", resp_code=resp_code)
        return Outcome(Verdict.UNKNOWN)
    _defects("submit", resp_code)
    return outcome


# -- the query (txnType=00) ----------------------------------------------------------------
# The query's own respCode (addendum §2; CH §6 "Query"): 00 the query worked, read
# origRespCode; 34 no such transaction -> NOT_FOUND (the service resends the same
# orderId, which UnionPay dedupes); 03/04/05 the query timed out and 02/06/37 it was not
# accepted -> ask again; 11 our signature -> AUTH. Any other listed failure refuses the
# *query* (format, fields...), which says nothing about the refund: unknown, never a
# failure of the refund.
QUERY: Final[Mapping[str, Outcome]] = {
    NO_SUCH_TXN: Outcome(Verdict.ACCEPTED, ChannelStatus.NOT_FOUND),
    **{code: Outcome(Verdict.UNKNOWN) for code in PENDING | NOT_ACCEPTED | FINAL_FAILURE},
    SIGNATURE_FAILED: Outcome(Verdict.AUTH),
}

# origRespCode, the refund's own state (addendum §2; CH §6; PaySharp Form_6_5_Query):
# 00/A6 final success; 03/04/05 still processing -> query again; the failure row is a
# failure: the query found the refund, so UnionPay took it, and a failure after
# acceptance (card cancelled...) is ABNORMAL, to be rerouted (DESIGN "States").
ORIG: Final[Mapping[str, ChannelStatus]] = {
    **{code: ChannelStatus.SUCCEEDED for code in SUCCESS},
    **{code: ChannelStatus.PROCESSING for code in PENDING},
    **{code: ChannelStatus.ABNORMAL for code in FINAL_FAILURE},
}


def query_outcome(resp_code: str, orig_resp_code: str | None) -> Outcome:
    """A verified query (txnType=00) answer about one refund."""
    if resp_code != "00":
        outcome = QUERY.get(resp_code)
        if outcome is None:
            _unlisted("bankcard.unknown_query_code", resp_code=resp_code)
            return Outcome(Verdict.UNKNOWN)
        return outcome
    status = ORIG.get(orig_resp_code or "")
    if status is None:
        _unlisted("bankcard.unknown_origRespCode", orig_resp_code=orig_resp_code)
        return Outcome(Verdict.ACCEPTED, ChannelStatus.PROCESSING)
    _defects("query", orig_resp_code or "")
    return Outcome(Verdict.ACCEPTED, status)


# -- the back notification -----------------------------------------------------------------
# The notice carries the refund's final respCode (addendum §2: notify demo "00、A6为成功，
# 其余为失败"): 00/A6 success; the failure row is a failure after acceptance (there is no
# notice without acceptance) -> ABNORMAL. "其余为失败" is not followed for codes outside
# the failure row (03/04/05 "pending", anything new): PROCESSING, never final.
NOTIFICATION: Final[Mapping[str, ChannelStatus]] = {
    **{code: ChannelStatus.SUCCEEDED for code in SUCCESS},
    **{code: ChannelStatus.ABNORMAL for code in FINAL_FAILURE},
}


def notification_status(resp_code: str) -> ChannelStatus:
    status = NOTIFICATION.get(resp_code)
    if status is None:
        _unlisted("bankcard.unknown_notification_code", resp_code=resp_code)
        return ChannelStatus.PROCESSING
    _defects("notification", resp_code)
    return status


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

