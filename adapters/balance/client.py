"""HTTP client of the wallet service (the only balance module doing I/O).

Owns: the HMAC-SHA256 request signature, one request per call with explicit timeouts and
a total deadline (the ledger download its own, larger one), classifying transport trouble
into the error tree, and decoding JSON answers. Must not interpret business codes
(``translate.py``), retry or sleep. The wire contract is the
docstring of ``sandbox/balance.py`` (the wallet has no external spec); summary below.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from gateway import transport
from gateway.errors import ChannelAuthError, OutcomeUnknown
from gateway.models import Route

CHANNEL: Final = Route.BALANCE.value

# POST {base}/v1/refunds {"refund_no","user_id","order_no","amount_fen","currency","reason"}
# GET  {base}/v1/refunds/{refund_no} -> the record | 404 NOT_FOUND
# GET  {base}/v1/ledger/{YYYY-MM-DD} -> CSV bytes
# X-Timestamp (unix s), X-Nonce (hex, new per request), X-Signature = hex HMAC-SHA256 of
# METHOD \n PATH \n TIMESTAMP \n NONCE \n BODY, PATH as on the wire (base URL path
# included), key = the setting's UTF-8 bytes.
REFUNDS_PATH: Final = "/v1/refunds"
LEDGER_PATH: Final = "/v1/ledger"


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return b"\n".join([method.upper().encode(), path.encode(), timestamp.encode(),
                       nonce.encode(), body])


def hmac_signature(key: bytes, method: str, path: str, timestamp: str, nonce: str,
                   body: bytes) -> str:
    return hmac.new(key, string_to_sign(method, path, timestamp, nonce, body),
                    hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    operation: str
    http_status: int
    content: bytes
    request_id: str | None

    def json(self) -> dict[str, Any]:
        """The JSON object answered; ``OutcomeUnknown`` when it is not one."""
        try:
            data = json.loads(self.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise OutcomeUnknown("wallet answer is not JSON", channel=CHANNEL,
                                 operation=self.operation, http_status=self.http_status,
                                 code="UNPARSEABLE", request_id=self.request_id) from exc
        if not isinstance(data, dict):
            raise OutcomeUnknown("wallet answer is not a JSON object", channel=CHANNEL,
                                 operation=self.operation, http_status=self.http_status,
                                 code="UNPARSEABLE", request_id=self.request_id)
        return data


class WalletClient:
    """Signs and sends; holds a pooled session. ``now`` is injectable for tests."""

    def __init__(self, *, base_url: str, hmac_key: bytes, connect_timeout: float,
                 read_timeout: float, session: requests.Session | None = None,
                 now: Callable[[], float] = time.time, deadline: float | None = None,
                 download_deadline: float | None = None) -> None:
        """``deadline`` bounds each call, ``download_deadline`` the ledger's (operation
        ``statement``; None: ``gateway.transport``'s defaults)."""
        self.base_url = base_url.rstrip("/")
        self._prefix = urlsplit(self.base_url).path   # signed: the path as on the wire
        self._key = hmac_key
        self._connect, self._read = connect_timeout, read_timeout
        self._deadline = transport.call_deadline(connect_timeout, read_timeout, deadline)
        self._download_deadline = transport.download_deadline(download_deadline)
        self._session = session or transport.session()
        self._now = now

    def __repr__(self) -> str:  # never print the key
        return f"WalletClient(base_url={self.base_url!r})"

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        timestamp, nonce = str(int(self._now())), secrets.token_hex(16)
        return {"X-Timestamp": timestamp, "X-Nonce": nonce,
                "X-Signature": hmac_signature(self._key, method, path, timestamp, nonce, body)}

    def call(self, operation: str, method: str, path: str,
             payload: Mapping[str, Any] | None = None) -> Answer:
        body = b"" if payload is None else json.dumps(
            payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        headers = self.headers(method, self._prefix + path, body)
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        deadline = self._download_deadline if operation == "statement" else self._deadline
        try:
            resp = transport.exchange(self._session, method, self.base_url + path,
                                      data=body or None, headers=headers,
                                      connect=self._connect, read=self._read,
                                      deadline=deadline)
        except requests.RequestException as exc:
            raise transport.classify(exc, channel=CHANNEL, operation=operation,
                                     label="wallet") from exc
        status = resp.http_status
        answer = Answer(operation, status, resp.content, resp.headers.get("X-Request-Id"))
        if status == 401:   # SIGN_ERROR, TIMESTAMP_EXPIRED, NONCE_REPLAYED
            raise ChannelAuthError("the wallet service rejected our signature",
                                   channel=CHANNEL, operation=operation, http_status=status,
                                   code=_code(answer), request_id=answer.request_id)
        if status == 429 or status >= 500:
            raise OutcomeUnknown(f"wallet answered HTTP {status}", channel=CHANNEL,
                                 operation=operation, http_status=status,
                                 code=_code(answer) or f"HTTP_{status}",
                                 request_id=answer.request_id)
        return answer

    def close(self) -> None:
        self._session.close()


def _code(answer: Answer) -> str | None:
    try:
        data = json.loads(answer.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return str(code) if code is not None else None

