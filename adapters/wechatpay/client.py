"""wechatpayv3 2.0.4 behind one class: the only module of the project importing the SDK.

Owns: key loading (PKCS#1 -> PKCS#8, CH §2.1), building the SDK pointed at
``settings.base_url`` (CH §0 #2) with explicit timeouts (CH §0 #12), the HTTP exchange,
classification of transport trouble into the error tree, the SDK's signature checks and
AES-GCM decryption, and the platform certificates' download (``certificates`` decides).
Must not translate statuses or codes (``translate.py``), retry, sleep or log payloads,
keys, signatures or Authorization values.

Why a ``Core`` subclass instead of the SDK's ``request``: the SDK calls module-level
``requests.get/post`` (no pooling, no response headers for the caller, no size bound on a
bill download) and raises a bare ``Exception`` on an unverifiable answer. ``_GatewayCore``
keeps the SDK's signing (``build_authorization``), verification (``_verify_signature``:
``Wechatpay-Serial == public_key_id`` -> the public key, else the cached certificate of
that serial, a miss refreshing the cache once), field encryption and every endpoint
function, and replaces only the transport: one pooled ``requests.Session``
(``gateway.transport.session``), a total deadline on every request (the bill download its
own, larger one), ``Request-ID`` kept on every answer (2xx or not), bounded bodies, the
AFTER_SEND failpoint between answer and verification, typed errors.

Verification modes (``verification``; addendum §3): ``public_key`` (a ``PUB_KEY_ID_...``
serial only), ``certificate`` (platform certificates only), ``both`` (a migration: the
serial picks the public key or a certificate, answer by answer; requests carry
``Wechatpay-Serial: <public_key_id>`` as the SDK sends it, steering WeChat to the key).
Where the SDK's certificate handling is not sound, ours replaces it:

* ``WeChatPay.__init__`` builds a ``Core`` that, in certificate mode, downloads from the
  hard-coded https://api.mch.weixin.qq.com before the base URL can be set (CH §0 #3):
  ``_GatewayWeChatPay`` builds only our core, which never downloads at construction; the
  first call does, from ``base_url``.
* ``Core._update_certificates`` clears the cache before fetching (a failed download
  leaves nothing), does not verify the answer's signature, writes
  ``cert_dir + serial_no + '.pem'`` with the serial as given, and runs on every unknown
  serial. Ours keeps the cache until a download succeeds, verifies the answer with a
  certificate it lists (or one already held), writes only hex serials, and follows the
  refresh rules of ``certificates`` (scheduled every ``certificate_refresh_seconds``,
  earlier before the last certificate expires; an unknown serial once per
  ``certificate_retry_seconds``).
* ``Core._last_certificate`` (the encryption and ``Wechatpay-Serial`` of an encrypted
  request) takes the latest-expiring certificate, even one WeChat does not use yet, by
  cryptography's deprecated naive ``not_valid_after``; ours the latest effective one.
* ``Core._verify_signature`` parses any serial other than ``public_key_id`` as hex
  (``ValueError`` for a ``PUB_KEY_ID_...`` in certificate mode): ours refuses a serial the
  mode does not accept first, and keeps the SDK's choice for the rest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import requests
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: TID251 - the one allowed module
from wechatpayv3.core import Core  # noqa: TID251 - the one allowed module
from wechatpayv3.type import RequestType  # noqa: TID251 - the one allowed module
from wechatpayv3.utils import (  # noqa: TID251 - the one allowed module
    aes_decrypt,
    build_authorization,
    rsa_verify,
)

from adapters.wechatpay import certificates
from adapters.wechatpay.certificates import CertificateStore, PlatformCertificate
from gateway import failpoints, transport
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
)
from gateway.models import Route

log = structlog.get_logger(__name__)

CHANNEL: Final = Route.WECHATPAY.value
REFUND_PATH: Final = "/v3/refund/domestic/refunds"          # CH §5.1
CERTIFICATES_PATH: Final = "/v3/certificates"                # addendum §3
USER_AGENT: Final = "refund-gateway (wechatpayv3 2.0.4)"
SIGNATURE_TYPE: Final = "WECHATPAY2-SHA256-RSA2048"          # CH §2.4, §5.4
MAX_JSON_BYTES: Final = 1 << 20        # refund/bill-URL answers are a few hundred bytes
MAX_BILL_GZIP_BYTES: Final = 512 << 20  # the compressed bill as downloaded
CERTIFICATE_REFRESH_SECONDS: Final = 12 * 3600.0   # addendum §3: refresh < every 12 h
CERTIFICATE_RETRY_SECONDS: Final = 60.0
Verification = Literal["public_key", "certificate", "both"]
VERIFICATIONS: Final = ("public_key", "certificate", "both")


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer. ``body`` is text for JSON answers, bytes otherwise (bills)."""

    http_status: int
    body: str | bytes
    request_id: str | None = None

    def json(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        text = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) \
            else self.body
        try:
            doc = json.loads(text) if text.strip() else None
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


