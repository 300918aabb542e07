"""A throw-away certificate authority for the Alipay certificate-mode tests, made here with
cryptography (not the sandbox's): names encoded C, O, OU, CN like Ant's."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def name(cn: str, *, ou: str | None = None, o: str | None = None,
         c: str | None = None) -> x509.Name:
    pairs = [(NameOID.COUNTRY_NAME, c), (NameOID.ORGANIZATION_NAME, o),
             (NameOID.ORGANIZATIONAL_UNIT_NAME, ou), (NameOID.COMMON_NAME, cn)]
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in pairs if v])


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _build(subject: x509.Name, issuer: x509.Name, public: rsa.RSAPublicKey,
           signer: rsa.RSAPrivateKey, *, ca: bool, serial: int | None = None,
           not_before: datetime | None = None, days: int = 365) -> x509.Certificate:
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(serial or x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))


@dataclass(frozen=True)
class CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def root(cls, subject: x509.Name) -> CA:
        key = new_key()
        return cls(key, _build(subject, subject, key.public_key(), key, ca=True,
                               days=3650))

    def ca(self, subject: x509.Name) -> CA:
        key = new_key()
        return CA(key, _build(subject, self.cert.subject, key.public_key(), self.key,
                              ca=True, days=1825))

    def leaf(self, subject: x509.Name, *, key: rsa.RSAPrivateKey | None = None,
             serial: int | None = None, not_before: datetime | None = None,
             days: int = 365) -> x509.Certificate:
        public = (key or new_key()).public_key()
        return _build(subject, self.cert.subject, public, self.key, ca=False,
                      serial=serial, not_before=not_before, days=days)

    @property
    def pem(self) -> str:
        return pem(self.cert)


@functools.cache
def ecdsa_root() -> str:
    """A self-signed ECDSA-with-SHA384 root, as Alipay's root file holds one."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = name("Test Root E1", ou="Certification Authority", o="Test", c="CN")
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(key, hashes.SHA384()))
    return pem(cert)
