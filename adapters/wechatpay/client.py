"""wechatpayv3 2.0.4 behind one class: the only module of the project importing the SDK.

Owns: key loading (PKCS#1 -> PKCS#8, CH §2.1), building the SDK pointed at
``settings.base_url`` (CH §0 #2) with explicit timeouts (CH §0 #12), the HTTP exchange,
classification of transport trouble into the error tree, and the SDK's signature checks and
AES-GCM decryption. Must not translate statuses or codes (``translate.py``), retry, sleep
or log payloads, keys, signatures or Authorization values.

Why a ``Core`` subclass instead of the SDK's ``request``: the SDK calls module-level
``requests.get/post`` (no pooling, no response headers for the caller, no size bound on a
bill download) and raises a bare ``Exception`` on an unverifiable answer. ``_GatewayCore``
keeps the SDK's signing (``build_authorization``), verification (``_verify_signature``),
field encryption and every endpoint function, and replaces only the transport: one pooled
``requests.Session`` (``gateway.transport.session``), a total deadline on every request
(the bill download its own, larger one), ``Request-ID`` kept on every answer (2xx or not),
bounded bodies, the AFTER_SEND failpoint between answer and verification, typed errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

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
)

from gateway import failpoints, transport
from gateway.errors import (
    ChannelAuthError,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
)
from gateway.models import Route

log = structlog.get_logger(__name__)

CHANNEL: Final = Route.WECHATPAY.value
REFUND_PATH: Final = "/v3/refund/domestic/refunds"          # CH §5.1
CERTIFICATES_PATH: Final = "/v3/certificates"                # the SDK's _update_certificates
USER_AGENT: Final = "refund-gateway (wechatpayv3 2.0.4)"
SIGNATURE_TYPE: Final = "WECHATPAY2-SHA256-RSA2048"          # CH §2.4, §5.4
MAX_JSON_BYTES: Final = 1 << 20        # refund/bill-URL answers are a few hundred bytes
MAX_BILL_GZIP_BYTES: Final = 512 << 20  # the compressed bill as downloaded


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


class _NoCertificateFetch(Exception):  # internal signal, never leaves this module
    """Certificate mode would have fetched /v3/certificates from the hard-coded host."""


class _SdkAnswer(tuple[Any, ...]):
    """What the SDK's endpoint functions pass through: a ``(status, body)`` pair (so the
    SDK's own ``code, message = ...`` unpacking still works) carrying the Request-ID."""

    request_id: str | None

    def __new__(cls, status: int, body: str | bytes, request_id: str | None) -> _SdkAnswer:
        self = super().__new__(cls, (status, body))
        self.request_id = request_id
        return self


class _GatewayCore(Core):  # type: ignore[misc] # the SDK is untyped
    """The SDK's ``Core`` with our transport (see the module docstring)."""

    def __init__(self, *, session: requests.Session, base_url: str,
                 max_bill_bytes: int, deadline: float, download_deadline: float,
                 **kwargs: Any) -> None:
        self._session = session
        self._base_url_set = False
        self._max_bill_bytes = max_bill_bytes
        self._deadline = deadline
        self._download_deadline = download_deadline
        super().__init__(**kwargs)
        self._gate_way = base_url
        self._base_url_set = True

    def _update_certificates(self) -> None:
        # Core.__init__ runs before _gate_way can be overridden: a fetch then would sign a
        # request with our credentials and send it to https://api.mch.weixin.qq.com
        # (CH §0 #3). Refuse; later fetches (a rotated serial) go to base_url. The SDK
        # clears its certificates before fetching, so a failed refresh would also throw
        # away the pre-seeded ones: keep them.
        if not self._base_url_set:
            raise _NoCertificateFetch
        kept = list(self._certificates)
        try:
            super()._update_certificates()
        finally:
            if not self._certificates:
                self._certificates.extend(kept)

    def _verify_signature(self, headers: Mapping[str, str], body: str) -> bool:
        """The SDK's check (CH §2.4), minus its two hazards: in public-key mode another
        serial would be parsed as hex (ValueError for ``PUB_KEY_ID_...``) or trigger a
        certificate fetch; and any exception means "not verified", never a crash."""
        serial = _header(headers, "Wechatpay-Serial") or ""
        if self._public_key_id and serial != self._public_key_id:
            log.warning("wechatpay.unexpected_serial", serial=serial[:64])
            return False
        try:
            return bool(super()._verify_signature(headers, body))
        except Exception as exc:  # SDK raises bare Exception/ValueError
            log.warning("wechatpay.verify_error", error=type(exc).__name__)
            return False

    def request(self, path: str, method: Any = RequestType.GET, data: Any = None,
                skip_verify: bool = False, sign_data: Any = None, files: Any = None,
                cipher_data: bool = False, headers: Mapping[str, str] | None = None
                ) -> _SdkAnswer:
        if files:
            raise TypeError("multipart uploads are not used by the refund gateway")
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
        # The bill file (unsigned, CH §5.7) is big: its own limit and deadline. The SDK's
        # certificate download skips verification too, but is a small JSON answer.
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
        return _SdkAnswer(resp.http_status, text if is_json else resp.content, request_id)


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


def valid_certificates(cert_dir: str, now: datetime) -> list[x509.Certificate]:
    """The currently valid ``*.pem`` certificates of ``cert_dir`` (what Core loads)."""
    found: list[x509.Certificate] = []
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
        if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            found.append(cert)
    return found


