"""Test certificates built at run time around the fixed key (validity is relative to now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from adapters.bankcard import signing
from tests.unit.adapters.bankcard.keys import TEST_KEY_PEM

KEY = signing.load_private_key(TEST_KEY_PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(key: rsa.RSAPrivateKey = KEY, *, issuer_key: rsa.RSAPrivateKey | None = None,
                issuer_cn: str | None = None, cn: str = "UnionPay test signing",
                not_before: datetime | None = None, days: int = 365,
                ca: bool = False) -> x509.Certificate:
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn)).issuer_name(_name(issuer_cn or cn))
               .public_key(key.public_key()).serial_number(69629715588)
               .not_valid_before(start).not_valid_after(start + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def public_pem(key: rsa.RSAPrivateKey = KEY) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
