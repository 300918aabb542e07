"""WeChat Pay platform certificates (addendum §3, CH §2.5): the download decoded, the cache,
and when to fetch again.

Owns: decoding ``GET /v3/certificates`` by its exact keys (``serial_no``,
``effective_time``, ``expire_time``, ``encrypt_certificate.{algorithm, nonce,
associated_data, ciphertext}``; the official example's ``"effective_time "`` with a
trailing space is a typo of the document, not a field), the check that each decrypted
certificate carries the serial it is listed under, the cache keyed by serial (expired
ones dropped), which certificate encrypts (the latest effective one), and the refresh
rules. Must not do I/O or hold keys: ``client`` fetches and decrypts (the SDK's
``aes_decrypt`` with the API v3 key is passed in) and hands the answer here.

Refresh rules: a successful download is good for ``refresh_seconds`` (WeChat: refresh
at least every 12 h, a new certificate is listed 24 h before it is used; wechatpay-go
refreshes every 24 h and advises under 2 days); hourly once the last certificate has
less than ``refresh_seconds`` to live; after a failed download, or for a serial not in
the cache, at most once per ``retry_seconds`` (an unknown serial in a forged
notification must not turn every request into a download: wechatpayv3 fetches on every
miss).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# x509 serials are at most 20 bytes: WeChat writes them as up to 40 upper-case hex digits.
SERIAL: Final = re.compile(r"[0-9A-Fa-f]{1,40}")
ALGORITHM: Final = "AEAD_AES_256_GCM"
ASSOCIATED_DATA: Final = "certificate"
ENTRY_KEYS: Final = ("serial_no", "effective_time", "expire_time", "encrypt_certificate")
ENCRYPTION_KEYS: Final = ("algorithm", "nonce", "associated_data", "ciphertext")
EXPIRING_RECHECK_SECONDS: Final = 3600.0

# (nonce, ciphertext, associated_data) -> the PEM text, or None when the GCM tag fails
Decrypt = Callable[[str, str, str], str | None]


@dataclass(frozen=True, slots=True)
class PlatformCertificate:
    """One platform certificate as listed: serial (upper-case hex), the x509 object, when
    WeChat starts using it (``effective_at``) and when it expires."""

    serial_no: str
    certificate: x509.Certificate
    effective_at: datetime
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        cert = self.certificate
        return cert.not_valid_before_utc <= now <= min(cert.not_valid_after_utc,
                                                       self.expires_at)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def serial_of(certificate: x509.Certificate) -> str:
    """The serial as WeChat writes it (and as wechatpayv3 sends it: ``hex(n)[2:].upper()``)."""
    return f"{certificate.serial_number:X}"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def decode(doc: Any, decrypt: Decrypt, now: datetime
           ) -> tuple[list[PlatformCertificate], list[str]]:
    """The certificates of a ``/v3/certificates`` answer valid at ``now``, and why each
    other entry was left out (serial and reason: never certificate text or ciphertext).

    An entry without the exact keys is skipped, as wechatpayv3 does; one whose algorithm
    is not AEAD_AES_256_GCM (an SM2 listing), whose GCM tag fails (another API v3 key),
    whose content is not an RSA certificate or is listed under another serial than its
    own is skipped too. ``ValueError`` when the answer has no ``data`` list at all.
    """
    data = doc.get("data") if isinstance(doc, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("certificates answer without a data list")
    found: list[PlatformCertificate] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        listed = str(item.get("serial_no"))[:40] if isinstance(item, Mapping) else "?"
        where = f"entry {index} ({listed})"
        if not isinstance(item, Mapping) or any(key not in item for key in ENTRY_KEYS):
            problems.append(f"{where}: not the exact keys {', '.join(ENTRY_KEYS)}")
            continue
        enc = item["encrypt_certificate"]
        if not isinstance(enc, Mapping) or any(
                not isinstance(enc.get(key), str) or not enc.get(key)
                for key in ENCRYPTION_KEYS):
            problems.append(f"{where}: encrypt_certificate lacks "
                            f"{', '.join(ENCRYPTION_KEYS)}")
            continue
        if enc["algorithm"] != ALGORITHM:
            problems.append(f"{where}: algorithm {str(enc['algorithm'])[:32]}")
            continue
        serial = item["serial_no"]
        effective, expires = _time(item["effective_time"]), _time(item["expire_time"])
        if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
            problems.append(f"{where}: serial_no is not hex")
            continue
        if effective is None or expires is None:
            problems.append(f"{where}: effective_time/expire_time not RFC 3339")
            continue
        try:
            pem = decrypt(enc["nonce"], enc["ciphertext"], enc["associated_data"])
        except (ValueError, TypeError):   # bad base64, a nonce of the wrong length
            pem = None
        if not pem:
            problems.append(f"{where}: does not decrypt with the API v3 key")
            continue
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
        except ValueError:
            problems.append(f"{where}: not a PEM certificate")
            continue
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            problems.append(f"{where}: not an RSA certificate")
            continue
        if serial_of(cert) != serial.upper().lstrip("0"):
            problems.append(f"{where}: listed under another serial than its own")
            continue
        entry = PlatformCertificate(serial_of(cert), cert, effective, expires)
        if not entry.valid_at(now):
            problems.append(f"{where}: not valid now")
            continue
        found.append(entry)
    return found, problems


class CertificateStore:
    """The cached certificates of one merchant and the refresh bookkeeping; thread-safe.

    ``now`` (aware datetimes) judges validity, ``monotonic`` the refresh intervals.
    """

    def __init__(self, *, refresh_seconds: float, retry_seconds: float,
                 now: Callable[[], datetime], monotonic: Callable[[], float]) -> None:
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self._now = now
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._certs: dict[str, PlatformCertificate] = {}
        self._downloaded_at: float | None = None      # the last successful download
        self._attempted_at: float | None = None       # the last download tried
        self._missed_at: float | None = None          # the last one for an unknown serial

    # -- contents ---------------------------------------------------------------------
    def get(self, serial: str) -> PlatformCertificate | None:
        """The valid certificate of that serial (any case, leading zeros ignored)."""
        if not SERIAL.fullmatch(serial):
            return None
        with self._lock:
            cert = self._certs.get(serial.upper().lstrip("0"))
        return cert if cert is not None and cert.valid_at(self._now()) else None

    def valid(self) -> list[PlatformCertificate]:
        now = self._now()
        with self._lock:
            return [c for c in self._certs.values() if c.valid_at(now)]

    def for_encryption(self) -> PlatformCertificate | None:
        """The certificate to encrypt with: the latest already effective (addendum §3),
        else (only future ones) the one effective soonest."""
        now = self._now()
        valid = self.valid()
        effective = [c for c in valid if c.effective_at <= now]
        if effective:
            return max(effective, key=lambda c: (c.effective_at, c.expires_at))
        return min(valid, key=lambda c: c.effective_at) if valid else None

    def add(self, certs: Iterable[PlatformCertificate]) -> None:
        """Certificates from elsewhere (the pre-seeded ``cert_dir``): no download."""
        with self._lock:
            for cert in certs:
                self._certs[cert.serial_no] = cert

    def replace(self, certs: list[PlatformCertificate]) -> list[str]:
        """A successful download: the list is WeChat's current one (what it no longer
        lists is dropped). Returns the serials that are new."""
        with self._lock:
            new = [c.serial_no for c in certs if c.serial_no not in self._certs]
            self._certs = {c.serial_no: c for c in certs}
            self._downloaded_at = self._monotonic()
        return new

    # -- refresh rules ------------------------------------------------------------------
    def due(self) -> bool:
        """A scheduled download is due: never downloaded, none valid any more, older than
        ``refresh_seconds``, or the last certificate lives less than that (then hourly);
        backed off ``retry_seconds`` after an attempt."""
        mono, now = self._monotonic(), self._now()
        with self._lock:
            if self._attempted_at is not None and \
                    mono - self._attempted_at < self.retry_seconds:
                return False
            if self._downloaded_at is None:
                return True
            age = mono - self._downloaded_at
            valid = [c for c in self._certs.values() if c.valid_at(now)]
            last = max((c.expires_at for c in valid), default=None)
        if age >= self.refresh_seconds or last is None:   # none left: fetch (backed off)
            return True
        expiring = (last - now).total_seconds() < self.refresh_seconds
        return expiring and age >= min(EXPIRING_RECHECK_SECONDS, self.refresh_seconds)

    def miss_allowed(self) -> bool:
        """A serial not in the cache may trigger a download: at most one per
        ``retry_seconds`` (the first one always)."""
        mono = self._monotonic()
        with self._lock:
            return self._missed_at is None or mono - self._missed_at >= self.retry_seconds

    def attempted(self, *, miss: bool) -> None:
        mono = self._monotonic()
        with self._lock:
            self._attempted_at = mono
            if miss:
                self._missed_at = mono
