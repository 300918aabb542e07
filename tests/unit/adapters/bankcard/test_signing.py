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


NOW = datetime.now(UTC)
TEST_CN = "041@Z12@00040000:SIGN@00000062"          # UnionPay's test environment
PROD_CN = "041@Z12@中国银联股份有限公司@00000001"


class Chain:
    """A root -> middle -> leaf hierarchy made here with cryptography (not the sandbox)."""

    def __init__(self) -> None:
        self.root_key, self.middle_key = certs.other_key(), certs.other_key()
        self.root = certs.certificate(self.root_key, cn="UnionPay Test Root", ca=True)
        self.middle = certs.certificate(self.middle_key, issuer_key=self.root_key,
                                        issuer_cn="UnionPay Test Root",
                                        cn="UnionPay Test Middle", ca=True)

    def leaf(self, key: rsa.RSAPrivateKey = certs.KEY, cn: str = TEST_CN,
             **kw: object) -> str:
        return certs.pem(certs.certificate(key, issuer_key=self.middle_key,
                                           issuer_cn="UnionPay Test Middle", cn=cn,
                                           **kw))   # type: ignore[arg-type]

    def trust(self, validate_cn_name: bool = False) -> signing.ChainTrust:
        return signing.load_chain(certs.pem(self.middle), certs.pem(self.root),
                                  validate_cn_name=validate_cn_name)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


def test_leaf_trusted_through_middle_and_root(chain: Chain) -> None:
    key = signing.trusted_response_key(chain.leaf(), chain.trust(), NOW)
    assert key.public_numbers() == certs.KEY.public_key().public_numbers()


def test_a_rotated_leaf_from_the_same_middle_is_trusted_a_pin_is_not(chain: Chain) -> None:
    new_key = certs.other_key()
    rotated = chain.leaf(new_key)
    key = signing.trusted_response_key(rotated, chain.trust(), NOW)
    assert key.public_numbers() == new_key.public_key().public_numbers()
    pinned = signing.load_pin(chain.leaf())          # the old certificate, pinned
    with pytest.raises(signing.TrustError, match="pinned"):
        signing.trusted_response_key(rotated, pinned, NOW)


def test_leaf_from_another_ca_with_the_same_names_is_refused(chain: Chain) -> None:
    impostor = Chain()       # same root/middle names, other keys: only signatures differ
    with pytest.raises(signing.TrustError, match="not issued by the configured UnionPay "
                                                  "middle"):
        signing.trusted_response_key(impostor.leaf(), chain.trust(), NOW)
    # ... and a middle of the impostor's, configured by mistake, does not chain to our root
    mixed = signing.load_chain(certs.pem(impostor.middle), certs.pem(chain.root))
    with pytest.raises(signing.TrustError, match="not issued by the configured root"):
        signing.trusted_response_key(impostor.leaf(cn=PROD_CN), mixed, NOW)


def test_expired_leaf_or_middle_is_refused(chain: Chain) -> None:
    expired = chain.leaf(not_before=NOW - timedelta(days=30), days=10)
    with pytest.raises(signing.TrustError, match="signPubKeyCert is outside its validity"):
        signing.trusted_response_key(expired, chain.trust(), NOW)
    old_middle = certs.certificate(chain.middle_key, issuer_key=chain.root_key,
                                   issuer_cn="UnionPay Test Root", cn="UnionPay Test Middle",
                                   ca=True, not_before=NOW - timedelta(days=30), days=10)
    trust = signing.load_chain(certs.pem(old_middle), certs.pem(chain.root))
    with pytest.raises(signing.TrustError, match="middle certificate is outside"):
        signing.trusted_response_key(chain.leaf(cn=PROD_CN), trust, NOW)


@pytest.mark.parametrize(("cn", "production", "test_environment"), [
    (PROD_CN, True, True),
    (TEST_CN, False, True),                       # 00040000:SIGN only off production
    ("041@Z12@00040001:SIGN@00000062", False, False),
    ("041@Z12@中国银联股份有限公司有限@00000001", False, False),
    ("中国银联股份有限公司", False, False),          # no third @ field
    ("UnionPay", False, False),
])
def test_cn_rule(chain: Chain, cn: str, production: bool, test_environment: bool) -> None:
    leaf = chain.leaf(cn=cn)
    for validate, expected in ((True, production), (False, test_environment)):
        if expected:
            signing.trusted_response_key(leaf, chain.trust(validate), NOW)
        else:
            with pytest.raises(signing.TrustError, match="CN rule"):
                signing.trusted_response_key(leaf, chain.trust(validate), NOW)


def test_a_signature_by_the_trusted_leaf_verifies_and_by_another_key_not(chain: Chain
                                                                          ) -> None:
    signed = {**FIELDS, "signature": EXPECTED_SIGNATURE, "signPubKeyCert": chain.leaf()}
    signed["signature"] = signing.sign(signed, certs.KEY)
    assert signing.problem(signed, chain.trust(), NOW) is None
    forged = {**signed, "signature": signing.sign(signed, certs.other_key())}
    assert signing.problem(forged, chain.trust(), NOW) == "signature does not verify"
    assert signing.problem({**signed, "signPubKeyCert": ""}, chain.trust(),
                           NOW) == "no signPubKeyCert"


def test_load_chain_refuses_a_leaf_as_middle_or_root(chain: Chain) -> None:
    with pytest.raises(ValueError, match="not a CA"):
        signing.load_chain(chain.leaf(), certs.pem(chain.root))
    with pytest.raises(ValueError, match="not a CA"):
        signing.load_chain(certs.pem(chain.middle), chain.leaf())
    both = certs.pem(chain.middle) + certs.pem(Chain().middle)   # old and new middle
    assert len(signing.load_chain(both, certs.pem(chain.root)).middles) == 2


def test_pin_from_public_key_or_certificate() -> None:
    by_key = signing.load_pin(certs.public_pem())
    by_cert = signing.load_pin(certs.pem(certs.certificate()))
    assert by_key.public_key.public_numbers() == by_cert.public_key.public_numbers()


def test_response_cert_pinned_to_configured_key() -> None:
    pin = signing.load_pin(certs.public_pem())
    key = signing.trusted_response_key(certs.pem(certs.certificate()), pin, NOW)
    assert key.public_numbers() == certs.KEY.public_key().public_numbers()


def test_response_cert_with_another_key_is_refused() -> None:
    pin = signing.load_pin(certs.public_pem())
    forged = certs.pem(certs.certificate(certs.other_key()))
    with pytest.raises(signing.TrustError, match="pinned UnionPay public key"):
        signing.trusted_response_key(forged, pin, NOW)


def test_expired_or_garbage_response_cert_is_refused() -> None:
    pin = signing.load_pin(certs.public_pem())
    old = certs.certificate(not_before=NOW - timedelta(days=30), days=10)
    with pytest.raises(signing.TrustError, match="validity"):
        signing.trusted_response_key(certs.pem(old), pin, NOW)
    with pytest.raises(signing.TrustError, match="not a PEM"):
        signing.trusted_response_key("-----BEGIN CERTIFICATE-----\nAAAA\n", pin, NOW)


def test_escaped_newlines_in_cert_are_accepted(chain: Chain) -> None:
    escaped = chain.leaf().replace("\n", "\\n")
    signing.trusted_response_key(escaped, chain.trust(), NOW)


def test_non_rsa_private_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="RSA"):
        signing.load_private_key(ec_pem)
