"""WeChat Pay refund notifications (CH §5.5): verify, check freshness, decrypt, decode.

Owns: header lookup under every spelling (``Wechatpay-*``, ``wechatpay-*``,
``HTTP_WECHATPAY_*``), the checks the SDK does not make (timestamp within
``notification_max_skew_seconds`` of the injected clock, CH §2.4; a serial this verification
mode accepts; ``mchid`` = ours, or ``sp_mchid``/``sub_mchid`` = ours for a service
provider), and the ``ChannelResult`` of a REFUND.SUCCESS / ABNORMAL / CLOSED
event. Signature and AES-GCM go through the SDK (``client``). Must not store anything:
the nonce is handed back as ``replay_key`` and the service rejects one seen before.
Anything that does not hold up raises ``SignatureInvalid`` (the service answers 4xx).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Protocol

import structlog

from adapters.wechatpay import translate
from gateway.errors import SignatureInvalid
from gateway.masking import mask_account
from gateway.models import ChannelResult, ChannelStatus

log = structlog.get_logger(__name__)

CHANNEL: Final = "wechatpay"
HEADERS: Final = ("Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce",
                  "Wechatpay-Serial", "Wechatpay-Signature-Type")
SIGNATURE_TYPE: Final = "WECHATPAY2-SHA256-RSA2048"
MAX_BODY: Final = 64 * 1024   # a refund notification is well under 2 KiB


class Verifier(Protocol):
    def serial_acceptable(self, serial: str) -> bool: ...

    def verify_notification(self, headers: Mapping[str, str], body: str) -> bool: ...

    def decrypt_notification(self, body: str) -> dict[str, Any] | None: ...


def _reject(reason: str, code: str) -> SignatureInvalid:
    log.warning("wechatpay.notification_rejected", reason=reason, code=code)
    return SignatureInvalid(f"WeChat notification rejected: {reason}", channel=CHANNEL,
                            operation="notification", code=code)


def canonical_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The five ``Wechatpay-*`` headers under their canonical names (what the SDK reads)."""
    index = {name.lower(): name for name in HEADERS}
    index.update({"http_" + name.lower().replace("-", "_"): name for name in HEADERS})
    out: dict[str, str] = {}
    for key, value in headers.items():
        name = index.get(str(key).lower())
        if name is not None and isinstance(value, str):
            out[name] = value.strip()
    return out


def parse(headers: Mapping[str, str], body: bytes, *, verifier: Verifier, mchid: str,
          now: datetime, max_skew_seconds: int, sub_mchid: str | None = None
          ) -> ChannelResult:
    if len(body) > MAX_BODY:
        raise _reject("body too large", "BODY_TOO_LARGE")
    hdrs = canonical_headers(headers)
    missing = [name for name in HEADERS if not hdrs.get(name)]
    if missing:
        raise _reject(f"missing header {missing[0]}", "MISSING_HEADER")
    if hdrs["Wechatpay-Signature-Type"] != SIGNATURE_TYPE:
        raise _reject("unsupported signature type", "SIGNATURE_TYPE")
    if not verifier.serial_acceptable(hdrs["Wechatpay-Serial"]):
        # public-key mode: only our PUB_KEY_ID_...; certificate mode: a hex serial (an
        # unknown one is downloaded once, client.py); both: either (addendum §3)
        raise _reject("Wechatpay-Serial names no key or certificate of this mode",
                      "SERIAL")
    stamp = hdrs["Wechatpay-Timestamp"]
    if not stamp.isdigit() or len(stamp) > 12:
        raise _reject("Wechatpay-Timestamp is not unix seconds", "TIMESTAMP")
    skew = abs(now.timestamp() - int(stamp))
    if skew > max_skew_seconds:
        # CH §2.4: the SDK has no freshness check; official guidance is +-5 minutes.
        raise _reject(f"timestamp {int(skew)} s away from now", "STALE")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _reject("body is not UTF-8", "ENCODING") from None
    if not verifier.verify_notification(hdrs, text):
        raise _reject("signature does not verify", "SIGNATURE")
    envelope = verifier.decrypt_notification(text)
    if envelope is None:
        raise _reject("resource does not decrypt (AES-GCM tag)", "DECRYPT")
    return decode(envelope, mchid=mchid, sub_mchid=sub_mchid,
                  nonce=hdrs["Wechatpay-Nonce"])


