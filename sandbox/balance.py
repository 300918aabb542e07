"""The platform wallet (balance) service: credits a user's wallet as a refund (route ``balance``).

There is no external spec for this service: this docstring IS its contract.

Base URL: ``{sandbox url}/balance`` (``REFUND_GATEWAY_BALANCE__BASE_URL``); JSON in UTF-8.

Endpoints
---------
``POST {base}/v1/refunds``  body ``{"refund_no", "user_id", "order_no", "amount_fen",
"currency", "reason"}`` -> 200 and the refund record.
``GET  {base}/v1/refunds/{refund_no}`` -> 200 and the refund record | 404 ``NOT_FOUND``.
``GET  {base}/v1/ledger/{YYYY-MM-DD}`` -> 200 ``text/csv`` bytes: the day's ledger.

Request fields: ``refund_no`` 1-64 of ``[A-Za-z0-9_-]`` (the idempotency key);
``user_id`` and ``order_no`` 1-64 of ``[A-Za-z0-9_.:-]``; ``amount_fen`` a positive JSON
integer (fen; no floats, no strings); ``currency`` ``"CNY"``; ``reason`` optional string of at
most 256 characters. Unknown fields are ignored. A bad body -> 400 ``INVALID_REQUEST``.

Any ``user_id`` is credited: the service does not require ``order_no`` to be a balance
payment (the balance route is also the fallback for refunds that failed on another route)
and does not cap Σ per order; the gateway owns the cap. ``order_no`` is informational.

Refund record (``POST`` and ``GET`` answer the same object)::

    {"refund_no": "...", "wallet_txn_id": "WT<YYYYMMDD><10 digits>", "user_id": "...",
     "order_no": "...", "amount_fen": 1234, "currency": "CNY", "status": "SUCCESS",
     "credited_at": "2026-01-01T12:00:00+08:00"}

Credits succeed instantly (status is always ``SUCCESS``; the route's Settle rule does not
apply; there are no notifications).

Idempotency: per ``refund_no``. A repeat whose ``user_id``, ``order_no``, ``amount_fen`` and
``currency`` equal the first request's gets the first record again (200) and credits
nothing more (``reason`` is not compared). A repeat that differs -> 409
``IDEMPOTENCY_CONFLICT``. Refused requests (4xx/5xx) record nothing, so the same
``refund_no`` may be sent again.

Authentication (every request, GET included)
--------------------------------------------
Headers ``X-Timestamp`` (unix seconds, decimal), ``X-Nonce`` (8-64 hex digits, new per
request), ``X-Signature`` = lowercase hex HMAC-SHA256 with the key
``REFUND_GATEWAY_BALANCE__HMAC_KEY`` (its UTF-8 bytes as given, NOT hex-decoded) over::

    METHOD "\\n" PATH "\\n" TIMESTAMP "\\n" NONCE "\\n" BODY

METHOD upper case; PATH = the request path exactly as sent on the wire, INCLUDING the
``/balance`` prefix of the base URL and the query string if any (e.g.
``/balance/v1/refunds``); TIMESTAMP and NONCE as in the headers; BODY = the raw body bytes
(empty for GET). Checks, in this order, all answered 401:
missing header or wrong signature -> ``SIGN_ERROR``; ``|now - X-Timestamp| > 300`` s ->
``TIMESTAMP_EXPIRED``; a nonce already seen on a correctly signed request in this run ->
``NONCE_REPLAYED`` (a retry must use a new nonce and timestamp). Answers are not signed.

Errors: ``{"code": ..., "message": ...}``. 400 ``INVALID_REQUEST``, 401 as above, 403
``ACCOUNT_FROZEN`` (the user's wallet is frozen: nothing credited; fault ``abnormal``), 404
``NOT_FOUND``, 409 ``IDEMPOTENCY_CONFLICT``, 429 ``RATE_LIMITED`` (fault ``rate_limited``,
refund or query: nothing done, retry later), 500 ``SYSTEM_ERROR`` (fault ``http_500``:
nothing done). Only 200 means credited; 403/409/400 are refusals; 401/429/500 and
transport errors leave the outcome to a ``GET`` (or a resend with the same body). The
connection faults of ``sandbox.server`` (``timeout_after_commit``, ``drop_before_commit``,
``truncated_body``, ``latency``) apply to refund, query and ledger (operation
``statement``) alike.

Ledger CSV (``GET {base}/v1/ledger/{YYYY-MM-DD}``, also ``statement(day)``)
-----------------------------------------------------------------------------
UTF-8 without BOM, ``\\n`` line ends (the last line too), comma-separated, no quoting (no
field can contain a comma or quote). First line exactly::

    wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,credited_at

then one row per credit whose ``credited_at`` falls on the day in Beijing time, oldest
first: ``amount_fen`` a plain positive integer, ``currency`` ``CNY``, ``status``
``SUCCESS``, ``credited_at`` ISO 8601 with ``+08:00`` (as in the record). No totals. A day
without credits is the header line alone. Statement faults apply (a row missing, a row
twice, ``amount_fen`` drifted).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import date
from typing import Any

from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.state import BEIJING, Refund, now_utc

PREFIX = "/balance"
HEADER = "wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,credited_at"
REFUND_NO = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
NONCE = re.compile(r"[0-9a-fA-F]{8,64}")
MAX_SKEW = 300
COMPARED = ("user_id", "order_no", "amount_fen", "currency")


def _error(status: int, code: str, message: str) -> Response:
    return Response.json({"code": code, "message": message}, status)


class BalanceChannel(Channel):
    route = "balance"
    prefixes = (PREFIX + "/",)

    def operation(self, request: Request) -> str | None:
        path = request.path
        if request.method == "POST" and path == PREFIX + "/v1/refunds":
            return "refund"
        if request.method == "GET" and path.startswith(PREFIX + "/v1/refunds/"):
            return "query"
        if request.method == "GET" and path.startswith(PREFIX + "/v1/ledger/"):
            return "statement"
        return None

    def server_error(self) -> Response:
        return _error(500, "SYSTEM_ERROR", "system error, try again later")

    def client_settings(self, base_url: str) -> dict[str, str]:
        return {"REFUND_GATEWAY_BALANCE__BASE_URL": base_url + PREFIX,
                "REFUND_GATEWAY_BALANCE__HMAC_KEY": self.keys.balance_hmac_key}

    def handle(self, request: Request) -> Response:
        operation = self.operation(request)
        if operation is None:
            return _error(404, "NOT_FOUND", f"no endpoint {request.method} {request.path}")
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        kind = request.fault.kind if request.fault is not None else None
        if kind == "rate_limited" and operation in ("refund", "query"):
            return _error(429, "RATE_LIMITED", "too many requests, retry later")
        if operation == "refund":
            return self._refund(request, frozen=kind == "abnormal")
        tail = request.path.rsplit("/", 1)[-1]
        if operation == "query":
            with self.state.lock:
                refund = self.state.refunds.get((self.route, tail))
                record = self._record(refund) if refund is not None else None
            if record is None:
                return _error(404, "NOT_FOUND", f"no refund {tail}")
            return Response.json(record)
        try:
            day = date.fromisoformat(tail)
        except ValueError:
            return _error(400, "INVALID_REQUEST", "ledger date must be YYYY-MM-DD")
        return Response(200, self.statement(day, request.base_url),
                        {"Content-Type": "text/csv; charset=utf-8"})

    # -- authentication -----------------------------------------------------------------
    def _authenticate(self, request: Request) -> Response | None:
        timestamp = request.headers.get("X-Timestamp") or ""
        nonce = request.headers.get("X-Nonce") or ""
        signature = request.headers.get("X-Signature") or ""
        if not (timestamp.isdigit() and NONCE.fullmatch(nonce) and signature):
            return _error(401, "SIGN_ERROR", "X-Timestamp, X-Nonce and X-Signature required")
        message = (f"{request.method.upper()}\n{request.target}\n{timestamp}\n{nonce}\n"
                   .encode() + request.body)
        expected = hmac.new(self.keys.balance_hmac_key.encode(), message,
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            return _error(401, "SIGN_ERROR", "signature does not verify")
        if abs(time.time() - int(timestamp)) > MAX_SKEW:
            return _error(401, "TIMESTAMP_EXPIRED", f"X-Timestamp more than {MAX_SKEW} s off")
        with self.state.lock:
            key = f"balance:{nonce.lower()}"
            if key in self.state.nonces:
                return _error(401, "NONCE_REPLAYED", "X-Nonce already used")
            self.state.nonces.add(key)
        return None

    # -- credits ------------------------------------------------------------------------
    def _refund(self, request: Request, *, frozen: bool) -> Response:
        try:
            body: Any = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "INVALID_REQUEST", "body is not JSON")
        problem = self._invalid(body)
        if problem:
            return _error(400, "INVALID_REQUEST", problem)
        fingerprint = json.dumps([body[k] for k in COMPARED])
        with self.state.lock:
            existing = self.state.refunds.get((self.route, body["refund_no"]))
            if existing is not None:
                if existing.request_fingerprint != fingerprint:
                    return _error(409, "IDEMPOTENCY_CONFLICT",
                                  "refund_no already used with a different body")
                return Response.json(self._record(existing))
            if frozen:
                return _error(403, "ACCOUNT_FROZEN",
                              f"wallet of {body['user_id']} is frozen; nothing credited")
            now = now_utc()
            payment = self.state.find_payment(self.route, order_no=body["order_no"])
            refund = Refund(
                route=self.route, channel_refund_no=body["refund_no"],
                channel_refund_id=(f"WT{now.astimezone(BEIJING):%Y%m%d}"
                                   + self.state.next_id(10)),
                merchant_order_no=body["order_no"],
                channel_trade_no=payment.channel_trade_no if payment else "",
                amount_fen=body["amount_fen"], status="SUCCESS", created_at=now,
                succeeded_at=now, request_fingerprint=fingerprint,
                extra={"user_id": body["user_id"], "currency": body["currency"],
                       "reason": body.get("reason") or ""})
            self.state.refunds[(self.route, refund.channel_refund_no)] = refund
            if payment is not None:
                payment.refunded_fen += refund.amount_fen
            return Response.json(self._record(refund))

    @staticmethod
    def _invalid(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        if not isinstance(body.get("refund_no"), str) or \
                not REFUND_NO.fullmatch(body["refund_no"]):
            return "refund_no must be 1-64 of [A-Za-z0-9_-]"
        for name in ("user_id", "order_no"):
            if not isinstance(body.get(name), str) or not NAME.fullmatch(body[name]):
                return f"{name} must be 1-64 of [A-Za-z0-9_.:-]"
        amount = body.get("amount_fen")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return "amount_fen must be a positive integer (fen)"
        if body.get("currency") != "CNY":
            return "currency must be CNY"
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 256):
            return "reason must be a string of at most 256 characters"
        return None

    @staticmethod
    def _record(refund: Refund) -> dict[str, Any]:
        credited = refund.succeeded_at or refund.created_at
        return {"refund_no": refund.channel_refund_no,
                "wallet_txn_id": refund.channel_refund_id,
                "user_id": refund.extra["user_id"],
                "order_no": refund.merchant_order_no,
                "amount_fen": refund.amount_fen, "currency": refund.extra["currency"],
                "status": refund.status,
                "credited_at": credited.astimezone(BEIJING).isoformat(timespec="seconds")}

    # -- ledger -------------------------------------------------------------------------
    def statement(self, day: date, base_url: str) -> bytes:
        lines = [HEADER]
        for refund, fen in self.statement_faults(self.refunds_on(day)):
            record = self._record(refund)
            lines.append(",".join((record["wallet_txn_id"], record["refund_no"],
                                   record["user_id"], record["order_no"], str(fen),
                                   record["currency"], record["status"],
                                   record["credited_at"])))
        return ("\n".join(lines) + "\n").encode("utf-8")
