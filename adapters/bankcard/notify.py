"""UnionPay back notifications (form POST to ``backUrl``, CH §6): verify and decode.

Owns: reading the form body, checking UnionPay's signature and certificate, the merchant
and the transaction type, and turning the notice into a ``ChannelResult``. Must not look
anything up in the store (the service matches ``orderId`` to a refund) or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qsl

from adapters.bankcard import signing, translate
from gateway.errors import SignatureInvalid
from gateway.models import ChannelResult, ChannelStatus, Route

CHANNEL = Route.BANKCARD.value
REFUND_TXN_TYPE = "04"   # 退货 (CH §6)


def _reject(message: str, code: str) -> SignatureInvalid:
    return SignatureInvalid(message, channel=CHANNEL, operation="notification", code=code)


def decode_form(body: bytes) -> dict[str, str]:
    """The URL-encoded UTF-8 form; repeated or malformed fields are refused."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                          encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject("notification body is not a UTF-8 form", "MALFORMED") from exc
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise _reject(f"notification repeats field {key}", "MALFORMED")
        fields[key] = value
    return fields


def parse(headers: Mapping[str, str], body: bytes, *, trust: signing.Trust,
          mer_id: str, now: datetime) -> ChannelResult:
    """A verified refund notice, or ``SignatureInvalid`` naming what is wrong."""
    del headers   # UnionPay signs the body only; nothing in the headers is evidence
    fields = decode_form(body)
    why = signing.problem(fields, trust, now)
    if why is not None:
        raise _reject(f"UnionPay notification not verified: {why}", "SIGNATURE_INVALID")
    if fields.get("merId") != mer_id:
        raise _reject("notification for another merchant", "MERCHANT_MISMATCH")
    if fields.get("txnType") != REFUND_TXN_TYPE:
        raise _reject("not a refund (txnType 04) notification", "UNEXPECTED_TXN_TYPE")
    order_id = fields.get("orderId", "")
    resp_code = fields.get("respCode", "")
    if not order_id or not resp_code:
        raise _reject("notification without orderId/respCode", "MALFORMED")
    amount = translate.fen(fields.get("txnAmt"))
    status = translate.notification_status(resp_code)
    query_id = fields.get("queryId") or None
    failed = status is ChannelStatus.ABNORMAL
    return ChannelResult(
        status=status, channel_refund_no=order_id, channel_refund_id=query_id,
        amount=amount,
        bank_ack=translate.bank_ack(fields) if status is ChannelStatus.SUCCEEDED else {},
        failure_code=resp_code if failed else None,
        failure_message=fields.get("respMsg") if failed else None,
        raw=translate.redact(fields),
        event_id=f"{query_id or order_id}:{resp_code}")
