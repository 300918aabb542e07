"""WeChat refund notifications (CH §5.5): verification, freshness, decryption, decoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.wechatpay.adapter import WechatPayAdapter
from gateway.errors import SignatureInvalid
from gateway.models import ChannelStatus
from gateway.money import Money
from tests.helpers import FakeClock
from tests.unit.adapters.wechatpay import canned
from tests.unit.adapters.wechatpay.canned import NOW, notification

S = ChannelStatus
NO = "RF20261120000001"


def test_valid_refund_success(adapter: WechatPayAdapter) -> None:
    headers, body = notification(NO, nonce="NONCE1")
    result = adapter.parse_notification(headers, body)
    assert result.status is S.SUCCEEDED
    assert result.channel_refund_no == NO
    assert result.channel_refund_id == "50000000382019052709732678859"
    assert result.amount == Money(2500)
    assert result.event_id == "EV-2026112010000000001"
    assert result.replay_key == "NONCE1"
    assert result.succeeded_at == datetime(2026, 11, 20, 2, 0, 5, tzinfo=UTC)
    assert result.received_account == "招商银行信用卡0403"
    raw = json.dumps(result.raw, ensure_ascii=False)
    assert "ciphertext" not in raw and headers["Wechatpay-Signature"] not in raw


@pytest.mark.parametrize(("event", "status"), [
    ("REFUND.SUCCESS", S.SUCCEEDED), ("REFUND.ABNORMAL", S.ABNORMAL),
    ("REFUND.CLOSED", S.CLOSED)])
def test_every_refund_event(adapter: WechatPayAdapter, event: str, status: ChannelStatus
                            ) -> None:
    result = adapter.parse_notification(*notification(NO, event))
    assert result.status is status
    if status is not S.SUCCEEDED:
        assert result.failure_code == event and result.succeeded_at is None


def test_refund_status_in_the_resource_wins(adapter: WechatPayAdapter) -> None:
    result = adapter.parse_notification(*notification(NO, "REFUND.SUCCESS",
                                                      refund_status="CLOSED"))
    assert result.status is S.CLOSED


def reject(adapter: WechatPayAdapter, headers: dict[str, str], body: bytes, code: str
           ) -> None:
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification(headers, body)
    assert info.value.code == code and info.value.channel == "wechatpay"
    assert info.value.operation == "notification"


def test_forged_signature(adapter: WechatPayAdapter) -> None:
    headers, body = notification(NO)
    forged = body.replace(b'"REFUND.SUCCESS"', b'"REFUND.CLOSED"')
    reject(adapter, headers, forged, "SIGNATURE")
    headers["Wechatpay-Signature"] = canned.sign("x", canned.keys().merchant)
    reject(adapter, headers, body, "SIGNATURE")


@pytest.mark.parametrize(("offset", "ok"), [(-301, False), (301, False), (299, True),
                                            (-300, True), (0, True)])
def test_timestamp_freshness(adapter: WechatPayAdapter, offset: int, ok: bool) -> None:
    headers, body = notification(NO, ts=int(NOW.timestamp()) + offset)
    if ok:
        assert adapter.parse_notification(headers, body).status is S.SUCCEEDED
    else:
        reject(adapter, headers, body, "STALE")


def test_freshness_follows_the_injected_clock(adapter: WechatPayAdapter,
                                              clock: FakeClock) -> None:
    headers, body = notification(NO)
    clock.advance(seconds=301)
    reject(adapter, headers, body, "STALE")


def test_wrong_mchid(adapter: WechatPayAdapter) -> None:
    reject(adapter, *notification(NO, mchid="1900000999"), "MCHID_MISMATCH")


def test_bad_tag(adapter: WechatPayAdapter) -> None:
    # encrypted with another API v3 key: signature fine, AES-GCM tag fails
    reject(adapter, *notification(NO, key="b" * 32), "DECRYPT")


def test_tampered_ciphertext_resigned_fails_the_tag(adapter: WechatPayAdapter) -> None:
    _, body = notification(NO)
    doc = json.loads(body)
    ct = doc["resource"]["ciphertext"]
    doc["resource"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    text = json.dumps(doc, ensure_ascii=False)
    headers = canned.signed_headers(text, ts=int(NOW.timestamp()))
    reject(adapter, headers, text.encode(), "DECRYPT")


def test_wrong_serial(adapter: WechatPayAdapter) -> None:
    headers, body = notification(NO)
    headers["Wechatpay-Serial"] = "PUB_KEY_ID_OTHER"
    reject(adapter, headers, body, "SERIAL")


@pytest.mark.parametrize("drop", ["Wechatpay-Signature", "Wechatpay-Timestamp",
                                  "Wechatpay-Nonce", "Wechatpay-Serial",
                                  "Wechatpay-Signature-Type"])
def test_missing_header(adapter: WechatPayAdapter, drop: str) -> None:
    headers, body = notification(NO)
    del headers[drop]
    reject(adapter, headers, body, "MISSING_HEADER")


def test_unsupported_signature_type(adapter: WechatPayAdapter) -> None:
    headers, body = notification(NO)
    headers["Wechatpay-Signature-Type"] = "WECHATPAY2-SM2-WITH-SM3"
    reject(adapter, headers, body, "SIGNATURE_TYPE")


@pytest.mark.parametrize("spell", [
    str.lower,                                                  # FastAPI / ASGI
    lambda h: "HTTP_" + h.upper().replace("-", "_"),            # Django META
    str.upper,
])
def test_header_spellings(adapter: WechatPayAdapter, spell: Any) -> None:
    headers, body = notification(NO)
    assert adapter.parse_notification({spell(k): v for k, v in headers.items()},
                                      body).status is S.SUCCEEDED


def test_non_refund_event_is_rejected(adapter: WechatPayAdapter) -> None:
    reject(adapter, *notification(NO, "TRANSACTION.SUCCESS", refund_status="SUCCESS"),
           "UNSUPPORTED_EVENT")


def test_oversized_or_non_utf8_body(adapter: WechatPayAdapter) -> None:
    headers, _ = notification(NO)
    reject(adapter, headers, b"{" + b" " * 70_000 + b"}", "BODY_TOO_LARGE")
    reject(adapter, headers, b"\xff\xfe", "ENCODING")


def test_acks(adapter: WechatPayAdapter) -> None:
    ok = adapter.notification_ack(True)
    assert ok.http_status == 204 and ok.body == b"" and ok.accepted
    bad = adapter.notification_ack(False)
    assert 400 <= bad.http_status < 500 and not bad.accepted
    assert json.loads(bad.body)["code"] == "FAIL"
