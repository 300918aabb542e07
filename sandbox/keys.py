"""Fresh RSA keys for one sandbox run (never real keys), and the signing helpers every
channel module uses (PKCS#1 v1.5 with SHA-256, which all three channels use)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    def private_pem(self, pkcs8: bool = True) -> str:
        fmt = (serialization.PrivateFormat.PKCS8 if pkcs8
               else serialization.PrivateFormat.TraditionalOpenSSL)
        return self.private.private_bytes(serialization.Encoding.PEM, fmt,
                                          serialization.NoEncryption()).decode()

    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign_b64(self, message: bytes) -> str:
        return base64.b64encode(
            self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()

    def certificate_pem(self, common_name: str, serial: int) -> str:
        """A self-signed certificate (UnionPay's ``signPubKeyCert``)."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sandbox")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.public).serial_number(serial)
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .sign(self.private, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def dn(common_name: str, *, ou: str | None = None, o: str | None = None,
       c: str | None = None) -> x509.Name:
    """A name encoded C, O, OU, CN (the order CAs use), so its RFC 4514 / Java RFC 2253
    string reads ``CN=…,OU=…,O=…,C=…`` (Alipay's certificate SN is computed over it)."""
    attrs = [(NameOID.COUNTRY_NAME, c), (NameOID.ORGANIZATION_NAME, o),
             (NameOID.ORGANIZATIONAL_UNIT_NAME, ou), (NameOID.COMMON_NAME, common_name)]
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs if value])


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class TestCA:
    """A test certificate authority: its key and certificate; issues CAs and leaves.

    Validity is "now - 1 day" to "now + ``days``" unless given, so a leaf can be made
    expired (``not_after`` in the past) to test that clients refuse it."""

    key: KeyPair
    cert: x509.Certificate

    @classmethod
    def root(cls, name: x509.Name, serial: int = 1, days: int = 3650) -> TestCA:
        key = KeyPair.generate()
        return cls(key, _issue(key.public, name, name, key, serial, ca=True, days=days))

    @property
    def name(self) -> x509.Name:
        return self.cert.subject

    @property
    def pem(self) -> str:
        return pem(self.cert)

    def issue_ca(self, name: x509.Name, serial: int, days: int = 1825) -> TestCA:
        key = KeyPair.generate()
        return TestCA(key, _issue(key.public, name, self.name, self.key, serial, ca=True,
                                  days=days))

    def issue(self, public: rsa.RSAPublicKey, subject: x509.Name, serial: int, *,
              days: int = 365, not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None) -> x509.Certificate:
        """An end-entity certificate for ``public`` (digital signature)."""
        return _issue(public, subject, self.name, self.key, serial, ca=False, days=days,
                      not_before=not_before, not_after=not_after)


def _issue(public: rsa.RSAPublicKey, subject: x509.Name, issuer: x509.Name,
           issuer_key: KeyPair, serial: int, *, ca: bool, days: int = 365,
           not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
           ) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                          encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(serial)
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(issuer_key.private, hashes.SHA256()))


def verify_b64(public: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64), message, padding.PKCS1v15(),
                      hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def load_public_pem(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


@dataclass(frozen=True)
class SandboxKeys:
    """Every key of one run: the merchant's (client) side and the channels' side."""

    alipay_app: KeyPair
    alipay_platform: KeyPair
    alipay_cert_app: KeyPair    # the certificate-mode app (sandbox/alipay.py "Certificates")
    wechat_merchant: KeyPair
    wechat_platform: KeyPair
    unionpay_merchant: KeyPair
    unionpay_platform: KeyPair
    wrong: KeyPair              # signs answers under the bad_signature fault
    apiv3_key: str
    balance_hmac_key: str

    @classmethod
    def generate(cls) -> SandboxKeys:
        pair = KeyPair.generate
        return cls(alipay_app=pair(), alipay_platform=pair(), alipay_cert_app=pair(),
                   wechat_merchant=pair(),
                   wechat_platform=pair(), unionpay_merchant=pair(), unionpay_platform=pair(),
                   wrong=pair(), apiv3_key=secrets.token_hex(16),
                   balance_hmac_key=secrets.token_hex(32))
