"""The only module that imports python-alipay-sdk (3.4.0, pinned) or does Alipay HTTP.

Owns: constructing the SDK once per adapter (PEM keys are parsed once), request building
and RSA2 signing, response and notification verification (all by the SDK), one GET per
call with separate connect/read timeouts and a total deadline (``gateway.transport``; the
bill download its own, larger one), the bill download, and turning every transport
failure and every SDK exception into the gateway's error tree. Must not translate business
codes (``translate.py``), retry, sleep or log payloads.

Why not ``api_alipay_trade_refund``/``server_api`` end to end: the SDK's
``verified_sync_response`` does ``urlopen(...).read()`` and verification in one step, with
one timeout for connect and read (CH §1.3) and a naive local ``timestamp`` (CH §1.2). We use
the SDK's own pieces around our transport instead: ``build_body`` (``timestamp`` given as a
keyword, which ``build_body`` applies last via ``data.update(kwargs)``, so Beijing time
wins without patching or mutating the shared SDK object, i.e. thread-safe),
``sign_data``, and ``_verify_and_return_sync_response`` (brace-matched signed substring,
CH §1.4). That also gives the failpoint between "answer arrived" and "answer parsed", and
tells a connect failure (provably not sent) from a read failure (sent, outcome unknown).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final

import structlog

# The one module allowed to import the SDK (the ban in pyproject.toml points here).
from alipay import AliPay, BaseAliPay, DCAliPay  # noqa: TID251
from alipay.exceptions import AliPayException, AliPayValidationError  # noqa: TID251
from alipay.utils import AliPayConfig  # noqa: TID251
from cryptography import x509

from adapters.alipay import certs, translate
from gateway import transport
from gateway.clock import Clock, to_beijing, utcnow
from gateway.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ConfigurationError,
    OutcomeUnknown,
)
from gateway.models import Route

log = structlog.get_logger(__name__)

CHANNEL: Final = Route.ALIPAY.value
CERT_DOWNLOAD: Final = "alipay.open.app.alipaycert.download"   # CHANNELS-ADDENDUM §5
# Alipay certificates downloaded after a rotation, kept besides the configured one.
MAX_DOWNLOADED_CERTS: Final = 4
# An OpenAPI answer is a few KB; anything near this is not an Alipay answer.
MAX_ANSWER_BYTES: Final = 1 << 20
_CHUNK: Final = 1 << 16


_ConnectFailed = transport.ConnectFailed   # raised from connect(): nothing was sent


def _connect(conn: http.client.HTTPConnection, connect: Callable[[], None],
             read_timeout: float) -> None:
    """Run ``connect`` under the connect timeout, then switch to the read timeout."""
    try:
        connect()
    except OSError as exc:   # refused, DNS, connect timeout, TLS handshake (SSLError)
        raise _ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
    if conn.sock is not None:
        conn.sock.settimeout(read_timeout)


class _TimedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._create_connection = transport.create_connection   # the call's deadline

    def connect(self) -> None:
        _connect(self, super().connect, self._read_timeout)


class _TimedHTTPSConnection(http.client.HTTPSConnection):
    """The TLS handshake is part of connecting: no request bytes have left yet."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._create_connection = transport.create_connection   # handshake included

    def connect(self) -> None:
        _connect(self, super().connect, self._read_timeout)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_TimedHTTPConnection,
                                    read_timeout=self._read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        self._ctx = ssl.create_default_context()   # verified TLS, system trust store
        super().__init__(context=self._ctx)
        self._read_timeout = read_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_TimedHTTPSConnection,
                                    read_timeout=self._read_timeout), req, context=self._ctx)


@dataclass(frozen=True, slots=True)
class Answer:
    """A verified OpenAPI answer: the inner ``<method>_response`` object (no ``sign``)."""

    method: str
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.body.get("code", ""))

    @property
    def sub_code(self) -> str | None:
        value = self.body.get("sub_code")
        return str(value) if value else None


