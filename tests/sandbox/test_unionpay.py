"""UnionPay 5.1.0 sandbox over real HTTP, with a client written here from CH §6's steps.

The signing below is deliberately not imported from ``sandbox.unionpay``: sorted ``k=v``
of every field but ``signature`` joined by ``&`` -> lowercase SHA-256 hex ->
SHA256withRSA (PKCS#1 v1.5) over the hex's ASCII bytes -> base64.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.server import SandboxServer
from tests.sandbox.channel_support import Catcher

BEIJING = timezone(timedelta(hours=8))
PREFIX = "REFUND_GATEWAY_BANKCARD__"


def digest(fields: dict[str, str]) -> bytes:
    text = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def parse_answer(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split("&"):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def verifies(fields: dict[str, str], trusted_pem: str) -> bool:
    """The answer's cert is the one we trust, and its key verifies the signature."""
    if fields.get("signPubKeyCert") != trusted_pem:
        return False
    public = x509.load_pem_x509_certificate(trusted_pem.encode()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(base64.b64decode(fields["signature"]), digest(fields),
                      padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


class Client:
    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self.settings = sandbox.settings()
        key = serialization.load_pem_private_key(
            self.settings[PREFIX + "PRIVATE_KEY"].encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key
        self.base = self.settings[PREFIX + "BASE_URL"]
        self.cert = self.settings[PREFIX + "UNIONPAY_PUBLIC_KEY"]

    def sign(self, fields: dict[str, str]) -> dict[str, str]:
        fields = {**fields, "certId": self.settings[PREFIX + "CERT_ID"]}
        signature = self.key.sign(digest(fields), padding.PKCS1v15(), hashes.SHA256())
        return {**fields, "signature": base64.b64encode(signature).decode()}

    def post(self, path: str, fields: dict[str, str], timeout: Any = 5) -> requests.Response:
        return requests.post(self.base + path, data=fields, timeout=timeout)

    def refund_fields(self, order_id: str, orig_qry_id: str, fen: int,
                      txn_time: str | None = None, back_url: str = "http://127.0.0.1:9/n"
                      ) -> dict[str, str]:
        return self.sign({
            "version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "04",
            "txnSubType": "00", "bizType": "000201", "accessType": "0", "channelType": "07",
            "merId": self.settings[PREFIX + "MER_ID"], "orderId": order_id,
            "txnTime": txn_time or datetime.now(BEIJING).strftime("%Y%m%d%H%M%S"),
            "txnAmt": str(fen), "currencyCode": "156", "origQryId": orig_qry_id,
            "backUrl": back_url})

    def refund(self, fields: dict[str, str], timeout: Any = 5) -> dict[str, str]:
        r = self.post("/gateway/api/backTransReq.do", fields, timeout)
        assert r.status_code == 200
        answer = parse_answer(r.text)
        assert verifies(answer, self.cert), answer
        return answer

    def query(self, order_id: str, txn_time: str) -> dict[str, str]:
        fields = self.sign({
            "version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "00",
            "txnSubType": "00", "bizType": "000000", "accessType": "0",
            "merId": self.settings[PREFIX + "MER_ID"], "orderId": order_id,
            "txnTime": txn_time})
        r = self.post("/gateway/api/queryTrans.do", fields)
        assert r.status_code == 200
        answer = parse_answer(r.text)
        assert verifies(answer, self.cert), answer
        return answer

    def payment(self, fen: int = 10000) -> dict[str, Any]:
        r = requests.post(self.base + "/_sandbox/payments",
                          json={"route": "bankcard", "amount_fen": fen}, timeout=5)
        assert r.status_code == 200
        data: dict[str, Any] = r.json()
        return data

    def fault(self, operation: str, kind: str, **params: Any) -> None:
        r = requests.post(self.base + "/_sandbox/faults",
                          json={"route": "bankcard", "operation": operation, "kind": kind,
                                **params}, timeout=5)
        assert r.status_code == 200

    def truth(self) -> list[dict[str, Any]]:
        refunds: list[dict[str, Any]] = requests.get(
            self.base + "/_sandbox/refunds", timeout=5).json()["refunds"]
        return [r for r in refunds if r["route"] == "bankcard"]


@pytest.fixture
def client(refund_sandbox: SandboxServer) -> Client:
    return Client(refund_sandbox)


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    c = Catcher()
    yield c
    c.close()


def test_refund_accepted_then_query_success(client: Client) -> None:
    pay = client.payment(10000)
    fields = client.refund_fields("R20260101A0001", pay["channel_trade_no"], 2500)
    answer = client.refund(fields)
    assert answer["respCode"] == "00"
    assert len(answer["queryId"]) == 21 and answer["queryId"].isdigit()
    assert {k: answer[k] for k in ("orderId", "txnAmt", "txnType", "merId")} == {
        "orderId": "R20260101A0001", "txnAmt": "2500", "txnType": "04",
        "merId": "777290058110048"}
    query = client.query("R20260101A0001", fields["txnTime"])
    assert (query["respCode"], query["origRespCode"]) == ("00", "00")
    assert query["queryId"] == answer["queryId"]
    assert query["origQryId"] == pay["channel_trade_no"]
    assert len(query["settleDate"]) == 4 and len(query["traceNo"]) == 6
    [truth] = client.truth()
    assert (truth["status"], truth["executions"], truth["amount_fen"]) == ("SUCCESS", 1, 2500)
    assert truth["channel_refund_id"] == answer["queryId"]


def test_answer_is_raw_kv_with_pinned_cert(client: Client) -> None:
    pay = client.payment()
    r = client.post("/gateway/api/backTransReq.do",
                    client.refund_fields("R20260101A0002", pay["channel_trade_no"], 1))
    assert "-----BEGIN CERTIFICATE-----\n" in r.text      # not URL-encoded
    answer = parse_answer(r.text)
    assert verifies(answer, client.cert)
    tampered = {**answer, "txnAmt": "2"}
    assert not verifies(tampered, client.cert)


def test_repeat_is_idempotent_and_changed_repeat_refused(client: Client) -> None:
    """Addendum §2: a taken orderId is 12 重复交易[2010002], resent as it was or changed;
    nothing runs twice, and the first request's fate is the query's to tell."""
    pay = client.payment(10000)
    fields = client.refund_fields("R20260101A0003", pay["channel_trade_no"], 3000)
    first = client.refund(fields)
    again = client.refund(client.sign({k: v for k, v in fields.items() if k != "signature"}))
    assert (again["respCode"], again["respMsg"]) == ("12", "重复交易[2010002]")
    assert "queryId" not in again
    changed = client.refund(client.refund_fields("R20260101A0003", pay["channel_trade_no"],
                                                 3001, txn_time=fields["txnTime"]))
    assert changed["respCode"] == "12" and "queryId" not in changed
    assert client.query("R20260101A0003", fields["txnTime"])["queryId"] == first["queryId"]
    [truth] = client.truth()
    assert (truth["executions"], truth["amount_fen"]) == (1, 3000)


def test_over_refund_and_unknown_original_refused(client: Client) -> None:
    pay = client.payment(1000)
    assert client.refund(client.refund_fields(
        "R20260101A0004", pay["channel_trade_no"], 600))["respCode"] == "00"
    over = client.refund(client.refund_fields("R20260101A0005", pay["channel_trade_no"], 401))
    assert over["respCode"] == "33"
    rest = client.refund(client.refund_fields("R20260101A0006", pay["channel_trade_no"], 400))
    assert rest["respCode"] == "00"
    unknown = client.refund(client.refund_fields("R20260101A0007", "999", 1))
    assert unknown["respCode"] == "35"
    assert sorted(r["channel_refund_no"] for r in client.truth()) == [
        "R20260101A0004", "R20260101A0006"]


def test_bad_request_signature_and_format(client: Client) -> None:
    pay = client.payment()
    fields = client.refund_fields("R20260101A0008", pay["channel_trade_no"], 100)
    forged = client.refund({**fields, "txnAmt": "10000"})
    assert forged["respCode"] == "11"
    wrong_cert = client.refund({**fields, "certId": "1"})
    assert wrong_cert["respCode"] == "11"
    bad_order = client.refund(client.refund_fields("R-2026_01", pay["channel_trade_no"], 1))
    assert bad_order["respCode"] == "10"
    missing = client.refund(client.sign({k: v for k, v in fields.items()
                                         if k not in ("signature", "origQryId")}))
    assert missing["respCode"] == "13"
    assert client.truth() == []


def test_query_unknown_and_wrong_txn_time(client: Client) -> None:
    assert client.query("R20260101NONE", "20260101120000")["respCode"] == "34"
    pay = client.payment()
    fields = client.refund_fields("R20260101A0009", pay["channel_trade_no"], 100)
    client.refund(fields)
    assert client.query("R20260101A0009", "20000101000000")["respCode"] == "34"


def test_settle_after_queries(client: Client) -> None:
    requests.post(client.base + "/_sandbox/config",
                  json={"settle": {"bankcard": {"mode": "after_queries", "n": 2}}}, timeout=5)
    pay = client.payment()
    fields = client.refund_fields("R20260101A0010", pay["channel_trade_no"], 100)
    assert client.refund(fields)["respCode"] == "00"
    assert client.truth()[0]["status"] == "PROCESSING"
    first = client.query("R20260101A0010", fields["txnTime"])
    assert (first["respCode"], first["origRespCode"]) == ("00", "05")
    assert "settleDate" not in first
    assert client.query("R20260101A0010", fields["txnTime"])["origRespCode"] == "00"


def test_abnormal_fails_after_acceptance(client: Client, catcher: Catcher) -> None:
    client.fault("refund", "abnormal")
    pay = client.payment(500)
    fields = client.refund_fields("R20260101A0011", pay["channel_trade_no"], 500,
                                  back_url=catcher.url)
    assert client.refund(fields)["respCode"] == "00"
    query = client.query("R20260101A0011", fields["txnTime"])
    assert (query["respCode"], query["origRespCode"]) == ("00", "63")
    [(_, body)] = catcher.wait(1)
    note = dict(parse_qsl(body.decode()))
    assert note["respCode"] == "63" and verifies(note, client.cert)
    assert client.truth()[0]["status"] == "ABNORMAL"
    # The failed refund gave its room back: the amount can go another way.
    again = client.refund(client.refund_fields("R20260101A0012", pay["channel_trade_no"], 500))
    assert again["respCode"] == "00"


def test_back_notification_signed_and_verifiable(client: Client, catcher: Catcher) -> None:
    pay = client.payment()
    fields = client.refund_fields("R20260101A0013", pay["channel_trade_no"], 700,
                                  back_url=catcher.url)
    answer = client.refund(fields)
    [(headers, body)] = catcher.wait(1)
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    note = dict(parse_qsl(body.decode("utf-8")))
    assert verifies(note, client.cert)
    assert {k: note[k] for k in ("orderId", "txnTime", "txnAmt", "queryId", "origQryId",
                                 "respCode", "txnType", "merId")} == {
        "orderId": "R20260101A0013", "txnTime": fields["txnTime"], "txnAmt": "700",
        "queryId": answer["queryId"], "origQryId": pay["channel_trade_no"],
        "respCode": "00", "txnType": "04", "merId": "777290058110048"}
    assert note["respMsg"] and len(note["settleDate"]) == 4 and len(note["traceNo"]) == 6


def test_notification_bad_signature_fault(client: Client, catcher: Catcher) -> None:
    client.fault("notify", "bad_signature")
    pay = client.payment()
    client.refund(client.refund_fields("R20260101A0014", pay["channel_trade_no"], 1,
                                       back_url=catcher.url))
    [(_, body)] = catcher.wait(1)
    assert not verifies(dict(parse_qsl(body.decode())), client.cert)


def test_timeout_after_commit_executes_once(client: Client) -> None:
    client.fault("refund", "timeout_after_commit", stall_seconds=1.0)
    pay = client.payment()
    fields = client.refund_fields("R20260101A0015", pay["channel_trade_no"], 100)
    with pytest.raises(requests.ReadTimeout):
        client.post("/gateway/api/backTransReq.do", fields, timeout=(2, 0.3))
    assert client.query("R20260101A0015", fields["txnTime"])["origRespCode"] == "00"
    assert client.refund(fields)["respCode"] == "12"       # 重复交易: never a second run
    [truth] = client.truth()
    assert truth["executions"] == 1


def test_drop_before_commit_executes_nothing(client: Client) -> None:
    client.fault("refund", "drop_before_commit")
    pay = client.payment()
    fields = client.refund_fields("R20260101A0016", pay["channel_trade_no"], 100)
    with pytest.raises(requests.ConnectionError):
        client.post("/gateway/api/backTransReq.do", fields)
    assert client.truth() == []
    assert client.query("R20260101A0016", fields["txnTime"])["respCode"] == "34"
    assert client.refund(fields)["respCode"] == "00"
    assert len(client.truth()) == 1


def test_http_500_executes_nothing(client: Client) -> None:
    client.fault("refund", "http_500")
    pay = client.payment()
    fields = client.refund_fields("R20260101A0017", pay["channel_trade_no"], 100)
    assert client.post("/gateway/api/backTransReq.do", fields).status_code == 500
    assert client.truth() == []


def test_rate_limited_executes_nothing(client: Client) -> None:
    client.fault("refund", "rate_limited")
    pay = client.payment()
    fields = client.refund_fields("R20260101A0018", pay["channel_trade_no"], 100)
    busy = client.refund(fields)
    assert busy["respCode"] == "06" and "queryId" not in busy
    assert client.truth() == []
    assert client.refund(fields)["respCode"] == "00"
    assert client.truth()[0]["executions"] == 1


def test_bad_signature_fault_answer_fails_verification(client: Client) -> None:
    client.fault("refund", "bad_signature")
    pay = client.payment()
    fields = client.refund_fields("R20260101A0019", pay["channel_trade_no"], 100)
    answer = parse_answer(client.post("/gateway/api/backTransReq.do", fields).text)
    assert answer["respCode"] == "00" and not verifies(answer, client.cert)
    assert client.truth()[0]["executions"] == 1      # executed all the same


def test_after_seconds_settles_and_notifies_without_a_query(client: Client,
                                                            catcher: Catcher) -> None:
    requests.post(client.base + "/_sandbox/config", timeout=5,
                  json={"settle": {"bankcard": {"mode": "after_seconds", "seconds": 0.3}}})
    pay = client.payment()
    fields = client.refund_fields("R20260101C0001", pay["channel_trade_no"], 42,
                                  back_url=catcher.url)
    assert client.refund(fields)["respCode"] == "00"
    assert client.truth()[0]["status"] == "PROCESSING"
    [(_, body)] = catcher.wait(1)
    note = dict(parse_qsl(body.decode()))
    assert note["respCode"] == "00" and verifies(note, client.cert)
    assert client.truth()[0]["status"] == "SUCCESS"