# -- the client -----------------------------------------------------------------------------
class WechatPayClient:
    """One merchant's SDK instance; keys are loaded once, here."""

    def __init__(self, *, mchid: str, appid: str, private_key_pem: str, cert_serial_no: str,
                 apiv3_key: str, base_url: str, connect_timeout: float, read_timeout: float,
                 public_key_pem: str | None = None, public_key_id: str | None = None,
                 cert_dir: str | None = None, notify_url: str | None = None,
                 session: requests.Session | None = None,
                 max_bill_bytes: int = MAX_BILL_GZIP_BYTES, deadline: float | None = None,
                 download_deadline: float | None = None) -> None:
        """``deadline`` bounds each call, ``download_deadline`` the bill file's download
        (None: ``gateway.transport``'s defaults)."""
        self.mchid = mchid
        self.base_url = base_url.rstrip("/")    # CH §0 #2: no trailing slash
        self.notify_url = notify_url
        self.public_key_id = public_key_id
        self._session = session or transport.session()
        if (public_key_pem is None) != (public_key_id is None):
            raise ConfigurationError("public_key and public_key_id go together",
                                     setting="REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID")
        if public_key_pem is None and not (
                cert_dir and valid_certificates(cert_dir, datetime.now(UTC))):
            # Certificate mode. With no currently valid *.pem in cert_dir, Core.__init__
            # downloads /v3/certificates from the hard-coded https://api.mch.weixin.qq.com
            # before base_url can be set (CH §0 #3): a request signed with our credentials
            # to the real WeChat host (or, offline, a ConnectionError from a constructor).
            # So certificate mode needs a pre-seeded directory; we refuse to construct
            # without one instead of letting the SDK phone home.
            raise ConfigurationError(
                "WeChat certificate mode needs REFUND_GATEWAY_WECHATPAY__CERT_DIR "
                "pre-seeded with a currently valid platform certificate (*.pem); or "
                "use public-key mode (PUBLIC_KEY + PUBLIC_KEY_ID)",
                setting="REFUND_GATEWAY_WECHATPAY__CERT_DIR")
        self._apiv3_key = apiv3_key   # for decrypt_notification; never logged
        common: dict[str, Any] = dict(
            mchid=mchid, cert_serial_no=cert_serial_no, private_key=private_key_pem,
            apiv3_key=apiv3_key, cert_dir=cert_dir if public_key_pem is None else None,
            timeout=(connect_timeout, read_timeout),   # SDK default None = unbounded
            public_key=public_key_pem, public_key_id=public_key_id)
        try:
            self._wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, appid=appid,
                                 notify_url=notify_url, **common)
            # Same arguments, our transport (module docstring); replaces the SDK's Core.
            self._wx._core = _GatewayCore(
                session=self._session, base_url=self.base_url, max_bill_bytes=max_bill_bytes,
                deadline=transport.call_deadline(connect_timeout, read_timeout, deadline),
                download_deadline=transport.download_deadline(download_deadline), **common)
        except ConfigurationError:
            raise
        except _NoCertificateFetch as exc:
            raise ConfigurationError("WeChat certificate mode: no valid certificate in "
                                     "cert_dir", setting="REFUND_GATEWAY_WECHATPAY__CERT_DIR"
                                     ) from exc
        except Exception as exc:  # the SDK raises bare Exception on bad keys
            raise ConfigurationError(f"WeChat Pay SDK refused the settings "
                                     f"({type(exc).__name__})",
                                     setting="REFUND_GATEWAY_WECHATPAY") from None

    def __repr__(self) -> str:  # never print keys
        return f"WechatPayClient(base_url={self.base_url!r}, mchid={self.mchid!r})"

    @property
    def gate_way(self) -> str:
        return str(self._wx._core._gate_way)

    # -- operations (each returns the answer; transport trouble raises) -----------------
    def refund(self, *, out_refund_no: str, amount: Mapping[str, Any],
               transaction_id: str | None, out_trade_no: str | None, reason: str | None
               ) -> Answer:
        return self._call("submit", lambda: self._wx.refund(
            out_refund_no=out_refund_no, amount=dict(amount), transaction_id=transaction_id,
            out_trade_no=out_trade_no, reason=reason, notify_url=self.notify_url))

    def query_refund(self, out_refund_no: str) -> Answer:
        return self._call("query", lambda: self._wx.query_refund(out_refund_no=out_refund_no))

    def abnormal_refund(self, *, refund_id: str, out_refund_no: str, target: str,
                        bank_type: str | None, bank_account: str | None,
                        real_name: str | None) -> Answer:
        """CH §5.6; the SDK RSA-OAEP encrypts ``bank_account``/``real_name`` with the
        platform key and adds ``Wechatpay-Serial``. Neither value is logged or kept."""
        return self._call("abnormal_refund", lambda: self._wx.abnormal_refund(
            refund_id=refund_id, out_refund_no=out_refund_no, type=target,
            bank_type=bank_type, bank_account=bank_account, real_name=real_name))

    def trade_bill(self, bill_date: str, bill_type: str) -> Answer:
        return self._call("statement", lambda: self._wx.trade_bill(
            bill_date=bill_date, bill_type=bill_type, tar_type="GZIP"))

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
        """The SDK's RSA check of ``TS\\nNONCE\\nBODY\\n`` with the platform key (CH §2.4)."""
        return bool(self._wx._core._verify_signature(headers, body))

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
        except _NoCertificateFetch:
            raise ChannelAuthError("WeChat platform certificate unavailable",
                                   channel=CHANNEL, operation=operation,
                                   code="NO_PLATFORM_CERTIFICATE") from None
        except Exception as exc:  # the SDK's bare Exceptions (no message kept)
            raise OutcomeUnknown(f"WeChat SDK error: {type(exc).__name__}", channel=CHANNEL,
                                 operation=operation, code="SDK_ERROR") from None
        return Answer(int(status), body, getattr(answer, "request_id", None))