class _Unverified(Exception):  # internal signal, never leaves this module
    def __init__(self, request_id: str | None, http_status: int) -> None:
        super().__init__("answer not verified")
        self.request_id = request_id
        self.http_status = http_status


class _NoCertificate(Exception):  # internal signal, never leaves this module
    """Certificate mode with no valid platform certificate: the request is not sent."""

    def __init__(self, http_status: int | None) -> None:
        super().__init__("no platform certificate")
        self.http_status = http_status   # of the failed download, when it answered


class _SdkAnswer(tuple[Any, ...]):
    """What the SDK's endpoint functions pass through: a ``(status, body)`` pair (so the
    SDK's own ``code, message = ...`` unpacking still works) carrying the Request-ID and
    the answer's headers."""

    request_id: str | None
    headers: Mapping[str, str]

    def __new__(cls, status: int, body: str | bytes, request_id: str | None,
                headers: Mapping[str, str] | None = None) -> _SdkAnswer:
        self = super().__new__(cls, (status, body))
        self.request_id = request_id
        self.headers = headers or {}
        return self


class _GatewayCore(Core):  # type: ignore[misc] # the SDK is untyped
    """The SDK's ``Core`` with our transport and certificate handling (module docstring).

    ``store`` is None in public-key mode: a serial other than ``public_key_id`` is then
    refused without a download."""

    def __init__(self, *, session: requests.Session, base_url: str,
                 max_bill_bytes: int, deadline: float, download_deadline: float,
                 store: CertificateStore | None, cert_dir: str | None,
                 now: Callable[[], datetime], **kwargs: Any) -> None:
        self._session = session
        self._base_url_set = False
        self._max_bill_bytes = max_bill_bytes
        self._deadline = deadline
        self._download_deadline = download_deadline
        self._store = store
        self._own_cert_dir = cert_dir
        self._now = now
        self._refresh_lock = threading.RLock()
        self._failed_status: int | None = None    # of the last failed download
        # cert_dir=None: the SDK never reads or writes it (ours: _load_cert_dir, _save)
        super().__init__(cert_dir=None, **kwargs)
        self._gate_way = base_url
        self._base_url_set = True
        if store is not None and cert_dir:
            store.add(_load_cert_dir(cert_dir, now()))
        self._sync()

    # -- certificates ---------------------------------------------------------------------
    def _init_certificates(self) -> None:
        """The SDK's: load ``cert_dir``, else download from the hard-coded host, else
        raise (CH §0 #3). Ours loads ``cert_dir`` after construction and downloads on
        first use, from ``base_url``."""

    def _update_certificates(self) -> None:
        """Called by the SDK's ``_verify_signature`` for a serial it does not hold."""
        self.refresh(miss=True)

    def _last_certificate(self) -> x509.Certificate:
        """The certificate that encrypts (``abnormal_refund``'s card fields) and names
        ``Wechatpay-Serial`` in certificate mode: the latest effective one."""
        store = self._store
        if store is None:
            raise _NoCertificate(None)
        cert = store.for_encryption()
        if cert is None:
            self.refresh(miss=True)
            cert = store.for_encryption()
        if cert is None:
            raise _NoCertificate(self._failed_status)
        return cert.certificate

    def _sync(self) -> None:
        # The SDK's _verify_signature scans self._certificates; a new list is swapped in
        # whole, so a thread iterating the old one is never disturbed.
        self._certificates = [c.certificate for c in self._store.valid()] \
            if self._store is not None else []

    def refresh(self, *, miss: bool) -> bool:
        """Download the certificates if the rules of ``certificates`` allow it now: for
        an unknown serial (``miss``) or when a scheduled refresh is due. True when a
        download succeeded; a failure keeps what is cached."""
        store = self._store
        if store is None or not self._base_url_set:
            return False

        def allowed() -> bool:
            return store.miss_allowed() if miss else store.due()

        if not miss and store.valid() and not store.due():
            return False             # the common case: no lock, no wait
        # One download at a time. A thread that missed, or has no certificate at all,
        # waits for the one in flight and then uses what it brought.
        with self._refresh_lock:
            if not allowed():
                if miss:
                    log.info("wechatpay.certificate_refresh_deferred",
                             retry_seconds=store.retry_seconds)
                return False
            store.attempted(miss=miss)
            ok = self._download(store)
            self._sync()
            return ok

    def _download(self, store: CertificateStore) -> bool:
        try:
            answer = self.request(CERTIFICATES_PATH, skip_verify=True)
        except (requests.RequestException, transport.AnswerTooLarge, GatewayError) as exc:
            log.warning("wechatpay.certificates_unavailable", error=type(exc).__name__)
            self._failed_status = None
            return False
        status, body = answer
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if status != 200:
            log.warning("wechatpay.certificates_refused", http_status=status,
                        request_id=answer.request_id)
            self._failed_status = status
            return False
        try:
            certs, problems = certificates.decode(json.loads(text), self._decrypt_cert,
                                                  self._now())
        except ValueError:
            log.warning("wechatpay.certificates_unparseable", request_id=answer.request_id)
            return False
        for problem in problems:
            log.warning("wechatpay.certificate_skipped", problem=problem)
        if not certs:
            log.warning("wechatpay.certificates_none_usable", request_id=answer.request_id)
            return False
        if not self._download_verified(answer.headers, text, certs):
            # addendum §3 / CH §5.4: an unsigned 2xx answer is a forgery. The GCM tag
            # already ties each certificate to our API v3 key; this ties the answer to
            # the platform's key (wechatpay-go verifies its downloads the same way).
            log.warning("wechatpay.certificates_unverified", request_id=answer.request_id)
            return False
        new = store.replace(certs)
        self._failed_status = None
        self._save(certs)
        log.info("wechatpay.certificates_refreshed", serials=[c.serial_no for c in certs],
                 new=new)
        return True

    def _decrypt_cert(self, nonce: str, ciphertext: str, associated_data: str
                      ) -> str | None:
        result: str | None = aes_decrypt(nonce=nonce, ciphertext=ciphertext,
                                         associated_data=associated_data,
                                         apiv3_key=self._apiv3_key)
        return result

    def _download_verified(self, headers: Mapping[str, str], text: str,
                           listed: list[PlatformCertificate]) -> bool:
        """The certificates answer is signed by a certificate it lists (or one held, or
        our public key in a migration)."""
        got = {name: (_header(headers, name) or "").strip() for name in _SIGNED_HEADERS}
        if got["Wechatpay-Signature-Type"] != SIGNATURE_TYPE:
            return False
        serial = got["Wechatpay-Serial"]
        key: Any = None
        if self._public_key_id and serial == self._public_key_id:
            key = self._public_key
        elif certificates.SERIAL.fullmatch(serial):
            wanted = serial.upper().lstrip("0")
            match = next((c for c in listed if c.serial_no == wanted), None) or \
                (self._store.get(serial) if self._store is not None else None)
            key = match.certificate.public_key() if match is not None else None
        if key is None:
            return False
        try:
            return bool(rsa_verify(got["Wechatpay-Timestamp"], got["Wechatpay-Nonce"], text,
                                   got["Wechatpay-Signature"], key))
        except Exception as exc:  # the SDK's helper lets odd inputs through
            log.warning("wechatpay.verify_error", error=type(exc).__name__)
            return False

    def _save(self, certs: list[PlatformCertificate]) -> None:
        """``<cert_dir>/<SERIAL>.pem`` for each certificate not there yet (the SDK's
        layout, so a directory it wrote works here and back); serials are hex only."""
        if not self._own_cert_dir:
            return
        folder = Path(self._own_cert_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                target = folder / f"{cert.serial_no}.pem"
                if not target.exists():
                    partial = target.with_suffix(".pem.partial")
                    partial.write_text(cert.pem, encoding="ascii")
                    partial.replace(target)
        except OSError as exc:
            log.warning("wechatpay.cert_dir_unwritable", error=type(exc).__name__)

    # -- verification ---------------------------------------------------------------------
    def _verify_signature(self, headers: Mapping[str, str], body: str) -> bool:
        """The SDK's check (CH §2.4) for the serials this mode accepts: the public key's
        id in public-key and both modes, a hex certificate serial in certificate and
        both modes (a miss refreshes once, ``refresh``); anything else is refused before
        the SDK would parse it as hex (ValueError for ``PUB_KEY_ID_...``). Any exception
        means "not verified", never a crash."""
        serial = (_header(headers, "Wechatpay-Serial") or "").strip()
        if not (self._public_key_id and serial == self._public_key_id):
            if self._store is None or not certificates.SERIAL.fullmatch(serial):
                log.warning("wechatpay.unexpected_serial", serial=serial[:64])
                return False
            self._sync()          # certificates that expired since are not used
        try:
            return bool(super()._verify_signature(headers, body))
        except Exception as exc:  # SDK raises bare Exception/ValueError
            log.warning("wechatpay.verify_error", error=type(exc).__name__)
            return False

    def serial_acceptable(self, serial: str) -> bool:
        if self._public_key_id and serial == self._public_key_id:
            return True
        return self._store is not None and bool(certificates.SERIAL.fullmatch(serial))

    # -- transport ------------------------------------------------------------------------
    def request(self, path: str, method: Any = RequestType.GET, data: Any = None,
                skip_verify: bool = False, sign_data: Any = None, files: Any = None,
                cipher_data: bool = False, headers: Mapping[str, str] | None = None
                ) -> _SdkAnswer:
        if files:
            raise TypeError("multipart uploads are not used by the refund gateway")
        if self._store is not None and path.partition("?")[0] != CERTIFICATES_PATH:
            self.refresh(miss=False)
            if not skip_verify and not self._public_key_id and not self._store.valid():
                # Certificate mode and nothing to verify the answer with: do not send a
                # refund whose answer would be unverifiable (an unknown outcome).
                raise _NoCertificate(self._failed_status)
        body = json.dumps(data) if data else ""   # the exact text build_authorization signs
        sent: dict[str, str] = {"Content-Type": "application/json",
                                "Accept": "application/json", "User-Agent": USER_AGENT}
        sent.update(headers or {})
        if self._public_key_id or cipher_data:
            sent["Wechatpay-Serial"] = (self._public_key_id or
                                        hex(self._last_certificate().serial_number)[2:]
                                        .upper())
        sent["Authorization"] = build_authorization(
            path, method.value, self._mchid, self._cert_serial_no, self._private_key,
            data=sign_data if sign_data else (body or None))
        connect, read = self._timeout
        # The bill file (unsigned, CH §5.7) is big: its own limit and deadline. The
        # certificate download skips the SDK's verification too (``_download`` checks
        # it), but is a small JSON answer.
        is_file = skip_verify and path.partition("?")[0] != CERTIFICATES_PATH
        resp = transport.exchange(
            self._session, method.value, self._gate_way + path,
            data=body.encode("utf-8") if body else None, headers=sent,
            connect=connect, read=read,
            deadline=self._download_deadline if is_file else self._deadline,
            limit=self._max_bill_bytes if is_file else MAX_JSON_BYTES)
        request_id = resp.headers.get("Request-ID") or None
        if method == RequestType.POST and path == REFUND_PATH:
            failpoints.failpoint(failpoints.AFTER_SEND)
        is_json = "application/json" in resp.headers.get("Content-Type", "")
        text = resp.content.decode("utf-8", "replace")
        if 200 <= resp.http_status < 300 and not skip_verify and \
                not self._verify_signature(resp.headers, text):
            raise _Unverified(request_id, resp.http_status)
        return _SdkAnswer(resp.http_status, text if is_json else resp.content, request_id,
                          resp.headers)


_SIGNED_HEADERS: Final = ("Wechatpay-Signature-Type", "Wechatpay-Serial",
                          "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature")


class _GatewayWeChatPay(WeChatPay):  # type: ignore[misc] # the SDK is untyped
    """The SDK's facade (``refund``, ``query_refund``, ``trade_bill``...: its endpoint
    functions) over our core. ``WeChatPay.__init__`` is not run: it builds the SDK's own
    ``Core`` first, which in certificate mode downloads from the hard-coded host
    (CH §0 #3). These are the attributes 2.0.4's constructor sets (the SDK is pinned)."""

    def __init__(self, core: _GatewayCore, *, mchid: str, appid: str,
                 notify_url: str | None, partner_mode: bool) -> None:
        self._type = WeChatPayType.NATIVE
        self._mchid = mchid
        self._appid = appid
        self._notify_url = notify_url
        self._core = core
        self._partner_mode = partner_mode   # the endpoint functions then need sub_mchid


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``Wechatpay-Serial`` under any of the spellings of CH §2.4 (requests, Django,
    FastAPI), whatever the mapping's case sensitivity."""
    wanted = {name.lower(), "http_" + name.lower().replace("-", "_")}
    for key, value in headers.items():
        if key.lower() in wanted:
            return value
    return None


# -- keys ---------------------------------------------------------------------------------
def pkcs8_private_key(pem: str, setting: str) -> str:
    """The merchant key as PKCS#8 PEM (the SDK fails on PKCS#1 ``BEGIN RSA PRIVATE KEY``,
    CH §2.1). ConfigurationError names the setting, never the value."""
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{setting}: not an unencrypted PEM private key",
                                 setting=setting) from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ConfigurationError(f"{setting}: WeChat Pay needs an RSA key of 2048+ bits",
                                 setting=setting)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def spki_public_key(pem: str, setting: str) -> str:
    """The platform public key as SPKI PEM; a certificate is accepted and unwrapped."""
    data = pem.encode("utf-8")
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{setting}: not a PEM public key or certificate",
                                 setting=setting) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError(f"{setting}: the platform key must be RSA", setting=setting)
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _load_cert_dir(cert_dir: str, now: datetime) -> list[PlatformCertificate]:
    """The valid RSA ``*.pem`` certificates of ``cert_dir`` (what the SDK loads; a
    pre-seeded directory, or one an earlier run wrote), effective from their notBefore."""
    found: list[PlatformCertificate] = []
    path = Path(cert_dir)
    if not path.is_dir():
        return found
    for item in sorted(path.iterdir()):
        if item.suffix.lower() != ".pem":
            continue
        try:
            cert = x509.load_pem_x509_certificate(item.read_bytes())
        except (ValueError, OSError):
            continue
        entry = PlatformCertificate(certificates.serial_of(cert), cert,
                                    cert.not_valid_before_utc, cert.not_valid_after_utc)
        if isinstance(cert.public_key(), rsa.RSAPublicKey) and entry.valid_at(now):
            found.append(entry)
    return found


