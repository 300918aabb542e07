"""Notifications (CH §1.5, §4.4) signed with a key pair made in the test."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime

import pytest

from adapters.alipay.adapter import AlipayAdapter
from gateway.errors import SignatureInvalid
from gateway.models import ChannelStatus
from tests.unit.adapters.alipay.conftest import APP_ID, KeyPair


def sign_form(fields: dict[str, str], keys: KeyPair, *, sign_type: str = "RSA2") -> bytes:
    """Alipay's notify canonicalisation: sorted k=v, without sign and sign_type."""
    message = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
    signed = {**fields, "sign_type": sign_type, "sign": keys.sign(message)}
    return urllib.parse.urlencode(signed).encode()


def trade_sync(**extra: str) -> dict[str, str]:
    return {"notify_time": "2026-11-20 10:00:07", "notify_type": "trade_status_sync",
            "notify_id": "ac05099524730693a8b330c5ecf72da9786", "app_id": APP_ID,
            "charset": "utf-8", "version": "1.0", "trade_no": "2026112022001",
            "out_trade_no": "ORD1", "out_biz_no": "RFabc123", "trade_status": "TRADE_SUCCESS",
            "total_amount": "100.00", "refund_fee": "24.60", "gmt_refund":
            "2026-11-20 10:00:05.123", "buyer_id": "2088101117955611",
            "subject": "商品", **extra}


def depositback(dback: str) -> dict[str, str]:
    biz = {"trade_no": "2026112022001", "out_trade_no": "ORD1", "out_request_no": "RFabc123",
           "dback_status": dback, "dback_amount": "12.30",
           "bank_ack_time": "2026-11-21 10:00:00", "est_bank_receipt_time":
           "2026-11-22 10:00:00"}
    return {"notify_id": "2026112000222100000000001", "utc_timestamp": "1795663200000",
            "msg_method": "alipay.trade.refund.depositback.completed", "app_id": APP_ID,
            "version": "1.1", "charset": "utf-8",
            "biz_content": json.dumps(biz, separators=(",", ":"))}


def test_trade_sync_refund(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    form = trade_sync()                  # gmt_refund with milliseconds, as Alipay sends it
    result = adapter.parse_notification({}, sign_form(form, alipay_keys))
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.channel_refund_no == "RFabc123"
    assert result.event_id == form["notify_id"]
    assert result.amount is None          # refund_fee is the trade's cumulative total
    assert result.succeeded_at == datetime(2026, 11, 20, 2, 0, 5, 123_000, tzinfo=UTC)
    assert "sign" not in result.raw and result.raw["buyer_id"] == "****5611"


@pytest.mark.parametrize("dback", ["S", "P", "F"])
def test_depositback(adapter: AlipayAdapter, alipay_keys: KeyPair, dback: str) -> None:
    result = adapter.parse_notification({}, sign_form(depositback(dback), alipay_keys))
    assert result.status is ChannelStatus.SUCCEEDED
    assert result.channel_refund_no == "RFabc123"
    assert result.bank_ack["dback_status"] == dback
    assert result.bank_ack["bank_ack_time"] == "2026-11-21 10:00:00"
    assert (result.received_account == "alipay_balance") is (dback == "F")


def test_forged_signature(adapter: AlipayAdapter, other_keys: KeyPair) -> None:
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification({}, sign_form(trade_sync(), other_keys))
    assert info.value.code == "SIGNATURE_INVALID"


def test_tampered_field(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    body = sign_form(trade_sync(), alipay_keys).replace(b"RFabc123", b"RFother1")
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, body)


def test_missing_and_garbage_signature(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification({}, urllib.parse.urlencode(trade_sync()).encode())
    assert info.value.code == "SIGNATURE_MISSING"
    body = urllib.parse.urlencode({**trade_sync(), "sign": "!!notbase64"}).encode()
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, body)


def test_other_sign_type_rejected(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, sign_form(trade_sync(), alipay_keys, sign_type="RSA"))


def test_other_app_id(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    with pytest.raises(SignatureInvalid) as info:
        adapter.parse_notification({}, sign_form(trade_sync(app_id="2021999"), alipay_keys))
    assert info.value.code == "APP_ID_MISMATCH"


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"a=1&a=2", b"x" * 70_000])
def test_malformed_bodies(adapter: AlipayAdapter, body: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, body)


def test_payment_notice_names_no_refund(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    form = trade_sync()
    for key in ("out_biz_no", "refund_fee", "gmt_refund"):
        del form[key]
    result = adapter.parse_notification({}, sign_form(form, alipay_keys))
    assert result.status is ChannelStatus.PROCESSING and result.channel_refund_no is None


def test_gbk_charset(adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    form = trade_sync(charset="gbk", subject="退款商品")
    message = "&".join(f"{k}={v}" for k, v in sorted(form.items()))
    signed = {**form, "sign_type": "RSA2", "sign": alipay_keys.sign(message)}
    body = urllib.parse.urlencode(signed, encoding="gbk").encode()
    assert adapter.parse_notification({}, body).status is ChannelStatus.SUCCEEDED
