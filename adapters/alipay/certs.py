"""Alipay public-key-certificate mode (CHANNELS-ADDENDUM §5): certificate SNs and trust.

Owns: reading PEM certificate files (several certificates each, CRLF or not, blank lines or
not), the certificate SN Alipay computes (lower-case hex MD5 of the issuer DN as Java's
``X500Principal.getName()`` writes it, RFC 2253, followed by the decimal serial; Alipay's
Java SDK ``AntCertificationUtil.getCertSN``), the root SN (the SNs of the root file's
RSA-signed certificates, signature OID ``1.2.840.113549.1.1.*``, joined by ``_`` in file
order: ``getRootCertSN``), and whether a downloaded Alipay certificate chains to the
configured roots (``AntCertificationUtil.isTrusted``). Pure: no SDK, no I/O, no clock
(the caller passes "now").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

RSA_SIGNATURES: Final = "1.2.840.113549.1.1"     # Java: getSigAlgOID().startsWith(...)
_PEM: Final = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                         re.DOTALL)
# The keywords Java's RFC 2253 form writes by name (X500Principal.getName()); every other
# attribute is written as <dotted OID>=#<hex of its DER encoding> (RFC 2253 §2.4).
_RFC2253_KEYWORDS: Final = {
    NameOID.COMMON_NAME: "CN", NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID",
}


class CertError(ValueError):
    """A certificate file or chain we cannot use; says why, never echoes key bytes."""


@dataclass(frozen=True, slots=True)
class CertificateMode:
    """The three files of an app in certificate mode, as PEM text."""

    app_cert: str              # appCertPublicKey_<app_id>.crt
    alipay_cert: str           # alipayCertPublicKey_RSA2.crt (Alipay's, then its issuer)
    alipay_root_cert: str      # alipayRootCert.crt


def pem_blocks(text: str) -> list[str]:
    """The PEM certificates in ``text``, in order, with LF line ends."""
    blocks = _PEM.findall(text.replace("\r\n", "\n").replace("\r", "\n"))
    if not blocks:
        raise CertError("no PEM certificate in the file")
    return [str(b) for b in blocks]


def normalized(text: str) -> str:
    """``text``'s certificates joined by a blank line: python-alipay-sdk splits a root file
    on ``"\\n\\n"``, and a CRLF file or one without blank lines gives it no root SN at all
    (CHANNELS-ADDENDUM §5)."""
    return "\n\n".join(pem_blocks(text)) + "\n"


def load(text: str) -> list[x509.Certificate]:
    """Every certificate of ``text`` (CertError if one does not parse)."""
    try:
        return [x509.load_pem_x509_certificate(b.encode("ascii")) for b in pem_blocks(text)]
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertError(f"a certificate does not parse ({type(exc).__name__})") from None


def load_roots(text: str) -> list[x509.Certificate]:
    """The root file's certificates this cryptography parses (the others, e.g. Alipay's
    ECDSA root, cannot be the issuer of an RSA Alipay certificate we verify anyway)."""
    roots = []
    for block in pem_blocks(text):
        try:
            roots.append(x509.load_pem_x509_certificate(block.encode("ascii")))
        except ValueError:
            continue
    if not roots:
        raise CertError("no root certificate parses")
    return roots


def issuer_dn(cert: x509.Certificate) -> str:
    """The issuer as Java's ``getIssuerX500Principal().getName()`` (RFC 2253) writes it."""
    rdns = []
    for rdn in reversed(list(cert.issuer.rdns)):
        parts = []
        for attr in rdn:
            keyword = _RFC2253_KEYWORDS.get(attr.oid)
            if keyword is None:
                parts.append(f"{attr.oid.dotted_string}=#{_der_value(attr).hex()}")
            else:
                parts.append(f"{keyword}={_escape(str(attr.value))}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _escape(value: str) -> str:
    """RFC 2253 §2.4 escaping, as X500Principal applies it."""
    out = "".join(f"\\{ch}" if ch in ',+"\\<>;' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _der_value(attr: x509.NameAttribute[str | bytes]) -> bytes:
    """The DER TLV of an attribute value (its ASN.1 string type, then the bytes)."""
    tag = int(attr._type.value)
    value = attr.value if isinstance(attr.value, bytes) else attr.value.encode(
        "utf-16-be" if tag == 30 else "utf-8")          # 30: BMPString
    size = len(value)
    length = bytes([size]) if size < 0x80 else (
        bytes([0x80 | ((size.bit_length() + 7) // 8)])
        + size.to_bytes((size.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + length + value


def cert_sn(cert: x509.Certificate) -> str:
    """``AntCertificationUtil.getCertSN``: MD5 hex of issuer DN + decimal serial."""
    return hashlib.md5((issuer_dn(cert) + str(cert.serial_number)).encode("utf-8"),
                       usedforsecurity=False).hexdigest()


def first_sn(text: str) -> str:
    """The SN of the first certificate of a file (the app's, or Alipay's own)."""
    return cert_sn(load(pem_blocks(text)[0])[0])


def root_sn(text: str) -> str:
    """``getRootCertSN``: the SNs of the RSA-signed certificates of the root file, joined
    by ``_`` in file order; other algorithms (SM2, ECDSA) are skipped, also when this
    cryptography cannot parse them (Alipay's ECDSA root has parameters it refuses)."""
    sns = []
    for block in pem_blocks(text):
        der = _der(block)
        if not _signature_oid(der).startswith(RSA_SIGNATURES + "."):
            continue
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertError(f"an RSA root certificate does not parse ({exc})") from None
        sns.append(cert_sn(cert))
    if not sns:
        raise CertError("the root certificate file holds no RSA certificate")
    return "_".join(sns)


def _der(block: str) -> bytes:
    import base64  # noqa: PLC0415 - only here

    body = "".join(line for line in block.splitlines() if not line.startswith("-----"))
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        raise CertError("a PEM block is not base64") from None


def _signature_oid(der: bytes) -> str:
    """The outer ``signatureAlgorithm`` OID of a DER certificate, read without parsing
    the rest: Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }."""
    try:
        _, body = _tlv(der, 0, 0x30)                     # Certificate
        _, after_tbs = _tlv(der, body, 0x30, skip=True)  # tbsCertificate
        _, alg = _tlv(der, after_tbs, 0x30)              # AlgorithmIdentifier
        oid_end, oid = _tlv(der, alg, 0x06)
        return _decode_oid(der[oid:oid_end])
    except (IndexError, ValueError):
        raise CertError("a certificate is not DER") from None


def _tlv(der: bytes, at: int, tag: int, *, skip: bool = False) -> tuple[int, int]:
    """At ``at`` a TLV with ``tag``: (end of it, start of its value); with ``skip``,
    (end, end) - the position after it."""
    if der[at] != tag:
        raise ValueError("unexpected tag")
    size, start = der[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        size, start = int.from_bytes(der[start:start + count], "big"), start + count
    end = start + size
    if end > len(der):
        raise ValueError("truncated")
    return (end, end) if skip else (end, start)


def _decode_oid(raw: bytes) -> str:
    arcs, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _valid(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _may_issue(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return True          # Java's isTrusted does not ask; an old v1 CA has no extension


def verify_chain(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                 now: datetime) -> None:
    """``AntCertificationUtil.isTrusted``: ``chain[0]`` (Alipay's certificate) up through
    the other certificates of its file to one issued by a root of ``roots``; every
    certificate of the path valid at ``now``. Raises ``CertError`` saying where it broke."""
    if not chain:
        raise CertError("no certificate")
    current, rest = chain[0], list(chain[1:])
    for _ in range(len(chain)):
        if not _valid(current, now):
            raise CertError(f"{current.subject.rfc4514_string()} is outside its validity")
        if any(_signed_by(current, root) for root in roots):
            return
        issuer = next((c for c in rest if _signed_by(current, c) and _may_issue(c)), None)
        if issuer is None:
            break
        rest.remove(issuer)
        current = issuer
    raise CertError("the Alipay certificate does not chain to the configured root "
                    "certificates")


def public_key_pem(cert: x509.Certificate) -> str:
    return cert.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