# -- the client -----------------------------------------------------------------------------
class WechatPayClient:
    """One merchant's SDK instance; keys are loaded once, here.

    ``verification``: ``public_key``, ``certificate`` or ``both`` (module docstring);
    None: ``public_key`` when a public key is given, else ``certificate``. ``sub_mchid``
    makes it a service provider acting for that sub-merchant (addendum §4): the SDK's
    partner mode, ``sub_mchid`` on every refund, query and trade bill. ``now`` and
    ``monotonic`` are for tests (certificate validity, refresh intervals).
    """

    def __init__(self, *, mchid: str, appid: str, private_key_pem: str, cert_serial_no: str,
                 apiv3_key: str, base_url: str, connect_timeout: float, read_timeout: float,
                 public_key_pem: str | None = None, public_key_id: str | None = None,
                 cert_dir: str | None = None, notify_url: str | None = None,
                 session: requests.Session | None = None,
                 max_bill_bytes: int = MAX_BILL_GZIP_BYTES, deadline: float | None = None,
                 download_deadline: float | None = None,
                 verification: Verification | None = None, sub_mchid: str | None = None,
                 certificate_refresh_seconds: float = CERTIFICATE_REFRESH_SECONDS,
                 certificate_retry_seconds: float = CERTIFICATE_RETRY_SECONDS,
                 now: Callable[[], datetime] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``deadline`` bounds each call, ``download_deadline`` the bill file's download
        (None: ``gateway.transport``'s defaults)."""
        self.mchid = mchid
        self.sub_mchid = sub_mchid
        self.base_url = base_url.rstrip("/")    # CH §0 #2: no trailing slash
        self.notify_url = notify_url
        self.public_key_id = public_key_id
        if (public_key_pem is None) != (public_key_id is None):
            raise ConfigurationError("public_key and public_key_id go together",
                                     setting="REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID")
        mode = verification or ("public_key" if public_key_pem else "certificate")
        if mode not in VERIFICATIONS:
            raise ConfigurationError(f"verification is one of {', '.join(VERIFICATIONS)}",
                                     setting="REFUND_GATEWAY_WECHATPAY__VERIFICATION")
        if mode != "certificate" and public_key_pem is None:
            raise ConfigurationError(f"{mode} verification needs PUBLIC_KEY and "
                                     "PUBLIC_KEY_ID (PUB_KEY_ID_...)",
                                     setting="REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY")
        if mode == "certificate" and public_key_pem is not None:
            raise ConfigurationError("certificate verification with a PUBLIC_KEY set: use "
                                     "VERIFICATION=both while migrating, or drop the key",
                                     setting="REFUND_GATEWAY_WECHATPAY__VERIFICATION")
        self.verification: Verification = mode
        clock = now or (lambda: datetime.now(UTC))
        store = None if mode == "public_key" else CertificateStore(
            refresh_seconds=certificate_refresh_seconds,
            retry_seconds=certificate_retry_seconds, now=clock, monotonic=monotonic)
        self._session = session or transport.session()
        self._apiv3_key = apiv3_key   # for decrypt_notification; never logged
        try:
            core = _GatewayCore(
                session=self._session, base_url=self.base_url, max_bill_bytes=max_bill_bytes,
                deadline=transport.call_deadline(connect_timeout, read_timeout, deadline),
                download_deadline=transport.download_deadline(download_deadline),
                store=store, cert_dir=cert_dir, now=clock,
                mchid=mchid, cert_serial_no=cert_serial_no, private_key=private_key_pem,
                apiv3_key=apiv3_key,
                timeout=(connect_timeout, read_timeout),   # SDK default None = unbounded
                public_key=public_key_pem, public_key_id=public_key_id)
        except Exception as exc:  # the SDK raises bare Exception on bad keys
            raise ConfigurationError(f"WeChat Pay SDK refused the settings "
                                     f"({type(exc).__name__})",
                                     setting="REFUND_GATEWAY_WECHATPAY") from None
        self._core = core
        self._wx = _GatewayWeChatPay(core, mchid=mchid, appid=appid, notify_url=notify_url,
                                     partner_mode=sub_mchid is not None)

    def __repr__(self) -> str:  # never print keys
        return (f"WechatPayClient(base_url={self.base_url!r}, mchid={self.mchid!r}, "
                f"verification={self.verification!r}"
                + (f", sub_mchid={self.sub_mchid!r})" if self.sub_mchid else ")"))

    @property
    def gate_way(self) -> str:
        return str(self._core._gate_way)

    def serial_acceptable(self, serial: str) -> bool:
        """Whether this mode verifies with the key or certificate that ``Wechatpay-Serial``
        names (the public key's id; any hex certificate serial in certificate mode)."""
        return self._core.serial_acceptable(serial)

    def platform_certificates(self) -> list[tuple[str, datetime]]:
        """(serial, expiry) of the cached valid platform certificates; [] in public-key
        mode. For operators (``doctor``): nothing is downloaded."""
        store = self._core._store
        return [(c.serial_no, c.expires_at) for c in store.valid()] if store else []

    def refresh_certificates(self) -> bool:
        """Download the platform certificates now if a scheduled refresh is due (False
        in public-key mode, when not due, or when the download failed)."""
        return self._core.refresh(miss=False)

    # -- operations (each returns the answer; transport trouble raises) -----------------
    def refund(self, *, out_refund_no: str, amount: Mapping[str, Any],
               transaction_id: str | None, out_trade_no: str | None, reason: str | None
               ) -> Answer:
        return self._call("submit", lambda: self._wx.refund(
            out_refund_no=out_refund_no, amount=dict(amount), transaction_id=transaction_id,
            out_trade_no=out_trade_no, reason=reason, notify_url=self.notify_url,
            sub_mchid=self.sub_mchid))

    def query_refund(self, out_refund_no: str) -> Answer:
        return self._call("query", lambda: self._wx.query_refund(
            out_refund_no=out_refund_no, sub_mchid=self.sub_mchid))

    def abnormal_refund(self, *, refund_id: str, out_refund_no: str, target: str,
                        bank_type: str | None, bank_account: str | None,
                        real_name: str | None) -> Answer:
        """CH §5.6; the SDK RSA-OAEP encrypts ``bank_account``/``real_name`` with the
        platform key and adds ``Wechatpay-Serial``. Neither value is logged or kept."""
        return self._call("abnormal_refund", lambda: self._wx.abnormal_refund(
            refund_id=refund_id, out_refund_no=out_refund_no, type=target,
            bank_type=bank_type, bank_account=bank_account, real_name=real_name,
            sub_mchid=self.sub_mchid))

    def trade_bill(self, bill_date: str, bill_type: str) -> Answer:
        """Partner mode: the sub-merchant's bill (``sub_mchid`` on the request)."""
        return self._call("statement", lambda: self._wx.trade_bill(
            bill_date=bill_date, bill_type=bill_type, tar_type="GZIP",
            sub_mchid=self.sub_mchid))

    def fundflow_bill(self, bill_date: str, account_type: str) -> Answer:
        return self._call("statement", lambda: self._wx.fundflow_bill(
            bill_date=bill_date, account_type=account_type, tar_type="GZIP"))

    def download_bill(self, url: str) -> Answer:
        """GET the bill file (not signed by WeChat, CH §5.7). The SDK strips ``_gate_way``
        only when the URL starts with it, else requests ``_gate_way + url`` (CH §0 #6):
        the caller checks ``url.startswith(self.gate_way)`` first."""
        return self._call("statement", lambda: self._wx.download_bill(url))

    # -- notifications -----------------------------------------------------------------
    def verify_notification(self, headers: Mapping[str, str], body: str) -> bool:
        """The SDK's RSA check of ``TS\\nNONCE\\nBODY\\n`` with the key or certificate
        ``Wechatpay-Serial`` names (CH §2.4); a scheduled certificate refresh first, when
        due (a failed one keeps the cache)."""
        self._core.refresh(miss=False)
        return bool(self._core._verify_signature(headers, body))

    def decrypt_notification(self, body: str) -> dict[str, Any] | None:
        """The envelope with ``resource`` decrypted (AES-256-GCM, API v3 key; CH §2.6), or
        None when the envelope, the GCM tag or the plaintext does not hold up.

        Call it after ``verify_notification``: it is the SDK's ``callback`` without its
        second RSA verification of the same body (a third of a notification's crypto),
        decrypting with the SDK's own ``aes_decrypt``.
        """
        try:
            doc = json.loads(body)
            resource = doc.get("resource") if isinstance(doc, dict) else None
            if (doc.get("resource_type") != "encrypt-resource"
                    or not isinstance(resource, dict)
                    or resource.get("algorithm") != "AEAD_AES_256_GCM"
                    or not resource.get("nonce") or not resource.get("ciphertext")):
                return None
            plain = aes_decrypt(nonce=resource["nonce"], ciphertext=resource["ciphertext"],
                                associated_data=resource.get("associated_data") or "",
                                apiv3_key=self._apiv3_key)
            if not plain:
                return None
            doc["resource"] = json.loads(plain)
        except Exception as exc:  # bad JSON, base64, non-string fields
            log.warning("wechatpay.callback_error", error=type(exc).__name__)
            return None
        if not isinstance(doc.get("resource"), dict):
            return None
        return dict(doc)

    def close(self) -> None:
        self._session.close()

    # -- transport classification -------------------------------------------------------
    def _call(self, operation: str, fn: Callable[[], Any]) -> Answer:
        try:
            status, body = answer = fn()
        except GatewayError:
            raise
        except _Unverified as exc:
            # DESIGN invariant 4: an answer we cannot verify is no answer; the refund may
            # or may not have been executed. (SignatureInvalid is for notifications.)
            raise OutcomeUnknown("WeChat answer failed signature verification",
                                 channel=CHANNEL, operation=operation,
                                 http_status=exc.http_status, code="SIGNATURE_INVALID",
                                 request_id=exc.request_id) from None
        except transport.AnswerTooLarge as exc:
            raise OutcomeUnknown(f"WeChat answer larger than {exc.limit} bytes",
                                 channel=CHANNEL, operation=operation,
                                 http_status=exc.http_status, code="ANSWER_TOO_LARGE",
                                 request_id=exc.headers.get("Request-ID") or None) from None
        except requests.RequestException as exc:
            raise transport.classify(exc, channel=CHANNEL, operation=operation,
                                     label="WeChat") from exc
        except _NoCertificate as exc:
            # Nothing was sent. A download refused as unauthenticated is our credentials
            # (never retried); otherwise WeChat's certificates were out of reach.
            error = ChannelAuthError if exc.http_status in (401, 403) else ChannelUnavailable
            raise error("WeChat platform certificates unavailable; nothing sent",
                        channel=CHANNEL, operation=operation, http_status=exc.http_status,
                        code="NO_PLATFORM_CERTIFICATE") from None
        except Exception as exc:  # the SDK's bare Exceptions (no message kept)
            raise OutcomeUnknown(f"WeChat SDK error: {type(exc).__name__}", channel=CHANNEL,
                                 operation=operation, code="SDK_ERROR") from None
        return Answer(int(status), body, getattr(answer, "request_id", None))


