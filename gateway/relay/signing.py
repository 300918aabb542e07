"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>`` (README "Refund events").

Headers on every POST: ``Refund-Gateway-Event-Id``, ``Refund-Gateway-Timestamp`` (Unix
seconds, when this attempt was signed) and ``Refund-Gateway-Signature``: ``v1=<hex>``,
one per secret, comma-separated, so a receiver keeps verifying while secrets rotate
(sign with the new and the old one until every receiver has the new). A receiver
recomputes the HMAC over the exact raw body, compares in constant time, and refuses a
timestamp more than ``TOLERANCE_SECONDS`` away from its clock (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

EVENT_ID_HEADER = "Refund-Gateway-Event-Id"
TIMESTAMP_HEADER = "Refund-Gateway-Timestamp"
SIGNATURE_HEADER = "Refund-Gateway-Signature"
ATTEMPT_HEADER = "Refund-Gateway-Attempt"
SCHEME = "v1"
TOLERANCE_SECONDS = 300


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str | bytes], timestamp: int, body: bytes) -> str:
    return ",".join(f"{SCHEME}={signature(s, timestamp, body)}" for s in secrets)


def verify(secret: str | bytes, headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """A receiver's check (headers looked up case-insensitively)."""
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    expected = signature(secret, int(stamp), body)
    offered = [part.strip().partition("=") for part in
               lower.get(SIGNATURE_HEADER.lower(), "").split(",")]
    return any(scheme == SCHEME and hmac.compare_digest(value, expected)
               for scheme, _, value in offered)