@dataclass(frozen=True, slots=True)
class _Verifier:
    """An SDK object verifying with one Alipay certificate (certificate mode)."""

    sn: str
    sdk: BaseAliPay
    not_before: datetime
    not_after: datetime
    configured: bool = False

    def valid(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after


class AlipayClient:
    """One Alipay app: keys loaded once; each call is one signed GET (CH §1.2, §1.3).

    Public-key mode (``alipay_public_key_pem``): the SDK's ``AliPay``. Certificate mode
    (``certificates``, CHANNELS-ADDENDUM §5): the SDK's ``DCAliPay`` adds ``app_cert_sn``
    and ``alipay_root_cert_sn`` to every request and verifies with the key of the Alipay
    certificate; the SDK ignores the answer's ``alipay_cert_sn``, so this client picks the
    certificate it names, downloading one it does not hold with
    ``alipay.open.app.alipaycert.download`` and trusting it only if it chains to the
    configured roots (Alipay's Java SDK, ``checkResponseCertSign``). ``app_auth_token``
    (ISV mode) goes with every business request as the signed top-level parameter the
    SDK's ``build_body`` takes it as.
    """

    def __init__(self, *, app_id: str, app_private_key_pem: str,
                 alipay_public_key_pem: str | None = None,
                 gateway_url: str, connect_timeout: float, read_timeout: float,
                 clock: Clock, deadline: float | None = None,
                 download_deadline: float | None = None,
                 certificates: certs.CertificateMode | None = None,
                 app_auth_token: str | None = None) -> None:
        """``deadline`` bounds each call, ``download_deadline`` the bill file's download
        (None: ``gateway.transport``'s defaults). One of ``alipay_public_key_pem`` and
        ``certificates``; with both, certificate mode."""
        self._verifiers: dict[str, _Verifier] = {}
        self._current_sn: str | None = None
        self._roots: list[x509.Certificate] = []
        self._cert_lock = threading.Lock()
        self._token = app_auth_token or None
        if certificates is not None:
            self._sdk = self._certificate_mode(app_id, app_private_key_pem, certificates)
        elif alipay_public_key_pem is not None:
            self._sdk = _sdk_or_config_error(partial(
                AliPay, appid=app_id, app_notify_url=None,
                app_private_key_string=app_private_key_pem,
                alipay_public_key_string=alipay_public_key_pem, sign_type="RSA2",
                config=AliPayConfig(timeout=read_timeout)))
        else:
            raise ConfigurationError("Alipay needs ALIPAY_PUBLIC_KEY (public-key mode) or "
                                     "APP_CERT, ALIPAY_CERT and ALIPAY_ROOT_CERT (certificate "
                                     "mode)", setting="REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY")
        # CH §0 #2: no constructor argument for the base URL; the SDK is pinned exactly.
        self._sdk._gateway = gateway_url
        self.app_id = app_id
        self.gateway_url = gateway_url
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._deadline = transport.call_deadline(connect_timeout, read_timeout, deadline)
        self._download_deadline = transport.download_deadline(download_deadline)
        self._opener = urllib.request.build_opener(_HTTPHandler(read_timeout),
                                                   _HTTPSHandler(read_timeout))

    def __repr__(self) -> str:  # never print keys or the token
        return f"AlipayClient(app_id={self.app_id!r}, gateway_url={self.gateway_url!r})"

    # -- certificate mode ----------------------------------------------------------------
    @property
    def certificate_mode(self) -> bool:
        return bool(self._verifiers)

    @property
    def alipay_cert_sns(self) -> tuple[str, ...]:
        """The SNs of the Alipay certificates held, the one answers last named first."""
        return tuple(v.sn for v in self._held())

    def _held(self) -> list[_Verifier]:
        # ``_verifiers`` is replaced, never changed in place (``_keep``): this snapshot is
        # safe to read while another thread keeps a downloaded certificate.
        held, current = self._verifiers, self._current_sn
        return sorted(held.values(), key=lambda v: v.sn != current)

    def _certificate_mode(self, app_id: str, private_key_pem: str,
                          files: certs.CertificateMode) -> BaseAliPay:
        try:
            root_text = certs.normalized(files.alipay_root_cert)
            app_sn, root_sn = certs.first_sn(files.app_cert), certs.root_sn(root_text)
            alipay = certs.load(files.alipay_cert)
            self._roots = certs.load_roots(root_text)
        except certs.CertError as exc:
            raise ConfigurationError(
                f"REFUND_GATEWAY_ALIPAY__APP_CERT / ALIPAY_CERT / ALIPAY_ROOT_CERT: {exc}",
                setting="REFUND_GATEWAY_ALIPAY__APP_CERT") from None
        sdk = _sdk_or_config_error(partial(
            DCAliPay, appid=app_id, app_private_key_string=private_key_pem,
            app_public_key_cert_string=certs.normalized(files.app_cert),
            alipay_public_key_cert_string=certs.normalized(files.alipay_cert),
            alipay_root_cert_string=root_text, sign_type="RSA2"))
        # The SDK writes the issuer as 'CN={},OU={},O={},C={}' whatever it holds; Alipay
        # compares Java's RFC 2253 name (CHANNELS-ADDENDUM §5). Ours wins where they differ.
        for attr, ours in (("_app_cert_sn", app_sn), ("_alipay_root_cert_sn", root_sn)):
            try:
                with warnings.catch_warnings():   # at start-up only: filters are global
                    # pyOpenSSL deprecates X509.get_issuer, which the SDK's SN code calls
                    warnings.simplefilter("ignore", DeprecationWarning)
                    theirs = (sdk.app_cert_sn if attr == "_app_cert_sn"
                              else sdk.alipay_root_cert_sn)
            except Exception:   # pyOpenSSL raises its own types; ours is the fix
                theirs = None
            if theirs != ours:
                log.warning("alipay.sdk_cert_sn_differs", sn=attr.strip("_"),
                            sdk_value=theirs, used=ours)
                setattr(sdk, attr, ours)
        self._keep(_verifier(certs.cert_sn(alipay[0]), sdk, alipay[0], configured=True))
        return sdk

    def _keep(self, verifier: _Verifier) -> None:
        kept = {**self._verifiers, verifier.sn: verifier}
        downloaded = [sn for sn, v in kept.items() if not v.configured]
        for sn in downloaded[:-MAX_DOWNLOADED_CERTS]:      # the oldest first
            del kept[sn]
        self._verifiers = kept                             # copy on write: see _held

    def _verifier_for(self, text: str, response_type: str, operation: str) -> BaseAliPay:
        """The SDK object to verify this answer with: in certificate mode the one of the
        certificate its ``alipay_cert_sn`` names (downloaded when new)."""
        if not self._verifiers:
            return self._sdk
        try:
            doc = json.loads(text)
        except ValueError:
            return self._sdk                    # unreadable: the SDK says so below
        sn = doc.get("alipay_cert_sn") if isinstance(doc, dict) else None
        if not isinstance(sn, str) or not sn:
            inner = doc.get(response_type) if isinstance(doc, dict) else None
            if isinstance(doc, dict) and "sign" in doc and isinstance(inner, dict) \
                    and str(inner.get("code")) == translate.SUCCESS_CODE:
                # Alipay's Java SDK: "cert check fail: ALIPAY_CERT_SN is Empty!"
                raise OutcomeUnknown("Alipay answer names no alipay_cert_sn",
                                     channel=CHANNEL, operation=operation,
                                     code="CERT_SN_MISSING")
            return self._sdk                    # a failure: the configured certificate
        verifier = self._verifiers.get(sn) or self._download(sn, operation)
        if not verifier.valid(utcnow()):
            raise OutcomeUnknown("the Alipay certificate the answer names is outside its "
                                 "validity", channel=CHANNEL, operation=operation,
                                 code="CERT_EXPIRED")
        self._current_sn = sn
        return verifier.sdk

    def _download(self, sn: str, operation: str) -> _Verifier:
        """``alipay.open.app.alipaycert.download`` (CHANNELS-ADDENDUM §5): the certificate
        named ``sn``, trusted only through the configured roots (its answer's own
        signature is not what makes it trusted: Alipay's Java SDK does not check it)."""
        with self._cert_lock:
            known = self._verifiers.get(sn)
            if known is not None:
                return known

            def unknown(why: str, code: str) -> OutcomeUnknown:
                log.warning("alipay.cert_download_failed", sn=sn, reason=why)
                return OutcomeUnknown(f"Alipay answer names certificate {sn}: {why}",
                                      channel=CHANNEL, operation=operation, code=code)

            timestamp = to_beijing(self._clock()).strftime("%Y-%m-%d %H:%M:%S")
            data = self._sdk.build_body(CERT_DOWNLOAD, {"alipay_cert_sn": sn},
                                        timestamp=timestamp)
            try:
                raw = self._get(self.gateway_url + "?" + self._sdk.sign_data(data),
                                operation=operation, limit=MAX_ANSWER_BYTES)
            except ChannelError as exc:
                raise unknown(f"download failed ({exc.code})", "CERT_UNAVAILABLE") from None
            try:
                inner = json.loads(raw.decode("utf-8"))[
                    CERT_DOWNLOAD.replace(".", "_") + "_response"]
                code, content = str(inner.get("code")), inner.get("alipay_cert_content")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise unknown("download answer unreadable", "CERT_UNAVAILABLE") from None
            if code != translate.SUCCESS_CODE or not isinstance(content, str):
                raise unknown(f"download refused ({code} {inner.get('sub_code') or ''})",
                              "CERT_UNAVAILABLE")
            try:
                pem = base64.b64decode(content, validate=True).decode("ascii")
                chain = certs.load(pem)
                certs.verify_chain(chain, self._roots, utcnow())
            except (ValueError, UnicodeDecodeError) as exc:   # CertError is a ValueError
                raise unknown(f"not trusted: {exc}", "CERT_UNTRUSTED") from None
            if certs.cert_sn(chain[0]) != sn:
                raise unknown("the downloaded certificate has another SN", "CERT_UNTRUSTED")
            sdk = _sdk_or_config_error(partial(
                DCAliPay, appid=self.app_id,
                app_private_key_string=self._sdk._app_private_key_string,
                app_public_key_cert_string=self._sdk._app_public_key_cert_string,
                alipay_public_key_cert_string=certs.normalized(pem),
                alipay_root_cert_string=self._sdk._alipay_root_cert_string,
                sign_type="RSA2"))
            verifier = _verifier(sn, sdk, chain[0])
            self._keep(verifier)
            log.info("alipay.cert_downloaded", sn=sn)
            return verifier

    # -- OpenAPI calls ----------------------------------------------------------------
    def call(self, method: str, biz_content: Mapping[str, Any], *, operation: str,
             after_send: Callable[[], None] | None = None) -> Answer:
        """Send ``method`` and return the verified answer, a business failure included.

        Raises ``ChannelUnavailable`` (not sent), ``OutcomeUnknown`` (sent, no verified
        answer: read timeout, HTTP error, unsigned/unverifiable/unparseable answer, in
        certificate mode an answer naming no or an untrusted certificate) or
        ``ChannelAuthError`` (an unsigned answer saying our signature/app was rejected).
        """
        timestamp = to_beijing(self._clock()).strftime("%Y-%m-%d %H:%M:%S")
        extra = {"app_auth_token": self._token} if self._token else {}
        data = self._sdk.build_body(method, dict(biz_content), timestamp=timestamp, **extra)
        url = self.gateway_url + "?" + self._sdk.sign_data(data)
        raw = self._get(url, operation=operation, limit=MAX_ANSWER_BYTES)
        if after_send is not None:
            after_send()
        response_type = method.replace(".", "_") + "_response"
        try:
            text = raw.decode("utf-8")
        except ValueError:
            raise OutcomeUnknown("Alipay answer is not UTF-8", channel=CHANNEL,
                                 operation=operation, code="UNPARSEABLE") from None
        verifier = self._verifier_for(text, response_type, operation)
        try:
            body = verifier._verify_and_return_sync_response(text, response_type)
        except AliPayValidationError:
            # DESIGN invariant 4: an unverifiable answer to a request that was sent is an
            # unknown outcome (query first), not a refusal. SignatureInvalid is kept for
            # notifications, where "not genuine" means "never received".
            raise OutcomeUnknown("Alipay answer failed signature verification",
                                 channel=CHANNEL, operation=operation,
                                 code="SIGNATURE_INVALID") from None
        except AliPayException as exc:
            raise unsigned_failure(exc, operation) from None
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise OutcomeUnknown(f"Alipay answer unreadable ({type(exc).__name__})",
                                 channel=CHANNEL, operation=operation,
                                 code="UNPARSEABLE") from None
        if not isinstance(body, dict):
            raise OutcomeUnknown("Alipay answer is not an object", channel=CHANNEL,
                                 operation=operation, code="UNPARSEABLE")
        return Answer(method, self._scrubbed(body))

    def _scrubbed(self, body: dict[str, Any]) -> dict[str, Any]:
        """isv.invalid-signature echoes the string we signed, app_auth_token included
        (sandbox/alipay.py, addendum §6): never keep the token in evidence."""
        msg = body.get("sub_msg")
        if self._token and isinstance(msg, str) and self._token in msg:
            return {**body, "sub_msg": msg.replace(self._token, "***")}
        return body

    def verify(self, params: Mapping[str, str], signature: str) -> bool:
        """Notification check (CH §1.5): ``params`` without ``sign``; ``sign_type`` is
        popped by the SDK, so the canonical string excludes both. In certificate mode a
        notification names no certificate: any Alipay certificate held and valid now, the
        one answers last named first. Never raises."""
        sdks = [self._sdk]
        if self._verifiers:
            now = utcnow()
            sdks = [v.sdk for v in self._held() if v.valid(now)]
        for sdk in sdks:
            try:
                if sdk.verify(dict(params), signature):   # the SDK mutates its argument
                    return True
            except (AliPayException, ValueError, TypeError):   # bad sign_type, bad base64
                return False
        return False

    def fetch(self, url: str, *, operation: str, limit: int) -> bytes:
        """A plain GET (the bill URL is pre-authorised, CH §4.5), at most ``limit`` bytes."""
        if not url.startswith(("http://", "https://")):
            raise OutcomeUnknown("bill_download_url is not an http(s) URL", channel=CHANNEL,
                                 operation=operation, code="BAD_URL")
        return self._get(url, operation=operation, limit=limit,
                         deadline=self._download_deadline)

    # -- transport --------------------------------------------------------------------
    def _get(self, url: str, *, operation: str, limit: int,
             deadline: float | None = None) -> bytes:
        seconds = self._deadline if deadline is None else deadline
        try:
            with transport.deadline_guard(seconds), \
                    self._opener.open(url, timeout=min(self._connect_timeout, seconds)) as resp:
                chunks: list[bytes] = []
                size = 0
                while chunk := resp.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise OutcomeUnknown(f"answer larger than {limit} bytes",
                                             channel=CHANNEL, operation=operation,
                                             code="TOO_LARGE")
                    chunks.append(chunk)
                return b"".join(chunks)
        except ChannelError:
            raise
        except BaseException as exc:
            for held in (exc, exc.__cause__):
                if isinstance(held, urllib.error.HTTPError):
                    held.close()   # it holds the response socket
            error = transport_error(exc, operation)
            if error is None:
                raise
            raise error from None


def _sdk_or_config_error(make: Callable[[], BaseAliPay]) -> BaseAliPay:
    try:
        return make()
    except (ValueError, IndexError, TypeError) as exc:
        # Cryptodome says "RSA key format is not supported"; never echo the key.
        raise ConfigurationError(
            "REFUND_GATEWAY_ALIPAY__APP_PRIVATE_KEY / ALIPAY_PUBLIC_KEY: not an RSA PEM "
            f"key ({type(exc).__name__})", setting="REFUND_GATEWAY_ALIPAY__APP_PRIVATE_KEY"
        ) from None


def _verifier(sn: str, sdk: BaseAliPay, cert: x509.Certificate, *,
              configured: bool = False) -> _Verifier:
    return _Verifier(sn, sdk, cert.not_valid_before_utc, cert.not_valid_after_utc,
                     configured)


def transport_error(exc: BaseException, operation: str) -> ChannelError | None:
    """urllib failures -> the error tree (CH §1.3). ``None``: not a transport failure.

    Only a failure inside ``connect()`` proves nothing was sent (``ChannelUnavailable``).
    ``HTTPError`` is a ``URLError``: check it first. Everything after connecting (send
    error, read timeout, reset, truncated answer, HTTP error status, the deadline passing)
    is ``OutcomeUnknown``.
    """
    if isinstance(exc, transport.DeadlineExceeded):
        return transport.deadline_error(exc, channel=CHANNEL, operation=operation,
                                        label="Alipay")
    if isinstance(exc, urllib.error.HTTPError):
        status = exc.code
        if status == 401:
            return ChannelAuthError("Alipay gateway answered HTTP 401", channel=CHANNEL,
                                    operation=operation, http_status=status,
                                    code=f"HTTP_{status}")
        return OutcomeUnknown(f"Alipay gateway answered HTTP {status}", channel=CHANNEL,
                              operation=operation, http_status=status, code=f"HTTP_{status}")
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, _ConnectFailed):
            return ChannelUnavailable(f"cannot connect to Alipay: {reason}", channel=CHANNEL,
                                      operation=operation, code="CONNECT_FAILED")
        return OutcomeUnknown(f"Alipay request failed while sending: {reason}",
                              channel=CHANNEL, operation=operation, code="SEND_FAILED")
    if isinstance(exc, _ConnectFailed):   # defensive: urllib normally wraps it
        return ChannelUnavailable(f"cannot connect to Alipay: {exc}", channel=CHANNEL,
                                  operation=operation, code="CONNECT_FAILED")
    if isinstance(exc, TimeoutError):     # socket.timeout is TimeoutError (3.10+)
        return OutcomeUnknown("Alipay answer timed out", channel=CHANNEL,
                              operation=operation, code="READ_TIMEOUT")
    if isinstance(exc, http.client.HTTPException | OSError):
        return OutcomeUnknown(f"Alipay answer broken: {type(exc).__name__}", channel=CHANNEL,
                              operation=operation, code="READ_FAILED")
    return None


