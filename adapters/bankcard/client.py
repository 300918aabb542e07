"""A thin UnionPay online-gateway 5.1.0 client (CH §6): the only bank-card module doing HTTP.

Owns: form-encoding and signing requests, one POST per call with explicit timeouts and a
total deadline (the settlement file's download its own, larger one), classifying transport
trouble into the error tree, parsing the ``k=v&k=v`` answer and verifying its signature
against a trusted ``signPubKeyCert``. Must not translate answer
codes (``translate.py``), retry or sleep. No Python UnionPay client is usable (CH §6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import requests
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.bankcard import signing
from gateway import transport
from gateway.errors import ChannelAuthError, OutcomeUnknown
from gateway.models import Route

log = structlog.get_logger(__name__)

CHANNEL: Final = Route.BANKCARD.value
# acp_sdk.properties (CH §6): back-channel transactions and single query.
BACK_TRANS_PATH: Final = "/gateway/api/backTransReq.do"
QUERY_PATH: Final = "/gateway/api/queryTrans.do"
FORM: Final = "application/x-www-form-urlencoded;charset=UTF-8"


_CLOSER: Final = {"{": "}", "[": "]"}


class ResponseFormatError(ValueError):
    """The answer is not a ``k=v&k=v`` string."""


def parse_response(text: str) -> dict[str, str]:
    """Parse UnionPay's answer: ``k=v`` pairs joined by ``&``, values NOT URL-encoded.

    Values may hold ``{...}``/``[...]`` nests (with ``&`` and ``=`` inside) and ``=``
    anywhere, so ``&`` separates pairs only at nesting depth 0, and a pair splits at its
    first ``=``. Empty values are kept. Unbalanced brackets, a pair without ``=``, an empty
    key or a repeated key raise ``ResponseFormatError``: an answer we cannot read
    unambiguously is not an answer.
    """
    text = text.strip()
    if not text:
        raise ResponseFormatError("empty answer")
    pairs: list[str] = []
    open_: list[str] = []   # the closers we expect, innermost last
    start = 0
    for i, ch in enumerate(text):
        if ch in _CLOSER:
            open_.append(_CLOSER[ch])
        elif ch in "}]":
            if not open_ or open_.pop() != ch:
                raise ResponseFormatError(f"unbalanced '{ch}' at offset {i}")
        elif ch == "&" and not open_:
            pairs.append(text[start:i])
            start = i + 1
    if open_:
        raise ResponseFormatError("unbalanced brackets")
    pairs.append(text[start:])
    fields: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ResponseFormatError("a pair without 'key='")
        if key in fields:
            raise ResponseFormatError(f"repeated key {key}")
        fields[key] = value
    return fields


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """One HTTP answer, before parsing (so a failpoint can sit between send and parse)."""

    operation: str
    http_status: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class UnionPayClient:
    """Signs, posts and verifies. One instance per merchant; holds a pooled session."""

    def __init__(self, *, base_url: str, mer_id: str, cert_id: str,
                 private_key: rsa.RSAPrivateKey, trust: signing.Trust,
                 connect_timeout: float, read_timeout: float,
                 session: requests.Session | None = None, deadline: float | None = None,
                 download_deadline: float | None = None) -> None:
        """``deadline`` bounds each call, ``download_deadline`` the file transfer's
        (None: ``gateway.transport``'s defaults)."""
        self.base_url = base_url.rstrip("/")
        self.mer_id = mer_id
        self.cert_id = cert_id
        self._key = private_key
        self._trust = trust
        self._connect, self._read = connect_timeout, read_timeout
        self._deadline = transport.call_deadline(connect_timeout, read_timeout, deadline)
        self._download_deadline = transport.download_deadline(download_deadline)
        self._session = session or transport.session()

    def __repr__(self) -> str:  # never print keys
        return f"UnionPayClient(base_url={self.base_url!r}, mer_id={self.mer_id!r})"

    def signed(self, fields: Mapping[str, str]) -> dict[str, str]:
        """The request as sent: blanks dropped (SDK ``filterBlank``), certId, signature."""
        body = {k: v for k, v in fields.items() if v is not None and v != ""}
        body["certId"] = self.cert_id
        body["merId"] = self.mer_id
        body.pop(signing.SIGNATURE_FIELD, None)
        body[signing.SIGNATURE_FIELD] = signing.sign(body, self._key)
        return body

    def send(self, operation: str, path: str, fields: Mapping[str, str]) -> RawAnswer:
        """POST the signed form; transport trouble raises, any HTTP answer is returned."""
        return self._post(operation, self.base_url + path, self.signed(fields),
                          self._deadline)

    def send_url(self, operation: str, url: str, fields: Mapping[str, str]) -> RawAnswer:
        """``send`` to a whole URL: the file transfer lives on a host of its own
        (``https://filedownload.95516.com/``, CHANNELS-ADDENDUM §1), and its answer holds
        the whole file: the download deadline applies."""
        return self._post(operation, url, self.signed(fields), self._download_deadline)

    def _post(self, operation: str, url: str, form: Mapping[str, str],
              deadline: float) -> RawAnswer:
        try:
            resp = transport.exchange(self._session, "POST", url, data=form,
                                      headers={"Content-Type": FORM}, connect=self._connect,
                                      read=self._read, deadline=deadline)
        except requests.RequestException as exc:
            raise transport.classify(exc, channel=CHANNEL, operation=operation,
                                     label="UnionPay") from exc
        return RawAnswer(operation, resp.http_status, resp.content)

    def decode(self, answer: RawAnswer, now: datetime) -> dict[str, str]:
        """Check the HTTP status, parse and verify; the verified fields or an error."""
        op, status = answer.operation, answer.http_status
        if status in (401, 403):
            raise ChannelAuthError("UnionPay refused our credentials", channel=CHANNEL,
                                   operation=op, http_status=status, code=f"HTTP_{status}")
        if status != 200:
            # 429, 5xx and any other non-answer: the request may have been processed.
            raise OutcomeUnknown(f"UnionPay answered HTTP {status}", channel=CHANNEL,
                                 operation=op, http_status=status, code=f"HTTP_{status}")
        try:
            fields = parse_response(answer.text)
        except ResponseFormatError as exc:
            raise OutcomeUnknown(f"UnionPay answer unreadable: {exc}", channel=CHANNEL,
                                 operation=op, http_status=status,
                                 code="UNPARSEABLE") from exc
        self.verify(fields, op, now, http_status=status)
        return fields

    def verify(self, fields: Mapping[str, str], operation: str, now: datetime, *,
               http_status: int | None = None) -> None:
        """Raise ``OutcomeUnknown(code=SIGNATURE_INVALID)`` unless the fields verify."""
        why = signing.problem(fields, self._trust, now)
        if why is not None:
            log.warning("bankcard.signature_invalid", operation=operation, reason=why,
                        resp_code=fields.get("respCode"))
            raise OutcomeUnknown(f"UnionPay answer not verified: {why}", channel=CHANNEL,
                                 operation=operation, http_status=http_status,
                                 code="SIGNATURE_INVALID",
                                 request_id=fields.get("queryId") or None)

    def close(self) -> None:
        self._session.close()

