"""UnionPay 5.1.0 ``signMethod=01`` signatures (CH §6): building, signing, verifying, and
which ``signPubKeyCert`` we trust (by chain to the configured middle and root with the
CN rule, the default, or a pinned key).

Pure: bytes and keys in, strings and booleans out; no HTTP, no settings, no clock reads
(the caller passes "now" for certificate validity). The steps copy the official SDK
(``SDKUtil.CoverMap2String`` -> ``SecureUtil.sha256X16`` -> ``signBySoft256``):
``string = "&".join(sorted k=v, every field but signature)``, ``digest = lowercase
sha256 hex of string``, ``signature = base64(SHA256withRSA(private key, digest as ASCII))``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

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


# -- trust in UnionPay's signing certificate (CH §6) ----------------------------------------
# The ACP SDK's CN rule (CertUtil.verifyCertificate / getIdentitiesFromCertficate): the CN is
# split at "@" and its third field names the owner. Production: 中国银联股份有限公司 only
# (acpsdk.ifValidateCNName=true, the default); UnionPay's test environment signs as
# 00040000:SIGN (e.g. CN=041@Z12@00040000:SIGN@00000062), accepted only when that check is
# off (acpsdk.ifValidateCNName=false, our ``validate_cn_name``).
UNIONPAY_CN = "中国银联股份有限公司"
TEST_ENVIRONMENT_CN = "00040000:SIGN"


@dataclass(frozen=True, slots=True)
class ChainTrust:
    """Trust by chain (the default; CH §6, the ACP SDK's ``verifyCertificateChain``).

    A response's ``signPubKeyCert`` is trusted when it is valid now, was issued by one of
    ``middles`` (valid now, a CA), which was issued by one of ``roots`` (the trust anchor:
    its own validity is not part of path validation, RFC 5280 §6.1), and its CN passes the
    CN rule. Any leaf UnionPay issues from the same middle is trusted, so a rotation of its
    signing certificate needs no configuration change.
    """

    roots: tuple[x509.Certificate, ...]
    middles: tuple[x509.Certificate, ...]
    validate_cn_name: bool = True


@dataclass(frozen=True, slots=True)
class PinnedKey:
    """Trust by pinning (explicit opt-in, ``trust = "pin"``): the response certificate must
    carry exactly this public key (a PEM key, or the key of a configured certificate).
    UnionPay's next signing certificate is refused until the pin is updated."""

    public_key: rsa.RSAPublicKey


Trust = ChainTrust | PinnedKey


def load_pin(pem: str) -> PinnedKey:
    """Parse a pinned ``unionpay_public_key``: PEM public key or X.509 certificate."""
    data = pem.encode("ascii")
    if b"-----BEGIN CERTIFICATE-----" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the UnionPay certificate must hold an RSA key")
        return PinnedKey(key)
    pub = serialization.load_pem_public_key(data)
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ValueError("the UnionPay public key must be RSA")
    return PinnedKey(pub)


def load_chain(middle_pem: str, root_pem: str, *, validate_cn_name: bool = True
               ) -> ChainTrust:
    """The configured middle and root certificates (each PEM may hold several, e.g. an old
    and a new middle during a change of UnionPay's CA); ValueError when one is missing or
    is not a CA certificate."""
    middles = tuple(x509.load_pem_x509_certificates(middle_pem.encode("ascii")))
    roots = tuple(x509.load_pem_x509_certificates(root_pem.encode("ascii")))
    for cert in (*middles, *roots):
        if not _is_ca(cert):
            raise ValueError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
    return ChainTrust(roots=roots, middles=middles, validate_cn_name=validate_cn_name)


def _is_ca(cert: x509.Certificate) -> bool:
    """RFC 5280 §4.2.1.9/§4.2.1.3: an issuer needs cA=TRUE and, if key usage is present,
    keyCertSign."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        return True


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, issuers: tuple[x509.Certificate, ...]
               ) -> x509.Certificate | None:
    """The issuer among ``issuers`` whose name AND signature match ``cert``."""
    for issuer in issuers:
        try:
            cert.verify_directly_issued_by(issuer)   # issuer name and signature
        except (ValueError, TypeError, InvalidSignature):
            continue
        return issuer
    return None


def owner(cert: x509.Certificate) -> str:
    """The CN rule's owner field: the third ``@`` field of the CN ('' when there is none)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    parts = str(names[0].value).split("@") if names else []
    return parts[2] if len(parts) > 2 else ""


@functools.lru_cache(maxsize=32)
def _load_response_cert(cert_pem: str) -> x509.Certificate:
    # The same signPubKeyCert comes with every answer: parse it once.
    return x509.load_pem_x509_certificate(cert_pem.replace("\\n", "\n").encode("ascii"))


def trusted_response_key(cert_pem: str, trust: Trust, now: datetime) -> rsa.RSAPublicKey:
    """The public key of a response's ``signPubKeyCert`` if we trust that certificate.

    Raises ``TrustError`` saying why not: not a certificate, not RSA, outside its validity,
    and then, by chain: not issued by a configured middle (or root), a middle outside its
    validity, a middle not issued by a configured root, a CN the CN rule refuses; pinned:
    another public key.
    """
    try:
        cert = _load_response_cert(cert_pem)
    except (ValueError, UnicodeEncodeError) as exc:
        raise TrustError("signPubKeyCert is not a PEM certificate") from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise TrustError("signPubKeyCert does not hold an RSA key")
    if not _valid_at(cert, now):
        raise TrustError("signPubKeyCert is outside its validity period")
    if isinstance(trust, PinnedKey):
        if key.public_numbers() != trust.public_key.public_numbers():
            raise TrustError("signPubKeyCert does not carry the pinned UnionPay public key")
        return key
    _check_chain(cert, trust, now)
    who = owner(cert)
    allowed = {UNIONPAY_CN} if trust.validate_cn_name else {UNIONPAY_CN, TEST_ENVIRONMENT_CN}
    if who not in allowed:
        raise TrustError(f"signPubKeyCert CN names {who or 'no owner'!r}, not UnionPay "
                         "(CN rule)")
    return key


def _check_chain(cert: x509.Certificate, trust: ChainTrust, now: datetime) -> None:
    if _issued_by(cert, trust.roots) is not None:
        return                      # issued by the root itself (a path without a middle)
    middle = _issued_by(cert, trust.middles)
    if middle is None:
        raise TrustError("signPubKeyCert is not issued by the configured UnionPay middle "
                         "certificate")
    if not _valid_at(middle, now):
        raise TrustError("the UnionPay middle certificate is outside its validity period")
    if _issued_by(middle, trust.roots) is None:
        raise TrustError("the UnionPay middle certificate is not issued by the configured "
                         "root certificate")


def problem(fields: Mapping[str, str], trust: Trust, now: datetime) -> str | None:
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
