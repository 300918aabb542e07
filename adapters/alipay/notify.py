"""Alipay notifications (CH §1.5, §4.4): decode the form POST, verify, turn into a result.

Owns: form decoding (``charset``), the signature check through a verifier given by the
adapter (the SDK's ``verify``: sorted ``k=v`` of every field except ``sign`` and
``sign_type``), the ``app_id`` check, and the two kinds we use: ``trade_status_sync`` with
refund fields, and the ``alipay.trade.refund.depositback.completed`` message. Must not
import the SDK, touch the store or decide what the service does with the result.
A notification is best-effort: the refund query stays authoritative.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Final

import structlog

from adapters.alipay import translate
from gateway.errors import SignatureInvalid
from gateway.models import ChannelResult, ChannelStatus, Route

log = structlog.get_logger(__name__)

CHANNEL: Final = Route.ALIPAY.value
OPERATION: Final = "notification"
DEPOSITBACK: Final = "alipay.trade.refund.depositback.completed"
TRADE_SYNC: Final = "trade_status_sync"
MAX_BODY: Final = 64 * 1024

Verifier = Callable[[Mapping[str, str], str], bool]


def _reject(message: str, code: str) -> SignatureInvalid:
    return SignatureInvalid(message, channel=CHANNEL, operation=OPERATION, code=code)


def decode_form(body: bytes) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` -> dict, values URL-decoded once (CH §1.5).

    Alipay sends ``charset`` in the form itself (utf-8 by default, gbk possible). A
    repeated field makes the signed string ambiguous: rejected.
    """
    if len(body) > MAX_BODY:
        raise _reject("notification body too large", "TOO_LARGE")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise _reject("notification body is not URL-encoded", "BAD_FORM") from None
    charset = "utf-8"
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True,
                                             encoding="latin-1"):
        if key == "charset" and value.strip().lower() in ("gbk", "gb2312", "gb18030"):
            charset = "gb18030"
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=charset,
                                       errors="strict", strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        raise _reject("notification body is not a valid form", "BAD_FORM") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise _reject(f"field {key!r} repeated", "BAD_FORM")
        form[key] = value
    return form


def parse(body: bytes, *, app_id: str, verify: Verifier) -> ChannelResult:
    """A verified notification as a ``ChannelResult``; ``SignatureInvalid`` otherwise."""
    form = decode_form(body)
    signature = form.pop("sign", "")
    if not signature:
        raise _reject("notification has no sign", "SIGNATURE_MISSING")
    if not verify(form, signature):
        raise _reject("notification signature does not verify", "SIGNATURE_INVALID")
    if form.get("app_id") != app_id:
        raise _reject("notification is for another app_id", "APP_ID_MISMATCH")
    event_id = form.get("notify_id") or None
    if form.get("msg_method") == DEPOSITBACK:
        return _depositback(form, event_id, app_id)
    if form.get("notify_type") == TRADE_SYNC:
        return _trade_sync(form, event_id, app_id)
    # Genuine but not about a refund (a payment notice sent here by mistake): no refund
    # number, so the service answers "fail" and logs it; nothing changes.
    log.warning("alipay.notification_not_refund", notify_type=form.get("notify_type"),
                msg_method=form.get("msg_method"))
    return ChannelResult(status=ChannelStatus.PROCESSING, raw=translate.redact(form),
                         event_id=event_id)


def _trade_sync(form: Mapping[str, str], event_id: str | None, app_id: str) -> ChannelResult:
    """CH §4.4: a refund shows as ``out_biz_no`` (= out_request_no), ``refund_fee``,
    ``gmt_refund`` on the trade notification (TRADE_SUCCESS partial, TRADE_CLOSED full).
    Alipay sends it once the refund is executed, so those mean SUCCEEDED; another
    ``trade_status`` is PROCESSING (``translate.TRADE_STATUS_WITH_REFUND``)."""
    refund_no = form.get("out_biz_no") or None
    if refund_no is None or not (form.get("gmt_refund") or form.get("refund_fee")):
        log.warning("alipay.trade_notification_without_refund",
                    trade_status=form.get("trade_status"))
        return ChannelResult(status=ChannelStatus.PROCESSING, raw=translate.redact(form),
                             event_id=event_id)
    status = translate.trade_notification_status(form.get("trade_status"))
    return ChannelResult(
        status=status,
        channel_refund_no=refund_no,
        # refund_fee is the trade's cumulative refunded total, not this refund's amount:
        # comparing it with the refund would reject the second partial refund's notice.
        amount=None,
        succeeded_at=translate.parse_time(form.get("gmt_refund"))
        if status is ChannelStatus.SUCCEEDED else None,
        raw=translate.redact(form),
        event_id=event_id,
    )


def _depositback(form: Mapping[str, str], event_id: str | None, app_id: str
                 ) -> ChannelResult:
    """CH §4.4: bank-card leg finished; ``biz_content`` JSON carries the dback fields."""
    try:
        biz = json.loads(form.get("biz_content") or "")
    except ValueError:
        biz = None
    if not isinstance(biz, dict) or not biz.get("out_request_no"):
        # Signed, so genuine, but unreadable: no refund can be named. Not a forgery.
        log.warning("alipay.depositback_unreadable")
        return ChannelResult(status=ChannelStatus.PROCESSING, raw=translate.redact(form),
                             event_id=event_id)
    ack = translate.deposit_back(biz)
    return ChannelResult(
        status=translate.depositback_status(ack.get("dback_status")),
        channel_refund_no=str(biz["out_request_no"]),
        amount=None,   # dback_amount is the bank leg, which may differ from the refund
        received_account=(translate.RECEIVED_IN_BALANCE
                          if ack.get("dback_status") == "F" else None),
        bank_ack=ack,
        raw={**translate.redact(form), "biz_content": translate.redact(biz)},
        event_id=event_id,
    )
