"""Known-answer tests of the UnionPay 5.1.0 signature (CH §6), and certificate trust.

The expected values are computed here from the spec's steps with hashlib and
cryptography directly (never through ``signing``), and also pinned as literals: RSA
PKCS#1 v1.5 is deterministic, so a fixed key and message give one signature.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from adapters.bankcard import signing
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.bankcard.keys import TEST_KEY_PEM

FIELDS = {
    "version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "04",
    "txnSubType": "00", "bizType": "000201", "accessType": "0", "channelType": "07",
    "backUrl": "http://127.0.0.1:8080/notify/bankcard?a=1&b=2", "merId": "777290058110048",
    "orderId": "RF20261120A1B2C3D4E5F60718", "txnTime": "20261120100000", "txnAmt": "2500",
    "origQryId": "762611201000000000001", "currencyCode": "156", "certId": "69629715588",
    "reqReserved": "{note=退款&x=[1,2]}",
}
EXPECTED_STRING = (
    "accessType=0&backUrl=http://127.0.0.1:8080/notify/bankcard?a=1&b=2&bizType=000201"
    "&certId=69629715588&channelType=07&currencyCode=156&encoding=UTF-8"
    "&merId=777290058110048&orderId=RF20261120A1B2C3D4E5F60718"
    "&origQryId=762611201000000000001&reqReserved={note=退款&x=[1,2]}&signMethod=01"
    "&txnAmt=2500&txnSubType=00&txnTime=20261120100000&txnType=04&version=5.1.0")
EXPECTED_DIGEST = "937f98ebdc83b2027f47911a8d3dafb7fd1150c0bcea6f9d33d13e1822d0bd25"
EXPECTED_SIGNATURE = (
    "DjQY/w4XRAtKDmUUBXkjqwzuVQSgv4yJ88p7FxRFxT1AUHuHpRzuh9XPzXCx3eU4+RdfOiVOMdd3vAqfi83/ZXNC"
    "KNcaD+oNan66PdGXLKsiX0XRY5QgG2q479TvV5UmXpWuDtqs3kjYnYouisVI4s7hCmxCKhGBwhfqFMnqy4rJZq+I"
    "A4PLowhpItQxDmRFdQMHpGao8gCUOviIMDvkb617xBKOQcMlSP/lsiyWvMOwKGslQI4qkdHLeGFRRX3fCty11nHB"
    "3Um7tFGMilP9Ak5xAraWdiPPqSNUv5ZCaHNhF+zJ3OzcMab2QroLV0OsUm78d4JE83BorIL6nZUdBg==")


def independent_signature(fields: dict[str, str]) -> str:
    """The CH §6 steps, written out without the module under test."""
    text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature")
    hex_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = serialization.load_pem_private_key(TEST_KEY_PEM.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    raw = key.sign(hex_digest.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def test_string_to_sign_is_sorted_raw_pairs() -> None:
    assert signing.string_to_sign(FIELDS) == EXPECTED_STRING


def test_signature_field_is_excluded_from_the_string() -> None:
    assert signing.string_to_sign({**FIELDS, "signature": "xyz"}) == EXPECTED_STRING


def test_digest_is_lowercase_sha256_hex_of_the_string() -> None:
    assert signing.digest_hex(FIELDS) == EXPECTED_DIGEST
    assert hashlib.sha256(EXPECTED_STRING.encode()).hexdigest() == EXPECTED_DIGEST


def test_signature_known_answer() -> None:
    assert independent_signature(FIELDS) == EXPECTED_SIGNATURE
    assert signing.sign(FIELDS, certs.KEY) == EXPECTED_SIGNATURE


def test_signature_is_over_the_hex_digest_not_the_raw_string() -> None:
    # The senweaver-pay mistake (CH §6): signing the string itself.
    raw = certs.KEY.sign(EXPECTED_STRING.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert base64.b64encode(raw).decode() != EXPECTED_SIGNATURE
    assert not signing.verify({**FIELDS, "signature": base64.b64encode(raw).decode()},
                              certs.KEY.public_key())


def test_verify_round_trip_and_tamper() -> None:
    signed = {**FIELDS, "signature": EXPECTED_SIGNATURE}
    pub = certs.KEY.public_key()
    assert signing.verify(signed, pub)
    assert not signing.verify({**signed, "txnAmt": "2501"}, pub)
    assert not signing.verify({**signed, "extra": ""}, pub)   # empty values are signed too
    assert not signing.verify({**signed, "signature": ""}, pub)
    assert not signing.verify({**signed, "signature": "not base64!"}, pub)
    assert not signing.verify(signed, certs.other_key().public_key())


def test_anchor_from_public_key_or_certificate() -> None:
    by_key = signing.load_trust_anchor(certs.public_pem())
    assert by_key.certificate is None
    by_cert = signing.load_trust_anchor(certs.pem(certs.certificate()))
    assert by_cert.certificate is not None
    assert by_key.public_key.public_numbers() == by_cert.public_key.public_numbers()


NOW = datetime.now(UTC)


def test_response_cert_pinned_to_configured_key() -> None:
    anchor = signing.load_trust_anchor(certs.public_pem())
    key = signing.trusted_response_key(certs.pem(certs.certificate()), anchor, NOW)
    assert key.public_numbers() == certs.KEY.public_key().public_numbers()


def test_response_cert_with_another_key_is_refused() -> None:
    anchor = signing.load_trust_anchor(certs.public_pem())
    forged = certs.pem(certs.certificate(certs.other_key()))
    with pytest.raises(signing.TrustError, match="configured UnionPay public key"):
        signing.trusted_response_key(forged, anchor, NOW)


def test_response_cert_issued_by_configured_ca() -> None:
    ca_key = certs.other_key()
    ca = certs.certificate(ca_key, cn="UnionPay test middle CA", ca=True)
    leaf = certs.certificate(issuer_key=ca_key, issuer_cn="UnionPay test middle CA")
    anchor = signing.load_trust_anchor(certs.pem(ca))
    signing.trusted_response_key(certs.pem(leaf), anchor, NOW)
    rogue = certs.certificate(certs.other_key(), issuer_key=certs.other_key(),
                              issuer_cn="UnionPay test middle CA")
    with pytest.raises(signing.TrustError, match="not issued"):
        signing.trusted_response_key(certs.pem(rogue), anchor, NOW)


def test_expired_or_garbage_response_cert_is_refused() -> None:
    anchor = signing.load_trust_anchor(certs.public_pem())
    old = certs.certificate(not_before=NOW - timedelta(days=30), days=10)
    with pytest.raises(signing.TrustError, match="validity"):
        signing.trusted_response_key(certs.pem(old), anchor, NOW)
    with pytest.raises(signing.TrustError, match="not a PEM"):
        signing.trusted_response_key("-----BEGIN CERTIFICATE-----\nAAAA\n", anchor, NOW)


def test_escaped_newlines_in_cert_are_accepted() -> None:
    anchor = signing.load_trust_anchor(certs.public_pem())
    escaped = certs.pem(certs.certificate()).replace("\n", "\\n")
    signing.trusted_response_key(escaped, anchor, NOW)


def test_non_rsa_private_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="RSA"):
        signing.load_private_key(ec_pem)
