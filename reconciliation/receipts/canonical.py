"""Canonical JSON and the HMAC-SHA256 that makes a receipt tamper-evident.

Canonical form: sorted keys, no whitespace, UTF-8, non-ASCII kept as is. The JSON receipt
file *is* the canonical form of ``fields() + digest``, byte for byte, so changing any one
character of it (a value, a key, the digest, even spacing) fails ``verify``. The key comes
from ``settings.receipts.hmac_key``; it is never printed, logged or put in a receipt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from gateway.errors import ConfigurationError
from gateway.settings import GatewaySettings
from reconciliation.receipts.model import DIGEST_FIELD

KEY_SETTING: Final = "REFUND_GATEWAY_RECEIPTS__HMAC_KEY"
_HEX: Final = re.compile(r"[0-9a-f]{64}")
_MIN_KEY_BYTES: Final = 16

Key = SecretStr | str | bytes


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``). No floats expected."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def key_bytes(key: Key | None) -> bytes:
    """The HMAC key as bytes; ``ConfigurationError`` naming the setting when it is unusable."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not key:
        raise ConfigurationError(f"receipts need an HMAC key: set {KEY_SETTING}",
                                 setting=KEY_SETTING)
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigurationError(f"{KEY_SETTING} is too short (at least {_MIN_KEY_BYTES} "
                                 "bytes)", setting=KEY_SETTING)
    return key


def key_from_settings(settings: GatewaySettings) -> bytes:
    return key_bytes(settings.receipts.hmac_key)


def digest(fields: Mapping[str, Any], key: Key) -> str:
    """HMAC-SHA256 (lowercase hex) over the canonical JSON of ``fields``."""
    return hmac.new(key_bytes(key), canonical_json(dict(fields)), hashlib.sha256).hexdigest()


def verify_digest(fields: Mapping[str, Any], typed_digest: str, key: Key) -> bool:
    """Does ``typed_digest`` (as printed, spaces and case forgiven) sign ``fields``?"""
    cleaned = re.sub(r"[\s:-]", "", typed_digest).lower()
    if not _HEX.fullmatch(cleaned):
        return False
    return hmac.compare_digest(digest(fields, key), cleaned)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of checking a JSON receipt: ``ok`` and, when not, why."""

    ok: bool
    reason: str
    refund_id: str | None = None
    digest: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def verify(json_bytes: bytes, key: Key) -> VerifyResult:
    """Check a JSON receipt file: canonical bytes, and its digest signs the rest."""
    body = json_bytes[:-1] if json_bytes.endswith(b"\n") else json_bytes   # editors add one
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return VerifyResult(False, "not a JSON receipt (unreadable)")
    if not isinstance(doc, dict) or not isinstance(doc.get(DIGEST_FIELD), str):
        return VerifyResult(False, f"not a receipt: no {DIGEST_FIELD}")
    refund_id = doc.get("refund_id") if isinstance(doc.get("refund_id"), str) else None
    stated = doc.pop(DIGEST_FIELD)
    try:
        expected = digest(doc, key)
    except ValueError:   # NaN/Infinity smuggled in: never canonical
        return VerifyResult(False, "not in canonical form (the file was edited)", refund_id)
    if not hmac.compare_digest(expected, stated):
        return VerifyResult(False, "digest does not match the content (altered, or another "
                            "key)", refund_id, stated)
    if canonical_json({**doc, DIGEST_FIELD: stated}) != body:
        return VerifyResult(False, "not in canonical form (the file was edited)",
                            refund_id, stated)
    return VerifyResult(True, "receipt verified", refund_id, stated)
