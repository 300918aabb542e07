"""Test keys and signed WeChat Pay v3 answers/notifications (CH §2.4, §5.4, §5.5).

Keys are generated once per test session; they sign nothing real. ``platform`` plays
WeChat (signs answers and notifications, decrypts abnormal-refund fields), ``merchant``
plays us (the SDK signs our requests with it).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from gateway.models import Payment, Refund, RefundStatus, Route
from gateway.money import Money

BASE = "https://wx.test"
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
PUB_ID = "PUB_KEY_ID_0119000001092025111800000000000001"
CERT_SERIAL = "444F4864EA9B34415A0000000000000000000001"
APIV3 = "a12d3924fd499edac8a5efc0123456ab"   # 32 bytes
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Keys:
    merchant: rsa.RSAPrivateKey
    platform: rsa.RSAPrivateKey

    @property
    def merchant_pem(self) -> str:
        return self.merchant.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).decode()

    @property
    def merchant_pkcs1_pem(self) -> str:
        return self.merchant.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()).decode()

    @property
    def platform_public_pem(self) -> str:
        return self.platform.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def platform_cert(self, serial: int = 0x5157F09EFDC096DE15EBE81A47057A72) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.platform.public_key()).serial_number(serial)
                .not_valid_before(datetime.now(UTC) - timedelta(days=1))
                .not_valid_after(datetime.now(UTC) + timedelta(days=365))
                .sign(self.platform, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()


@cache
def keys() -> Keys:
    return Keys(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                rsa.generate_private_key(public_exponent=65537, key_size=2048))


def sign(text: str, key: rsa.RSAPrivateKey | None = None) -> str:
    key = key or keys().platform
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(),
                                     hashes.SHA256())).decode()


def signed_headers(body: str, *, ts: int | None = None, nonce: str | None = None,
                   serial: str = PUB_ID, key: rsa.RSAPrivateKey | None = None,
                   request_id: str = "08F78BB5AF0610D2F4B0F4A2B2020000") -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    nonce = nonce or secrets.token_hex(16).upper()
    return {"Wechatpay-Timestamp": str(ts), "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature": sign(f"{ts}\n{nonce}\n{body}\n", key),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": request_id}


def refund_object(out_refund_no: str, status: str = "PROCESSING", *, refund: int = 2500,
                  total: int = 10_000, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "refund_id": "50000000382019052709732678859", "out_refund_no": out_refund_no,
        "transaction_id": "4200000001202611200000000001", "out_trade_no": "ORD1",
        "channel": "ORIGINAL", "user_received_account": "招商银行信用卡0403",
        "create_time": "2026-11-20T10:00:00+08:00", "status": status,
        "funds_account": "AVAILABLE",
        "amount": {"total": total, "refund": refund, "payer_total": total,
                   "payer_refund": refund, "settlement_refund": refund,
                   "settlement_total": total, "discount_refund": 0, "currency": "CNY"}}
    if status == "SUCCESS":
        doc["success_time"] = "2026-11-20T10:00:05+08:00"
    doc.update(extra)
    return doc


def encrypt_resource(resource: dict[str, Any], key: str = APIV3,
                     associated_data: str = "refund") -> dict[str, str]:
    nonce = secrets.token_hex(6)   # 12 chars, as WeChat sends
    ct = AESGCM(key.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(),
                                      associated_data.encode())
    return {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ct).decode(),
            "associated_data": associated_data, "nonce": nonce}


def notification(out_refund_no: str, event_type: str = "REFUND.SUCCESS", *,
                 refund_status: str | None = None, mchid: str = MCHID, refund: int = 2500,
                 ts: int | None = None, nonce: str | None = None,
                 event_id: str = "EV-2026112010000000001", key: str = APIV3,
                 **resource_extra: Any) -> tuple[dict[str, str], bytes]:
    status = refund_status or event_type.split(".", 1)[1]
    resource: dict[str, Any] = {
        "mchid": mchid, "transaction_id": "4200000001202611200000000001",
        "out_trade_no": "ORD1", "refund_id": "50000000382019052709732678859",
        "out_refund_no": out_refund_no, "refund_status": status,
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 10_000, "refund": refund, "payer_total": 10_000,
                   "payer_refund": refund}}
    if status == "SUCCESS":
        resource["success_time"] = "2026-11-20T10:00:05+08:00"
    resource.update(resource_extra)
    envelope = {"id": event_id, "create_time": "2026-11-20T10:00:06+08:00",
                "resource_type": "encrypt-resource", "event_type": event_type,
                "summary": "退款成功", "resource": encrypt_resource(resource, key)}
    body = json.dumps(envelope, ensure_ascii=False)
    ts = int(NOW.timestamp()) if ts is None else ts
    headers = signed_headers(body, ts=ts, nonce=nonce)
    headers.pop("Request-ID")
    return headers, body.encode()


def refund(no: str = "RF20261120000001", *, amount: int = 2500, paid: int = 10_000,
           channel_refund_id: str | None = None, reason: str = "goods not delivered",
           status: RefundStatus = RefundStatus.PENDING) -> Refund:
    return Refund(
        id="rf_1", idempotency_key="k1", route=Route.WECHATPAY,
        payment=Payment(Route.WECHATPAY, "ORD1", "4200000001202611200000000001",
                        Money(paid)),
        amount=Money(amount), reason=reason, status=status, channel_refund_no=no,
        created_at=NOW, updated_at=NOW, channel_refund_id=channel_refund_id)