def sdk_exception_fields(exc: AliPayException) -> tuple[str | None, str | None, str | None]:
    """(code, sub_code, sub_msg) of an ``AliPayException``.

    The SDK keeps code and message (the raw answer body) in name-mangled private
    attributes (CH §1.3); read them defensively, and never trust them: the body was not
    signed.
    """
    code = getattr(exc, "_AliPayException__code", None)
    message = getattr(exc, "_AliPayException__message", None)
    sub_code = sub_msg = None
    if isinstance(message, str):
        try:
            doc = json.loads(message)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            inner = doc.get("error_response")
            if not isinstance(inner, dict):
                inner = next((v for k, v in doc.items()
                              if k.endswith("_response") and isinstance(v, dict)), None)
            if isinstance(inner, dict):
                sub_code = str(inner["sub_code"]) if inner.get("sub_code") else None
                sub_msg = str(inner["sub_msg"])[:200] if inner.get("sub_msg") else None
                code = code or inner.get("code")
    return (str(code) if code not in (None, "") else None), sub_code, sub_msg


def unsigned_failure(exc: AliPayException, operation: str) -> ChannelError:
    """An unsigned answer (no ``sign`` or an ``error_response``): not a verified refusal."""
    code, sub_code, _ = sdk_exception_fields(exc)
    shown = sub_code or code or "UNSIGNED"
    if translate.is_auth_failure(code, sub_code):
        return ChannelAuthError(f"Alipay rejected our request: {code} {sub_code}",
                                channel=CHANNEL, operation=operation, code=shown)
    return OutcomeUnknown(f"unsigned Alipay answer: {code} {sub_code}", channel=CHANNEL,
                          operation=operation, code=shown)
