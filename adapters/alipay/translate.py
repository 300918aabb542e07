"""Alipay answers -> the gateway's vocabulary (pure, total tables; CH §4).

Owns: what ``code``/``sub_code``, ``fund_change``, ``refund_status`` and ``dback_status``
mean for a refund; turning verified answers into ``ChannelResult``; redacting answers
kept as evidence. Must not do I/O, read settings or import the SDK. An unknown status is
PROCESSING (with a warning); an unknown error code is "outcome unknown", never a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import structlog

from gateway.clock import from_beijing
from gateway.errors import InvalidRequest
from gateway.logging import redact_mapping
from gateway.masking import mask_account, mask_opaque
from gateway.models import ChannelResult, ChannelStatus
from gateway.money import Money

log = structlog.get_logger(__name__)

SUCCESS_CODE: Final = "10000"
UNKNOWN_CODE: Final = "20000"          # service unavailable / isp.unknow-error (CH §4)
RECEIVED_IN_BALANCE: Final = "alipay_balance"


class Verdict(StrEnum):
    """What the adapter does with a (signed) failure answer."""

    RESULT = "result"            # return ChannelResult(status)
    UNKNOWN = "unknown"          # raise OutcomeUnknown: query first, resend same number
    RATE_LIMITED = "rate_limited"  # raise OutcomeUnknown: not accepted; retry later
    AUTH = "auth"                # raise ChannelAuthError: fix configuration


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    status: ChannelStatus | None = None


# CH §4.3 "Refund error codes" (sub_code; code 40004 unless noted), row by row.
# Deviation, on purpose: ACQ.DISCORDANT_REPEAT_REQUEST is "final" in CH §4.3, but it says
# a refund with this out_request_no already exists with other content. That earlier
# request may have moved money; calling this refund FAILED would release its amount and
# allow a second refund (DESIGN invariants 1, 3). Our out_request_no and request content
# never change, so this only happens after a bug: query first and let a person look.
REFUND_SUB_CODES: Final[Mapping[str, Outcome]] = {
    "ACQ.SYSTEM_ERROR": Outcome(Verdict.UNKNOWN),
    "isp.unknow-error": Outcome(Verdict.UNKNOWN),              # code 20000
    "isv.app-call-limited": Outcome(Verdict.RATE_LIMITED),
    "isv.method-call-limited": Outcome(Verdict.RATE_LIMITED),
    "app-call-limited": Outcome(Verdict.RATE_LIMITED),
    "ACQ.SELLER_BALANCE_NOT_ENOUGH": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.INVALID_PARAMETER": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.REASON_TRADE_BEEN_FREEZEN": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.TRADE_NOT_EXIST": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.TRADE_HAS_FINISHED": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.TRADE_STATUS_ERROR": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.DISCORDANT_REPEAT_REQUEST": Outcome(Verdict.UNKNOWN),   # see above
    "ACQ.REASON_TRADE_REFUND_FEE_ERR": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "ACQ.TRADE_NOT_ALLOW_REFUND": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
}

# CHANNELS-ADDENDUM §6 "Alipay gateway-level errors" (the 20001/40006 sub_codes) plus
# Alipay's public error codes (公共错误码, opendocs "common error codes") for the rest: a
# request refused because of our credentials (app id, signature, key type, permissions).
# Never retried; a person fixes the configuration.
AUTH_SUB_CODES: Final = frozenset({
    "isv.invalid-signature", "isv.missing-signature", "isv.invalid-signature-type",
    "isv.missing-signature-type", "isv.invalid-app-id", "isv.missing-app-id",
    "isv.invalid-app-auth-token", "isv.app-unauthorized", "isv.insufficient-isv-permissions",
    "isv.insufficient-user-permissions", "isv.invalid-encrypt", "isv.missing-encrypt",
    # A timestamp Alipay refuses is our clock, not this refund: FAILED would fail every
    # refund while the clock is skewed; AUTH keeps them open until it is fixed.
    "isv.invalid-timestamp", "isv.missing-timestamp",
    # Certificate mode (CHANNELS-ADDENDUM §5; the names of Alipay's common error codes,
    # CommonErrorType in its v3 SDKs): our certificate settings, not the refund (40002
    # would otherwise read as FAILED).
    "isv.missing-app-cert-sn", "isv.app-cert-not-exist", "isv.app-cert-expired",
    "isv.missing-alipay-root-cert-sn", "isv.invalid-alipay-root-cert-sn",
})

# CHANNELS-ADDENDUM §6 table, by ``code`` (CH §4 "Common response fields"). 20000: no
# business answer -> unknown, query, resend the same out_request_no. The others are
# "final refusal": stopped at the gateway, the refund never ran. 20001 (auth token),
# 40003 (conditions, e.g. decryption) and 40006 (permissions) are our configuration ->
# AUTH: the refund stays open and goes out again once fixed. 40001 missing / 40002
# invalid arguments refuse this request -> FAILED (nothing moved), unless the sub_code
# names our credentials (AUTH_SUB_CODES). 40004 is decided by the sub_code (CH §4.3).
GATEWAY_CODES: Final[Mapping[str, Outcome]] = {
    UNKNOWN_CODE: Outcome(Verdict.UNKNOWN),
    "20001": Outcome(Verdict.AUTH),
    "40001": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "40002": Outcome(Verdict.RESULT, ChannelStatus.FAILED),
    "40003": Outcome(Verdict.AUTH),
    "40006": Outcome(Verdict.AUTH),
}
AUTH_CODES: Final = frozenset(code for code, outcome in GATEWAY_CODES.items()
                              if outcome.verdict is Verdict.AUTH)


def is_auth_failure(code: str | None, sub_code: str | None) -> bool:
    return (sub_code or "") in AUTH_SUB_CODES or (code or "") in AUTH_CODES


def refund_failure(code: str, sub_code: str | None) -> Outcome:
    """A signed ``alipay.trade.refund`` answer with ``code != 10000`` (CH §4.3)."""
    if is_auth_failure(code, sub_code):
        return Outcome(Verdict.AUTH)
    if sub_code is not None and sub_code in REFUND_SUB_CODES:
        return REFUND_SUB_CODES[sub_code]
    if code in GATEWAY_CODES:
        return GATEWAY_CODES[code]
    # A 40004 with a sub_code CH §4.3 does not list, or a code the addendum does not list,
    # may be a refusal or a "try again": we cannot tell, so it is not a failure.
    log.warning("alipay.unknown_refund_code", code=code, sub_code=sub_code)
    return Outcome(Verdict.UNKNOWN)


def query_failure(code: str, sub_code: str | None) -> Outcome:
    """A signed refund-query answer with ``code != 10000``.

    A refused *query* never decides the refund: the trade not existing means no refund
    was executed (NOT_FOUND; the service resends and ``alipay.trade.refund`` gives the
    final refusal); anything else is "ask again later".
    """
    if is_auth_failure(code, sub_code):
        return Outcome(Verdict.AUTH)
    if sub_code == "ACQ.TRADE_NOT_EXIST":
        return Outcome(Verdict.RESULT, ChannelStatus.NOT_FOUND)
    known = REFUND_SUB_CODES.get(sub_code or "")
    if known is not None and known.verdict is Verdict.RATE_LIMITED:
        return Outcome(Verdict.RATE_LIMITED)
    if known is None and code not in GATEWAY_CODES:
        log.warning("alipay.unknown_query_code", code=code, sub_code=sub_code)
    return Outcome(Verdict.UNKNOWN)


# CH §4.1 success rule: code 10000 only means accepted; fund_change "Y" => refunded;
# "N" or absent => confirm with the refund query. (A resend of an already executed
# out_request_no also answers fund_change N: the query then finds REFUND_SUCCESS.)
FUND_CHANGE: Final[Mapping[str, ChannelStatus]] = {
    "Y": ChannelStatus.SUCCEEDED,
    "N": ChannelStatus.PROCESSING,
}

# CH §4.2 refund_status: REFUND_SUCCESS; absent => not received or failed. Absent is
# NOT_FOUND (the service resends under the same out_request_no; Alipay dedupes), never
# FAILED. Other values are undocumented: PROCESSING with a warning.
REFUND_STATUS: Final[Mapping[str, ChannelStatus]] = {
    "REFUND_SUCCESS": ChannelStatus.SUCCEEDED,
}

# CH §4.2 deposit_back_info.dback_status (bank-card refunds; domain/DepositBackInfo.java)
# and CH §4.4 ``alipay.trade.refund.depositback.completed``. Alipay has refunded in every
# case (money left the merchant); this is about the bank leg. F: the bank returned it and
# Alipay put it in the buyer's Alipay balance - not lost. DEPOSITBACK_REFUND_STATUS is
# what a depositback notice means for the refund: SUCCEEDED for each listed value; any
# other value (or none) is PROCESSING with a warning, and the query decides.
DBACK_STATUS: Final[Mapping[str, str]] = {
    "S": "bank credited the card",
    "P": "bank leg in progress",
    "F": "bank refused; credited to the buyer's Alipay balance",
}
DEPOSITBACK_REFUND_STATUS: Final[Mapping[str, ChannelStatus]] = {
    code: ChannelStatus.SUCCEEDED for code in DBACK_STATUS}

# CH §4.4: a refund shows on the *trade* notification (trade_status_sync) with out_biz_no:
# partial refund -> TRADE_SUCCESS, full refund -> TRADE_CLOSED; Alipay sends it once the
# refund is executed. Another trade_status with refund fields is not documented:
# PROCESSING with a warning (the query is authoritative).
TRADE_STATUS_WITH_REFUND: Final[Mapping[str, ChannelStatus]] = {
    "TRADE_SUCCESS": ChannelStatus.SUCCEEDED,
    "TRADE_CLOSED": ChannelStatus.SUCCEEDED,
}


def _listed(table: Mapping[str, ChannelStatus], value: Any, event: str) -> ChannelStatus:
    """``table[value]``; a value the table does not list is PROCESSING, with a warning."""
    status = table.get(str(value or ""))
    if status is None:
        log.warning(event, value=str(value or "")[:32])
        return ChannelStatus.PROCESSING
    return status


def depositback_status(value: Any) -> ChannelStatus:
    """What a depositback notice with this ``dback_status`` says about the refund."""
    return _listed(DEPOSITBACK_REFUND_STATUS, value, "alipay.depositback_status_not_listed")


def trade_notification_status(value: Any) -> ChannelStatus:
    """What a trade_status_sync notice that names a refund says about it (CH §4.4)."""
    return _listed(TRADE_STATUS_WITH_REFUND, value, "alipay.unknown_trade_status")


def fund_change_status(value: Any) -> ChannelStatus:
    if value in (None, ""):
        return ChannelStatus.PROCESSING
    return _listed(FUND_CHANGE, value, "alipay.unknown_fund_change")


def refund_status(value: Any) -> ChannelStatus:
    if value in (None, ""):
        return ChannelStatus.NOT_FOUND
    return _listed(REFUND_STATUS, value, "alipay.unknown_refund_status")


def parse_time(value: Any) -> datetime | None:
    """``yyyy-MM-dd HH:mm:ss`` Beijing wall time -> aware UTC; ``None`` if absent/odd.

    Notifications write ``gmt_refund`` with milliseconds (``...15:45:57.320``).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
        naive = datetime.strptime(text, fmt)  # noqa: DTZ007 - Beijing, made aware below
    except ValueError:
        log.warning("alipay.bad_time", value=value[:32])
        return None
    return from_beijing(naive)


