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

    def certificate_chain_pem(self, common_name: str, serial: int) -> tuple[str, str, str]:
        """(leaf, middle, root) PEMs: this key's certificate issued by a fresh middle CA
        under a fresh root CA. UnionPay's ``signPubKeyCert`` is such a leaf: clients built
        on the ACP SDK trust it only through the middle and root certificates they are
        configured with (``CertUtil.VerifyCertificateChain``; CH §6)."""
        now = dt.datetime.now(dt.UTC)
        root_key, middle_key = KeyPair.generate(), KeyPair.generate()
        root_name = _name("Sandbox UnionPay Test Root CA")
        middle_name = _name("Sandbox UnionPay Test Middle CA")
        root = _issue(root_key.public, root_name, root_name, root_key, 1, now, ca=True)
        middle = _issue(middle_key.public, middle_name, root_name, root_key, 2, now, ca=True)
        leaf = _issue(self.public, _name(common_name), middle_name, middle_key, serial, now,
                      ca=False)
        leaf_pem, middle_pem, root_pem = (c.public_bytes(serialization.Encoding.PEM).decode()
                                          for c in (leaf, middle, root))
        return leaf_pem, middle_pem, root_pem


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sandbox")])


def _issue(public: rsa.RSAPublicKey, subject: x509.Name, issuer: x509.Name,
           issuer_key: KeyPair, serial: int, now: dt.datetime, *, ca: bool
           ) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(serial)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
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
        return cls(alipay_app=pair(), alipay_platform=pair(), wechat_merchant=pair(),
                   wechat_platform=pair(), unionpay_merchant=pair(), unionpay_platform=pair(),
                   wrong=pair(), apiv3_key=secrets.token_hex(16),
                   balance_hmac_key=secrets.token_hex(32))
