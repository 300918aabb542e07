"""UnionPay 5.1.0 ``signMethod=01`` signatures (CH §6): building, signing, verifying.

Pure: bytes and keys in, strings and booleans out; no HTTP, no settings, no clock reads
(the caller passes "now" for certificate validity). The steps copy the official SDK
(``SDKUtil.CoverMap2String`` -> ``SecureUtil.sha256X16`` -> ``signBySoft256``):
``string = "&".join(sorted k=v, every field but signature)``, ``digest = lowercase
sha256 hex of string``, ``signature = base64(SHA256withRSA(private key, digest as ASCII))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIGNATURE_FIELD = "signature"
CERT_FIELD = "signPubKeyCert"


class TrustError(ValueError):
    """The response certificate is not one we trust; says why, never echoes key bytes."""


def string_to_sign(fields: Mapping[str, str]) -> str:
    """Sorted ``k=v`` pairs of every field except ``signature``, joined by ``&``.

    Values are taken verbatim (not URL-encoded): UnionPay signs the raw values.
    """
    return "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != SIGNATURE_FIELD)


def digest_hex(fields: Mapping[str, str]) -> str:
    """Lowercase SHA-256 hex of ``string_to_sign`` encoded UTF-8 (``sha256X16``)."""
    return hashlib.sha256(string_to_sign(fields).encode("utf-8")).hexdigest()


def sign(fields: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> str:
    """Base64 SHA256withRSA (PKCS#1 v1.5) over the ASCII bytes of ``digest_hex``."""
    raw = private_key.sign(digest_hex(fields).encode("ascii"), padding.PKCS1v15(),
                           hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def verify(fields: Mapping[str, str], public_key: rsa.RSAPublicKey) -> bool:
    """Whether ``fields["signature"]`` is UnionPay's signature over the other fields."""
    encoded = fields.get(SIGNATURE_FIELD, "")
    if not encoded:
        return False
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(raw, digest_hex(fields).encode("ascii"), padding.PKCS1v15(),
                          hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# -- keys and certificates ------------------------------------------------------------------
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """An unencrypted PEM RSA private key (PKCS#8 or PKCS#1); ValueError otherwise."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the UnionPay signing key must be RSA")
    return key


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """The configured UnionPay key: a bare public key (pinned) or a certificate.

    A certificate anchor is trusted both as a pin (same public key as the response's
    ``signPubKeyCert``) and as an issuer (the response cert is directly signed by it).
    """

    public_key: rsa.RSAPublicKey
    certificate: x509.Certificate | None = None


def load_trust_anchor(pem: str) -> TrustAnchor:
    """Parse the configured ``unionpay_public_key``: PEM public key or X.509 certificate."""
    data = pem.encode("ascii")
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificate(data)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the UnionPay certificate must hold an RSA key")
        return TrustAnchor(key, cert)
    pub = serialization.load_pem_public_key(data)
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ValueError("the UnionPay public key must be RSA")
    return TrustAnchor(pub)


def _same_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


def trusted_response_key(cert_pem: str, anchor: TrustAnchor, now: datetime
                         ) -> rsa.RSAPublicKey:
    """The public key of a response's ``signPubKeyCert`` if we trust that certificate.

    Trusted when it is valid at ``now`` and either carries the anchor's public key
    (pinning: what the sandbox exercises) or is directly issued by the anchor
    certificate. Production additionally needs the full UnionPay chain (root -> middle,
    CN check): configure the middle certificate as the anchor. Raises ``TrustError``.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.replace("\\n", "\n").encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise TrustError("signPubKeyCert is not a PEM certificate") from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise TrustError("signPubKeyCert does not hold an RSA key")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TrustError("signPubKeyCert is outside its validity period")
    if _same_key(key, anchor.public_key):
        return key
    if anchor.certificate is not None:
        try:
            cert.verify_directly_issued_by(anchor.certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise TrustError("signPubKeyCert is not issued by the configured "
                             "UnionPay certificate") from exc
        return key
    raise TrustError("signPubKeyCert does not carry the configured UnionPay public key")


def problem(fields: Mapping[str, str], trust: TrustAnchor, now: datetime) -> str | None:
    """Why ``fields`` do not carry a valid UnionPay signature, or None when they do."""
    cert = fields.get(CERT_FIELD, "")
    if not cert:
        return "no signPubKeyCert"
    if not fields.get(SIGNATURE_FIELD):
        return "no signature"
    try:
        key = trusted_response_key(cert, trust, now)
    except TrustError as exc:
        return str(exc)
    if not verify(fields, key):
        return "signature does not verify"
    return None
