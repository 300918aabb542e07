"""Canonical JSON, a receipt's digest and signature, and checking a JSON receipt file.

Canonical form: sorted keys, no whitespace, UTF-8, non-ASCII kept as is. A receipt file
(schema v2) *is* the canonical form of its fields plus ``signature`` = {alg, key_id,
sha256, value}: ``sha256`` is the SHA-256 of the canonical fields, ``value`` the Ed25519
signature over the same bytes, so changing any one character (a value, a key, the
signature, even spacing) fails ``verify``, and checking needs only the public key of
``key_id``. Receipts issued before (schema v1, ``hmac_sha256``) keep verifying with the
HMAC key (``settings.receipts.hmac_key``). No key is ever printed or put in a receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from pydantic import SecretStr

from gateway.errors import ConfigurationError
from gateway.settings import GatewaySettings
from reconciliation.receipts.signing import ALG, PublicKey, Signer

HMAC_KEY_SETTING: Final = "REFUND_GATEWAY_RECEIPTS__HMAC_KEY"
LEGACY_FIELD: Final = "hmac_sha256"
SIGNATURE_FIELD: Final = "signature"
_HEX: Final = re.compile(r"[0-9a-f]{64}")
_MIN_KEY_BYTES: Final = 16

Key = SecretStr | str | bytes


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``). No floats expected."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha256_hex(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(fields))).hexdigest()


def sign(fields: Mapping[str, Any], signer: Signer) -> dict[str, str]:
    """The ``signature`` object of a v2 receipt with these fields."""
    body = canonical_json(dict(fields))
    return {"alg": ALG, "key_id": signer.key_id, "sha256": hashlib.sha256(body).hexdigest(),
            "value": signer.sign(body)}


def clean_digest(typed: str) -> str | None:
    """A digest as printed (groups, upper case, dashes or colons forgiven) as 64 hex."""
    cleaned = re.sub(r"[\s:-]", "", typed).lower()
    return cleaned if _HEX.fullmatch(cleaned) else None


# -- HMAC receipts issued before Ed25519 (schema v1): verified, never made ---------------
def key_bytes(key: Key | None) -> bytes:
    """The HMAC key as bytes; ``ConfigurationError`` naming the setting when it is unusable."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not key:
        raise ConfigurationError(f"HMAC receipts (v1) verify with {HMAC_KEY_SETTING}: "
                                 "it is not set", setting=HMAC_KEY_SETTING)
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigurationError(f"{HMAC_KEY_SETTING} is too short (at least "
                                 f"{_MIN_KEY_BYTES} bytes)", setting=HMAC_KEY_SETTING)
    return key


def hmac_key_of(settings: GatewaySettings) -> bytes | None:
    key = settings.receipts.hmac_key
    return key_bytes(key) if key is not None and key.get_secret_value() else None


def digest(fields: Mapping[str, Any], key: Key) -> str:
    """HMAC-SHA256 (lowercase hex) over the canonical JSON of ``fields`` (v1 receipts)."""
    return hmac.new(key_bytes(key), canonical_json(dict(fields)), hashlib.sha256).hexdigest()


def verify_digest(fields: Mapping[str, Any], typed_digest: str, key: Key) -> bool:
    """Does ``typed_digest`` (as printed on a v1 receipt) sign ``fields``?"""
    cleaned = clean_digest(typed_digest)
    return cleaned is not None and hmac.compare_digest(digest(fields, key), cleaned)