def parse_amount(value: Any) -> Money | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return Money.parse(value)
    except InvalidRequest:
        log.warning("alipay.bad_amount", value=value[:32])
        return None


def deposit_back(info: Any) -> dict[str, str]:
    """``deposit_back_info`` -> ``bank_ack`` (strings only; empty when not a card refund)."""
    if not isinstance(info, Mapping):
        return {}
    status = str(info.get("dback_status") or "")
    if not status:
        return {}
    if status not in DBACK_STATUS:
        log.warning("alipay.unknown_dback_status", dback_status=status[:8])
    ack = {"dback_status": status}
    for key in ("dback_amount", "bank_ack_time", "est_bank_receipt_time"):
        value = info.get(key)
        if value not in (None, ""):
            ack[key] = str(value)
    return ack


def balance_account(logon_id: str | None) -> str:
    return f"{RECEIVED_IN_BALANCE}:{logon_id}" if logon_id else RECEIVED_IN_BALANCE


def masked_logon(value: Any) -> str | None:
    """``buyer_logon_id`` as every account is shown (``gateway.masking``): Alipay's own
    masking (``159****5620``, ``zha***@163.com``) is kept; None when there is none."""
    return mask_account(value) if isinstance(value, str) and value else None


# Identifiers of the buyer, masked in stored evidence: accounts and user ids by the one
# rule (gateway.masking); the open id, which means nothing to a person, as its last 4.
_BUYER_IDS: Final = frozenset({"buyer_user_id", "buyer_open_id", "buyer_id", "buyer_logon_id",
                               "buyer_pay_amount_account"})


