"""Ed25519 keys for receipts: the signing key with its key id, the ring of public keys
that verify (current and earlier ones, so keys rotate), and the published key document.

A receipt names the key id that signed it; anyone holding the platform's published
public keys (``refund-gateway receipt keys``) checks it without any secret or database.
Private keys come only from settings (PEM PKCS#8, text or a path) and are never printed,
logged or written into a receipt. Key ids default to ``ed25519-`` + the first 16 hex
digits of the SHA-256 of the raw public key, so an id always names one key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.errors import ConfigurationError
from gateway.settings import GatewaySettings, pem_text

ALG: Final = "Ed25519"
SIGNING_KEY_SETTING: Final = "REFUND_GATEWAY_RECEIPTS__SIGNING_KEY"
KEY_ID_SETTING: Final = "REFUND_GATEWAY_RECEIPTS__KEY_ID"
PUBLIC_KEYS_SETTING: Final = "REFUND_GATEWAY_RECEIPTS__PUBLIC_KEYS"
KEYS_SCHEMA: Final = "refund-gateway/receipt-keys/v1"
_RAW_LEN: Final = 32


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def derived_key_id(public: Ed25519PublicKey) -> str:
    return "ed25519-" + hashlib.sha256(_raw(public)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One verifying key and the id receipts name it by."""

    key_id: str
    key: Ed25519PublicKey

    @property
    def raw_b64(self) -> str:
        return base64.b64encode(_raw(self.key)).decode("ascii")

    @property
    def pem(self) -> str:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo
                                     ).decode("ascii")

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """The current signing key. ``repr`` shows the key id only."""

    key_id: str
    private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key_id, self.private.public_key())

    def sign(self, data: bytes) -> str:
        """The signature over ``data``, base64 (88 characters)."""
        return base64.b64encode(self.private.sign(data)).decode("ascii")


def generate_private_pem() -> str:
    """A fresh Ed25519 private key as PEM PKCS#8 (sandbox and demo settings)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")


def private_key_from_pem(pem: str, setting: str = SIGNING_KEY_SETTING) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ConfigurationError(f"{setting}: not a readable PEM private key ({exc})",
                                 setting=setting) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{setting}: the key is not an Ed25519 key",
                                 setting=setting)
    return key


def signer_from_settings(settings: GatewaySettings) -> Signer:
    """The signing key; ``ConfigurationError`` naming the setting when there is none."""
    receipts = settings.receipts
    if receipts.signing_key is None or not receipts.signing_key.get_secret_value().strip():
        raise ConfigurationError(
            f"receipts need a signing key: set {SIGNING_KEY_SETTING} (an Ed25519 private "
            f"key, PEM; `refund-gateway sandbox serve --env-file` writes one)",
            setting=SIGNING_KEY_SETTING)
    private = private_key_from_pem(pem_text(receipts.signing_key, SIGNING_KEY_SETTING))
    key_id = receipts.key_id or derived_key_id(private.public_key())
    return Signer(key_id, private)


def public_key_from_text(text: str, setting: str = PUBLIC_KEYS_SETTING) -> Ed25519PublicKey:
    """A public key given as PEM (SubjectPublicKeyInfo) or as its 32 raw bytes in base64."""
    text = text.strip().replace("\\n", "\n")
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ConfigurationError(f"{setting}: not a readable PEM public key ({exc})",
                                     setting=setting) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError(f"{setting}: the key is not an Ed25519 key",
                                     setting=setting)
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _RAW_LEN:
        raise ConfigurationError(f"{setting}: neither a PEM public key nor 32 bytes of "
                                 "base64", setting=setting)
    return Ed25519PublicKey.from_public_bytes(raw)


def key_ring(settings: GatewaySettings) -> dict[str, PublicKey]:
    """Every key that verifies: the current signing key's, then the earlier ones."""
    ring: dict[str, PublicKey] = {}
    receipts = settings.receipts
    if receipts.signing_key is not None and receipts.signing_key.get_secret_value().strip():
        current = signer_from_settings(settings).public
        ring[current.key_id] = current
    for key_id, text in sorted(receipts.public_keys.items()):
        ring.setdefault(key_id, PublicKey(key_id, public_key_from_text(
            text, f"{PUBLIC_KEYS_SETTING}[{key_id}]")))
    return ring


def keys_document(settings: GatewaySettings) -> dict[str, Any]:
    """What ``receipt keys`` publishes: every verifying key, the current one marked."""
    ring = key_ring(settings)
    if not ring:
        raise ConfigurationError(f"no receipt keys configured: set {SIGNING_KEY_SETTING}",
                                 setting=SIGNING_KEY_SETTING)
    current = signer_from_settings(settings).key_id if settings.receipts.signing_key \
        else None
    return {"schema": KEYS_SCHEMA, "platform": settings.receipts.platform_name,
            "keys": [{"key_id": k.key_id, "alg": ALG, "public_key": k.raw_b64,
                      "public_key_pem": k.pem, "current": k.key_id == current}
                     for k in ring.values()]}


def ring_from_text(text: str, *, key_id: str | None = None) -> dict[str, PublicKey]:
    """Keys given to ``receipt verify``: a ``receipt keys`` JSON document, or one public
    key (PEM or base64), named ``key_id`` or by its derived id."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            raise ConfigurationError("the keys file is not JSON", setting="--keys") from None
        keys = doc.get("keys") if isinstance(doc, Mapping) else None
        if doc.get("schema") != KEYS_SCHEMA or not isinstance(keys, list):
            raise ConfigurationError(f"the keys file is not a {KEYS_SCHEMA} document",
                                     setting="--keys")
        ring: dict[str, PublicKey] = {}
        for entry in keys:
            if not isinstance(entry, Mapping) or entry.get("alg") != ALG:
                continue
            kid = str(entry.get("key_id") or "")
            ring[kid] = PublicKey(kid, public_key_from_text(str(entry.get("public_key") or ""),
                                                            "--keys"))
        return ring
    public = public_key_from_text(stripped, "--public-key")
    kid = key_id or derived_key_id(public)
    return {kid: PublicKey(kid, public)}