# -- checking a receipt file ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of checking a JSON receipt: ``ok`` and, when not, why."""

    ok: bool
    reason: str
    refund_id: str | None = None
    digest: str | None = None        # the v2 SHA-256, or the v1 HMAC
    alg: str | None = None           # Ed25519 | HMAC-SHA256
    key_id: str | None = None
    version: int | None = None
    schema: str | None = None

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(json_bytes: bytes, keys: Mapping[str, PublicKey] | None = None, *,
           hmac_key: Key | None = None) -> VerifyResult:
    """Check a JSON receipt file: canonical bytes, digest, and the signature under its
    key id in ``keys`` (a v1 receipt: its HMAC under ``hmac_key``)."""
    body = json_bytes[:-1] if json_bytes.endswith(b"\n") else json_bytes   # editors add one
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return VerifyResult(False, "not a JSON receipt (unreadable)")
    if not isinstance(doc, dict):
        return VerifyResult(False, "not a receipt: not a JSON object")
    refund_id = doc.get("refund_id") if isinstance(doc.get("refund_id"), str) else None
    version = doc.get("version") if isinstance(doc.get("version"), int) else None
    schema = doc.get("schema") if isinstance(doc.get("schema"), str) else None
    common = {"refund_id": refund_id, "version": version, "schema": schema}
    if isinstance(doc.get(LEGACY_FIELD), str):
        return _verify_hmac(doc, body, hmac_key, common)
    sig = doc.get(SIGNATURE_FIELD)
    if not isinstance(sig, dict) or not all(isinstance(sig.get(k), str) for k in
                                            ("alg", "key_id", "sha256", "value")):
        return VerifyResult(False, f"not a receipt: no {SIGNATURE_FIELD}", **common)
    stated, key_id = sig["sha256"], sig["key_id"]
    facts: dict[str, Any] = {**common, "digest": stated, "alg": sig["alg"], "key_id": key_id}
    if sig["alg"] != ALG:
        return VerifyResult(False, f"unknown signature algorithm {sig['alg']!r}", **facts)
    fields = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
    try:
        signed = canonical_json(fields)
    except ValueError:   # NaN/Infinity smuggled in: never canonical
        return VerifyResult(False, "not in canonical form (the file was edited)", **facts)
    if not hmac.compare_digest(hashlib.sha256(signed).hexdigest(), stated):
        return VerifyResult(False, "digest does not match the content (altered)", **facts)
    key = (keys or {}).get(key_id)
    if key is None:
        return VerifyResult(False, f"no public key with id {key_id!r} (publish it with "
                            "`refund-gateway receipt keys`, give it with --keys)", **facts)
    try:
        raw_sig = base64.b64decode(sig["value"], validate=True)
    except (binascii.Error, ValueError):
        raw_sig = b""
    # Only the one base64 spelling of the signature: the last character before "=="
    # carries 4 bits nobody reads, so another spelling of the same bytes is an edit too.
    if base64.b64encode(raw_sig).decode("ascii") != sig["value"]:
        raw_sig = b""
    if not key.verify(raw_sig, signed):
        return VerifyResult(False, "signature does not match (altered, or signed by "
                            "another key)", **facts)
    if canonical_json({**fields, SIGNATURE_FIELD: sig}) != body:
        return VerifyResult(False, "not in canonical form (the file was edited)", **facts)
    return VerifyResult(True, f"receipt verified (Ed25519, key {key_id})", **facts)


def _verify_hmac(doc: dict[str, Any], body: bytes, key: Key | None,
                 common: dict[str, Any]) -> VerifyResult:
    stated = doc.pop(LEGACY_FIELD)
    facts = {**common, "digest": stated, "alg": "HMAC-SHA256"}
    if key is None:
        return VerifyResult(False, f"an HMAC receipt (v1): it verifies with "
                            f"{HMAC_KEY_SETTING}, which is not set", **facts)
    try:
        expected = digest(doc, key)
    except ValueError:
        return VerifyResult(False, "not in canonical form (the file was edited)", **facts)
    if not hmac.compare_digest(expected, stated):
        return VerifyResult(False, "digest does not match the content (altered, or another "
                            "key)", **facts)
    if canonical_json({**doc, LEGACY_FIELD: stated}) != body:
        return VerifyResult(False, "not in canonical form (the file was edited)", **facts)
    return VerifyResult(True, "receipt verified (HMAC-SHA256, issued before Ed25519)",
                        **facts)