def redact(body: Mapping[str, Any]) -> dict[str, Any]:
    """An answer or notification as stored evidence: no ``sign``, buyer ids masked."""
    kept: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("sign", "sign_type"):
            continue
        if key in _BUYER_IDS and isinstance(value, str):
            kept[key] = mask_opaque(value) if key == "buyer_open_id" else mask_account(value)
            continue
        kept[key] = value
    return redact_mapping(kept)


def submit_result(body: Mapping[str, Any], channel_refund_no: str) -> ChannelResult:
    """A signed ``code=10000`` refund answer (CH §4.1)."""
    status = fund_change_status(body.get("fund_change"))
    succeeded = status is ChannelStatus.SUCCEEDED
    return ChannelResult(
        status=status,
        channel_refund_no=channel_refund_no,
        # refund_fee is the trade's *cumulative* refunded amount, not this refund's.
        amount=None,
        succeeded_at=parse_time(body.get("gmt_refund_pay")) if succeeded else None,
        received_account=masked_logon(body.get("buyer_logon_id")) if succeeded else None,
        raw=redact(body),
    )


def query_result(body: Mapping[str, Any], channel_refund_no: str) -> ChannelResult:
    """A signed ``code=10000`` refund-query answer (CH §4.2)."""
    status = refund_status(body.get("refund_status"))
    if status is not ChannelStatus.SUCCEEDED:
        return ChannelResult(status=status, channel_refund_no=channel_refund_no,
                             raw=redact(body))
    ack = deposit_back(body.get("deposit_back_info"))
    received = RECEIVED_IN_BALANCE if ack.get("dback_status") == "F" else None
    return ChannelResult(
        status=ChannelStatus.SUCCEEDED,
        channel_refund_no=channel_refund_no,
        amount=parse_amount(body.get("refund_amount")),
        succeeded_at=parse_time(body.get("gmt_refund_pay")),
        received_account=received,
        bank_ack=ack,
        raw=redact(body),
    )