def merchant_problem(resource: Mapping[str, Any], *, mchid: str, sub_mchid: str | None
                     ) -> tuple[str, str] | None:
    """Why a verified resource is not this merchant's, as (reason, code); None when it is.

    Direct merchants get ``mchid`` and no partner fields; a service provider's
    notification names ``sp_mchid`` (the provider, our ``mchid``) and ``sub_mchid`` (the
    sub-merchant), CH §5.5 / addendum §4. Whether it also carries ``mchid`` is
    UNCONFIRMED: absent, or one of the two, is accepted."""
    if sub_mchid is None:
        if resource.get("mchid") != mchid:
            return "notification for another merchant", "MCHID_MISMATCH"
        if resource.get("sp_mchid") or resource.get("sub_mchid"):
            return "a service provider's notification to a direct merchant", \
                "MCHID_MISMATCH"
        return None
    if resource.get("sp_mchid") != mchid:
        return "notification for another service provider", "MCHID_MISMATCH"
    if resource.get("sub_mchid") != sub_mchid:
        return "notification for another sub-merchant", "SUB_MCHID_MISMATCH"
    if resource.get("mchid") not in (None, mchid, sub_mchid):
        return "notification naming another merchant", "MCHID_MISMATCH"
    return None


def decode(envelope: Mapping[str, Any], *, mchid: str, nonce: str,
           sub_mchid: str | None = None) -> ChannelResult:
    """A verified, decrypted envelope -> ``ChannelResult`` (CH §5.5)."""
    event_type = envelope.get("event_type")
    announced = translate.EVENT_STATUS.get(event_type) if isinstance(event_type, str) \
        else None
    if announced is None:
        raise _reject(f"not a refund event ({str(event_type)[:32]})", "UNSUPPORTED_EVENT")
    resource: Mapping[str, Any] = envelope["resource"]
    problem = merchant_problem(resource, mchid=mchid, sub_mchid=sub_mchid)
    if problem is not None:
        # Genuinely signed by the platform, but for another merchant (a shared platform
        # key, a misrouted notify_url, a provider's other sub-merchant): not ours to
        # apply. Rejected like a forgery, so nothing changes and the security log says why.
        raise _reject(*problem)
    out_refund_no = resource.get("out_refund_no")
    if not isinstance(out_refund_no, str) or not out_refund_no:
        raise _reject("no out_refund_no in the resource", "NO_REFUND_NO")
    status = translate.refund_status(resource.get("refund_status"), source="refund_status")
    if status is not announced:
        log.warning("wechatpay.event_status_mismatch", event_type=event_type,
                    refund_status=str(resource.get("refund_status"))[:16])
    account = resource.get("user_received_account")
    event_id = envelope.get("id")
    return ChannelResult(
        status=status,
        channel_refund_no=out_refund_no,
        channel_refund_id=resource.get("refund_id") or None,
        amount=translate.fen(resource.get("amount")),
        succeeded_at=translate.parse_time(resource.get("success_time"))
        if status is ChannelStatus.SUCCEEDED else None,
        received_account=mask_account(account) if isinstance(account, str)
        and account else None,
        bank_ack=translate.bank_ack(resource),
        failure_code=event_type if status in (ChannelStatus.ABNORMAL, ChannelStatus.CLOSED)
        else None,
        failure_message=str(envelope.get("summary") or "")[:256] or None
        if status in (ChannelStatus.ABNORMAL, ChannelStatus.CLOSED) else None,
        raw={"id": event_id, "event_type": event_type,
             "create_time": envelope.get("create_time"),
             "resource": translate.redact(resource)},
        event_id=str(event_id) if event_id else None,
        replay_key=nonce,
        # CH §5.5: the envelope's create_time is when WeChat raised the event; it tells a
        # redelivered old REFUND.ABNORMAL from news after an abnormal-refund application.
        occurred_at=translate.parse_time(envelope.get("create_time")),
    )
