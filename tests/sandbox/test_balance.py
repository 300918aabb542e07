"""Balance (wallet) sandbox over real HTTP, with a client written here from the contract in
``sandbox/balance.py``'s docstring (HMAC-SHA256 over METHOD/PATH/TIMESTAMP/NONCE/BODY)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from sandbox.server import SandboxServer

BEIJING = timezone(timedelta(hours=8))


class Wallet:
    def __init__(self, sandbox: SandboxServer) -> None:
        settings = sandbox.settings()
        self.sandbox = sandbox
        self.base = settings["REFUND_GATEWAY_BALANCE__BASE_URL"]
        self.key = settings["REFUND_GATEWAY_BALANCE__HMAC_KEY"].encode()

    def headers(self, method: str, path: str, body: bytes, *, timestamp: int | None = None,
                nonce: str | None = None, key: bytes | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or secrets.token_hex(16)
        message = f"{method}\n{path}\n{ts}\n{nonce}\n".encode() + body
        signature = hmac.new(key or self.key, message, hashlib.sha256).hexdigest()
        return {"X-Timestamp": ts, "X-Nonce": nonce, "X-Signature": signature}

    def call(self, method: str, path: str, data: dict[str, Any] | None = None,
             **sign: Any) -> requests.Response:
        body = json.dumps(data).encode() if data is not None else b""
        url = self.base + path
        signed_path = url.removeprefix(self.sandbox.url)
        headers = self.headers(method, signed_path, body, **sign)
        if data is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(method, url, data=body or None, headers=headers, timeout=5)

    def credit(self, refund_no: str = "RF0001", amount_fen: int = 1500,
               user_id: str = "u42", **sign: Any) -> requests.Response:
        return self.call("POST", "/v1/refunds", {
            "refund_no": refund_no, "user_id": user_id, "order_no": "ORD1",
            "amount_fen": amount_fen, "currency": "CNY", "reason": "退款"}, **sign)

    def fault(self, operation: str, kind: str) -> None:
        requests.post(self.sandbox.url + "/_sandbox/faults", timeout=5, json={
            "route": "balance", "operation": operation, "kind": kind})

    def truth(self) -> list[dict[str, Any]]:
        return [r for r in self.sandbox.state.truth() if r["route"] == "balance"]


@pytest.fixture
def wallet(refund_sandbox: SandboxServer) -> Wallet:
    return Wallet(refund_sandbox)


def test_credit_then_query(wallet: Wallet) -> None:
    assert wallet.base == wallet.sandbox.url + "/balance"
    r = wallet.credit()
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["wallet_txn_id"].startswith("WT")
    assert {k: v for k, v in record.items() if k not in ("wallet_txn_id", "credited_at")} == {
        "refund_no": "RF0001", "user_id": "u42", "order_no": "ORD1", "amount_fen": 1500,
        "currency": "CNY", "status": "SUCCESS"}
    assert datetime.fromisoformat(record["credited_at"]).utcoffset() == timedelta(hours=8)
    got = wallet.call("GET", "/v1/refunds/RF0001")
    assert got.status_code == 200 and got.json() == record
    missing = wallet.call("GET", "/v1/refunds/NOPE")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    [truth] = wallet.truth()
    assert (truth["status"], truth["executions"], truth["amount_fen"]) == ("SUCCESS", 1, 1500)


def test_idempotent_repeat_and_conflict(wallet: Wallet) -> None:
    first = wallet.credit().json()
    again = wallet.credit()
    assert again.status_code == 200 and again.json() == first
    conflict = wallet.credit(amount_fen=1501)
    assert conflict.status_code == 409 and conflict.json()["code"] == "IDEMPOTENCY_CONFLICT"
    [truth] = wallet.truth()
    assert (truth["executions"], truth["amount_fen"]) == (1, 1500)


def test_forged_stale_and_replayed_requests_refused(wallet: Wallet) -> None:
    forged = wallet.credit(key=b"not-the-key")
    assert forged.status_code == 401 and forged.json()["code"] == "SIGN_ERROR"
    unsigned = requests.post(wallet.base + "/v1/refunds", json={}, timeout=5)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "SIGN_ERROR"
    stale = wallet.credit(timestamp=int(time.time()) - 301)
    assert stale.status_code == 401 and stale.json()["code"] == "TIMESTAMP_EXPIRED"
    assert wallet.credit(nonce="a1b2c3d4e5f60718").status_code == 200
    replayed = wallet.credit(refund_no="RF0002", nonce="a1b2c3d4e5f60718")
    assert replayed.status_code == 401 and replayed.json()["code"] == "NONCE_REPLAYED"
    assert [t["channel_refund_no"] for t in wallet.truth()] == ["RF0001"]


def test_signed_path_includes_prefix(wallet: Wallet) -> None:
    body = json.dumps({"refund_no": "RF9", "user_id": "u", "order_no": "o",
                       "amount_fen": 1, "currency": "CNY"}).encode()
    headers = wallet.headers("POST", "/v1/refunds", body)      # prefix left out
    r = requests.post(wallet.base + "/v1/refunds", data=body, headers=headers, timeout=5)
    assert r.status_code == 401


def test_invalid_body(wallet: Wallet) -> None:
    for bad in ({"amount_fen": 1.5}, {"amount_fen": "100"}, {"amount_fen": 0},
                {"currency": "USD"}, {"refund_no": "has space"}):
        data = {"refund_no": "RF1", "user_id": "u", "order_no": "o", "amount_fen": 1,
                "currency": "CNY", **bad}
        r = wallet.call("POST", "/v1/refunds", data)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", bad
    assert wallet.truth() == []


def test_frozen_account_refused_nothing_credited(wallet: Wallet) -> None:
    wallet.fault("refund", "abnormal")
    r = wallet.credit()
    assert r.status_code == 403 and r.json()["code"] == "ACCOUNT_FROZEN"
    assert wallet.truth() == []
    assert wallet.credit().status_code == 200


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("rate_limited", 429, "RATE_LIMITED"), ("http_500", 500, "SYSTEM_ERROR")])
def test_busy_and_server_error_credit_nothing(wallet: Wallet, kind: str, status: int,
                                              code: str) -> None:
    wallet.fault("refund", kind)
    r = wallet.credit()
    assert r.status_code == status and r.json()["code"] == code
    assert wallet.truth() == []


def test_timeout_after_commit_credits_once(wallet: Wallet) -> None:
    requests.post(wallet.sandbox.url + "/_sandbox/faults", timeout=5, json={
        "route": "balance", "operation": "refund", "kind": "timeout_after_commit",
        "stall_seconds": 1.0})
    body = {"refund_no": "RF7", "user_id": "u", "order_no": "o", "amount_fen": 5,
            "currency": "CNY"}
    raw = json.dumps(body).encode()
    with pytest.raises(requests.ReadTimeout):
        requests.post(wallet.base + "/v1/refunds", data=raw, timeout=(2, 0.3),
                      headers=wallet.headers("POST", "/balance/v1/refunds", raw))
    assert wallet.call("GET", "/v1/refunds/RF7").json()["status"] == "SUCCESS"
    assert wallet.call("POST", "/v1/refunds", body).status_code == 200
    assert wallet.truth()[0]["executions"] == 1


def test_ledger_csv(wallet: Wallet) -> None:
    first = wallet.credit("RF0001", 1500, "u42").json()
    second = wallet.credit("RF0002", 30, "u43").json()
    day = datetime.now(BEIJING).date()
    r = wallet.call("GET", f"/v1/ledger/{day.isoformat()}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    lines = r.content.decode("utf-8").split("\n")
    assert lines[0] == ("wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,"
                        "status,credited_at")
    assert lines[1:] == [
        f"{first['wallet_txn_id']},RF0001,u42,ORD1,1500,CNY,SUCCESS,{first['credited_at']}",
        f"{second['wallet_txn_id']},RF0002,u43,ORD1,30,CNY,SUCCESS,{second['credited_at']}",
        ""]
    other = wallet.call("GET", f"/v1/ledger/{(day - timedelta(days=2)).isoformat()}")
    assert other.content.decode().splitlines() == [lines[0]]


def test_ledger_faults(wallet: Wallet) -> None:
    for n in range(3):
        wallet.credit(f"RF000{n}", 100 + n)
    wallet.fault("statement", "missing_from_statement")
    requests.post(wallet.sandbox.url + "/_sandbox/faults", timeout=5, json={
        "route": "balance", "operation": "statement", "kind": "amount_drift", "drift": -10,
        "drift_fen": -10})
    wallet.fault("statement", "duplicate_in_statement")
    day = datetime.now(BEIJING).date()
    rows = [line.split(",") for line in
            wallet.sandbox.statement("balance", day).decode().splitlines()[1:]]
    assert [(r[1], r[4]) for r in rows] == [("RF0001", "91"), ("RF0002", "102"),
                                            ("RF0002", "102")]
