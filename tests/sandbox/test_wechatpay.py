"""The real wechatpayv3 2.0.4 SDK (public-key mode, CH §2.7) against the sandbox's WeChat
Pay v3 channel over HTTP: refund, query, idempotency, business errors, abnormal refund,
bills with the SHA1 check, notifications through ``callback()``, and every fault.

The client is configured only from ``client_settings`` (what ``--env-file`` writes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import requests

# The sandbox is tested with the real SDK (issue 3), not through our adapter.
from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: TID251
from wechatpayv3.type import RequestType  # noqa: TID251
from wechatpayv3.utils import build_authorization, rsa_sign  # noqa: TID251

from sandbox.server import SandboxServer
from sandbox.state import BEIJING, Fault, Payment, Settle
from sandbox.wechatpay import PUB_KEY_ID_SANDBOX

P = "REFUND_GATEWAY_WECHATPAY__"
CNY = "CNY"


def client(server: SandboxServer, timeout: tuple[float, float] = (2, 5),
           private_key: str | None = None) -> WeChatPay:
    s = server.settings()
    wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=s[P + "MCHID"],
                   private_key=private_key or s[P + "PRIVATE_KEY"],
                   cert_serial_no=s[P + "CERT_SERIAL_NO"], appid=s[P + "APPID"],
                   apiv3_key=s[P + "APIV3_KEY"], public_key=s[P + "PUBLIC_KEY"],
                   public_key_id=s[P + "PUBLIC_KEY_ID"], timeout=timeout)
    wx._core._gate_way = s[P + "BASE_URL"]
    return wx


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    return refund_sandbox


@pytest.fixture
def wx(sandbox: SandboxServer) -> WeChatPay:
    return client(sandbox)


def pay(sandbox: SandboxServer, fen: int = 10000) -> Payment:
    return sandbox.state.add_payment("wechatpay", fen)


def fault(sandbox: SandboxServer, operation: str, kind: str, **params: Any) -> None:
    sandbox.state.add_fault(Fault("wechatpay", operation, kind, 1, params))


def refund(wx: WeChatPay, payment: Payment, no: str, fen: int,
           **kw: Any) -> tuple[int, dict[str, Any]]:
    code, body = wx.refund(out_refund_no=no, amount={"refund": fen,
                                                     "total": payment.amount_fen,
                                                     "currency": CNY},
                           transaction_id=payment.channel_trade_no, reason="商品已售完", **kw)
    return code, json.loads(body)


def query(wx: WeChatPay, no: str) -> tuple[int, dict[str, Any]]:
    code, body = wx.query_refund(no)
    return code, json.loads(body)


def truth(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [r for r in sandbox.state.truth() if r["route"] == "wechatpay"]


def notifications(sandbox: SandboxServer, wx: WeChatPay) -> list[dict[str, Any]]:
    out = []
    for note in sandbox.pending_notifications("wechatpay"):
        decoded = wx.callback(note.headers, note.body)
        assert decoded is not None
        out.append(decoded)
    return out


def test_refund_processing_then_query_success_and_notification(
        sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 10000)
    code, body = refund(wx, payment, "R1", 2500)
    assert code == 200
    assert body["status"] == "PROCESSING" and "success_time" not in body
    assert body["out_refund_no"] == "R1"
    assert body["transaction_id"] == payment.channel_trade_no
    assert body["out_trade_no"] == payment.merchant_order_no
    assert body["channel"] == "ORIGINAL" and body["user_received_account"]
    assert len(body["refund_id"]) == 29 and body["refund_id"].isdigit()
    assert body["create_time"].endswith("+08:00")
    assert body["amount"] == {"total": 10000, "refund": 2500, "from": [], "payer_total": 10000,
                              "payer_refund": 2500, "settlement_refund": 2500,
                              "settlement_total": 10000, "discount_refund": 0,
                              "currency": "CNY", "refund_fee": 0}
    code, queried = query(wx, "R1")
    assert code == 200 and queried["status"] == "SUCCESS"
    assert queried["refund_id"] == body["refund_id"]
    assert datetime.fromisoformat(queried["success_time"]).utcoffset() == \
        datetime.now(BEIJING).utcoffset()
    [row] = truth(sandbox)
    assert (row["executions"], row["status"], row["amount_fen"]) == (1, "SUCCESS", 2500)
    [note] = notifications(sandbox, wx)
    assert note["event_type"] == "REFUND.SUCCESS" and note["summary"] == "退款成功"
    assert note["resource_type"] == "encrypt-resource"
    resource = note["resource"]
    assert resource["refund_status"] == "SUCCESS" and "status" not in resource
    assert resource["mchid"] == sandbox.settings()[P + "MCHID"]
    assert resource["amount"] == {"total": 10000, "refund": 2500, "payer_total": 10000,
                                  "payer_refund": 2500}
    assert (resource["refund_id"], resource["out_refund_no"], resource["success_time"]) == \
        (body["refund_id"], "R1", queried["success_time"])


def test_response_headers_public_key_mode(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox)
    refund(wx, payment, "RH", 1)
    # Replay the SDK's own request building to look at the raw answer.
    path = "/v3/refund/domestic/refunds/RH"
    auth = build_authorization(path, "GET", wx._core._mchid, wx._core._cert_serial_no,
                               wx._core._private_key)
    # the SDK in public-key mode sends the key's id on every request (CH §2.2)
    r = requests.get(wx._core._gate_way + path, timeout=5,
                     headers={"Authorization": auth, "Wechatpay-Serial": PUB_KEY_ID_SANDBOX})
    assert r.status_code == 200
    assert r.headers["Wechatpay-Serial"] == PUB_KEY_ID_SANDBOX
    assert r.headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert r.headers["Request-ID"]
    assert PUB_KEY_ID_SANDBOX.startswith("PUB_KEY_ID_")
    # a merchant migrating to the key (both): without the id, the certificate signs
    wechat = sandbox.channel("wechatpay")
    wechat.set_verification(wx._core._mchid, "both")
    auth = build_authorization(path, "GET", wx._core._mchid, wx._core._cert_serial_no,
                               wx._core._private_key)
    r = requests.get(wx._core._gate_way + path, headers={"Authorization": auth}, timeout=5)
    assert r.status_code == 200
    assert r.headers["Wechatpay-Serial"] == wechat.certificate.serial


def test_idempotent_repeat_and_changed_repeat(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 1000)
    _, first = refund(wx, payment, "R-same", 300)
    code, again = refund(wx, payment, "R-same", 300)
    assert code == 200 and again["refund_id"] == first["refund_id"]
    code, changed = refund(wx, payment, "R-same", 301)
    assert code == 400 and changed["code"] == "INVALID_REQUEST"
    assert "out_refund_no already used" in changed["message"]
    [row] = truth(sandbox)
    assert row["executions"] == 1 and row["amount_fen"] == 300


def test_business_errors(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 1000)
    assert refund(wx, payment, "R-a", 700)[0] == 200
    code, body = refund(wx, payment, "R-b", 301)        # 300 left
    assert (code, body["code"]) == (400, "INVALID_REQUEST")
    code, body = wx.refund(out_refund_no="R-c", amount={"refund": 1, "total": 999,
                                                         "currency": CNY},
                           transaction_id=payment.channel_trade_no)
    assert (code, json.loads(body)["code"]) == (400, "INVALID_REQUEST")
    code, body = wx.refund(out_refund_no="R-d", amount={"refund": 1, "total": 1000,
                                                         "currency": "USD"},
                           out_trade_no=payment.merchant_order_no)
    assert (code, json.loads(body)["code"]) == (400, "PARAM_ERROR")
    assert json.loads(body)["detail"]["field"] == "/amount/currency"
    code, body = wx.refund(out_refund_no="R-e", amount={"refund": 1, "total": 1000,
                                                         "currency": CNY},
                           out_trade_no="NO-SUCH-ORDER")
    assert (code, json.loads(body)["code"]) == (404, "RESOURCE_NOT_EXISTS")
    code, body = query(wx, "NO-SUCH-REFUND")
    assert (code, body["code"]) == (404, "RESOURCE_NOT_EXISTS")
    assert [r["channel_refund_no"] for r in truth(sandbox)] == ["R-a"]


def test_fifty_refunds_per_order(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 1000)
    for n in range(50):
        assert refund(wx, payment, f"R50-{n}", 1)[0] == 200
    code, body = refund(wx, payment, "R50-50", 1)
    assert (code, body["code"]) == (400, "INVALID_REQUEST")
    assert len(truth(sandbox)) == 50


def test_abnormal_then_abnormal_refund_to_user_card(sandbox: SandboxServer,
                                                    wx: WeChatPay) -> None:
    payment = pay(sandbox, 5000)
    fault(sandbox, "refund", "abnormal")
    code, body = refund(wx, payment, "R-ab", 5000)
    assert code == 200 and body["status"] == "PROCESSING"
    _, queried = query(wx, "R-ab")
    assert queried["status"] == "ABNORMAL" and "success_time" not in queried
    [note] = notifications(sandbox, wx)
    assert note["event_type"] == "REFUND.ABNORMAL"
    assert note["resource"]["refund_status"] == "ABNORMAL"
    code, answer = wx.abnormal_refund(body["refund_id"], "R-ab", "USER_BANK_CARD",
                                      bank_type="ICBC_DEBIT",
                                      bank_account="6222020200112233445",
                                      real_name="张三")
    answer = json.loads(answer)
    assert code == 200, answer
    assert (answer["status"], answer["channel"]) == ("PROCESSING", "OTHER_BANKCARD")
    assert answer["user_received_account"].endswith("3445")
    _, final = query(wx, "R-ab")
    assert (final["status"], final["channel"]) == ("SUCCESS", "OTHER_BANKCARD")
    [note] = notifications(sandbox, wx)
    assert note["event_type"] == "REFUND.SUCCESS"
    [row] = truth(sandbox)
    assert row["executions"] == 1 and row["status"] == "SUCCESS"
    dumped = json.dumps(row, ensure_ascii=False)
    assert "6222020200112233445" not in dumped and "张三" not in dumped
    assert row["extra"]["abnormal_refund"]["bank_account_last4"] == "3445"
    # Only ABNORMAL refunds can be redirected.
    code, again = wx.abnormal_refund(body["refund_id"], "R-ab", "MERCHANT_BANK_CARD")
    assert (code, json.loads(again)["code"]) == (400, "INVALID_REQUEST")


def test_abnormal_refund_to_merchant_card_and_bad_ciphertext(sandbox: SandboxServer,
                                                             wx: WeChatPay) -> None:
    sandbox.state.settle["wechatpay"] = Settle(mode="after_queries", n=1)
    payment = pay(sandbox, 100)
    fault(sandbox, "refund", "abnormal")
    _, body = refund(wx, payment, "R-mc", 100)
    assert query(wx, "R-mc")[1]["status"] == "ABNORMAL"
    # Fields not encrypted with the platform public key are refused.
    code, bad = wx._core.request(
        f"/v3/refund/domestic/refunds/{body['refund_id']}/apply-abnormal-refund",
        method=RequestType.POST,
        data={"out_refund_no": "R-mc", "type": "USER_BANK_CARD", "bank_type": "CMB_DEBIT",
              "bank_account": "bm90IGVuY3J5cHRlZA==", "real_name": "bm8="})
    assert (code, json.loads(bad)["code"]) == (400, "PARAM_ERROR")
    code, answer = wx.abnormal_refund(body["refund_id"], "R-mc", "MERCHANT_BANK_CARD")
    assert code == 200 and json.loads(answer)["status"] == "PROCESSING"
    assert query(wx, "R-mc")[1]["status"] == "SUCCESS"


def parse_bill(data: bytes) -> tuple[list[str], list[list[str]], list[str], list[str]]:
    """WeChat bill: BOM + header, backtick rows, summary header, summary row. A cell is
    the text after its backtick; cells are separated by a comma and the next backtick, so
    commas inside 商品名称/商户数据包 stay data (addendum §8)."""
    text = data.decode("utf-8")
    assert text.startswith("\ufeff")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")   # CRLF
    lines = text.lstrip("\ufeff").splitlines()
    header, *rows, summary_header, summary = lines
    for row in [*rows, summary]:
        assert row.startswith("`")

    def cells(line: str) -> list[str]:
        return line[1:].split(",`")

    return header.split(","), [cells(r) for r in rows], summary_header.split(","), cells(summary)


def download(wx: WeChatPay, answer: str) -> bytes:
    meta = json.loads(answer)
    assert meta["hash_type"] == "SHA1"
    assert meta["download_url"].startswith(wx._core._gate_way + "/v3/billdownload/file?token=")
    code, raw = wx.download_bill(meta["download_url"])
    assert code == 200 and isinstance(raw, bytes)
    plain = gzip.decompress(raw)
    assert hashlib.sha1(plain).hexdigest() == meta["hash_value"]  # noqa: S324 - WeChat's hash
    return plain


def test_trade_and_fundflow_bills(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 10000)
    other = pay(sandbox, 300)
    refund(wx, payment, "R-b1", 2500)
    refund(wx, payment, "R-b2", 101)
    query(wx, "R-b1")
    today = datetime.now(BEIJING).date().isoformat()

    code, answer = wx.trade_bill(today, bill_type="REFUND")
    assert code == 200
    header, rows, summary_header, summary = parse_bill(download(wx, answer))
    assert header[0] == "交易时间" and len(header) == 29
    assert summary_header == ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额",
                              "手续费总金额", "订单总金额", "申请退款总金额"]
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["商户退款单号"], r["退款金额"], r["交易状态"], r["退款类型"], r["退款状态"])
            for r in records] == [("R-b1", "25.00", "REFUND", "ORIGINAL", "SUCCESS"),
                                  ("R-b2", "1.01", "REFUND", "ORIGINAL", "SUCCESS")]
    assert records[0]["微信订单号"] == payment.channel_trade_no
    # Commas inside cells, as merchants' descriptions and JSON attaches have them.
    assert records[0]["商品名称"] == "沙箱测试商品,1件"
    assert json.loads(records[0]["商户数据包"]) == {"order": payment.merchant_order_no,
                                                 "src": "sandbox"}
    assert "," in records[0]["商户数据包"]
    # Refund rows give the fee back: negative, 5 decimals (addendum §8).
    assert [r["手续费"] for r in records] == ["-0.15000", "-0.01000"]
    assert summary[:3] == ["2", "0.00", "26.01"] and summary[6] == "26.01"
    assert summary[4] == "-0.16000"      # returned fees: 0.15 + 0.01, net

    code, answer = wx.trade_bill(today, bill_type="ALL")
    header, rows, _, summary = parse_bill(download(wx, answer))
    assert len(header) == 27
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert [r["交易状态"] for r in records] == ["SUCCESS", "SUCCESS", "REFUND", "REFUND"]
    assert records[1]["商户订单号"] == other.merchant_order_no
    assert records[1]["退款金额"] == "0.00" and records[1]["微信退款单号"] == "0"
    assert [r["手续费"] for r in records] == ["0.60000", "0.02000", "-0.15000", "-0.01000"]
    assert summary[:3] == ["4", "103.00", "26.01"]
    assert summary[4] == "0.46000"       # 0.60 + 0.02 charged, 0.16 given back

    code, answer = wx.fundflow_bill(today)
    header, rows, summary_header, summary = parse_bill(download(wx, answer))
    assert header[-1] == "业务凭证号" and summary_header[0] == "资金流水总笔数"
    records = [dict(zip(header, row, strict=True)) for row in rows]
    spent = [r for r in records if r["收支类型"] == "支出"]
    assert [(r["业务名称"], r["业务凭证号"], r["收支金额（元）"]) for r in spent] == \
        [("退款", "R-b1", "25.00"), ("退款", "R-b2", "1.01")]
    truth_ids = {t["channel_refund_no"]: t["channel_refund_id"] for t in truth(sandbox)}
    assert spent[0]["微信支付业务单号"] == truth_ids["R-b1"]
    assert records[-1]["账户结余（元）"] == "76.99"
    assert summary == ["4", "2", "103.00", "2", "26.01"]

    # The sandbox statement endpoint: the same REFUND bill, plain.
    r = requests.get(f"{sandbox.url}/_sandbox/statements/wechatpay/{today}", timeout=5)
    assert [row[17] for row in parse_bill(r.content)[1]] == ["R-b1", "R-b2"]


def test_bill_errors_and_statement_faults(sandbox: SandboxServer, wx: WeChatPay) -> None:
    code, body = wx.trade_bill("2001-01-01", bill_type="REFUND")
    assert (code, json.loads(body)["code"]) == (400, "NO_STATEMENT_EXIST")
    code, body = wx.fundflow_bill("2001-01-01")
    assert (code, json.loads(body)["code"]) == (400, "NO_STATEMENT_EXIST")
    payment = pay(sandbox, 1000)
    refund(wx, payment, "R-s1", 100)
    refund(wx, payment, "R-s2", 200)
    fault(sandbox, "statement", "missing_from_statement")
    fault(sandbox, "statement", "amount_drift", drift=5)
    today = datetime.now(BEIJING).date().isoformat()
    _, answer = wx.trade_bill(today, bill_type="REFUND")
    _, rows, _, summary = parse_bill(download(wx, answer))
    assert [(row[17], row[18]) for row in rows] == [("R-s2", "2.05")]
    assert summary[2] == "2.05"
    # Plain file when tar_type is absent.
    code, answer = wx._core.request(f"/v3/bill/tradebill?bill_date={today}&bill_type=REFUND")
    meta = json.loads(answer)
    code, raw = wx.download_bill(meta["download_url"])
    assert hashlib.sha1(raw).hexdigest() == meta["hash_value"]  # noqa: S324
    assert raw.startswith("\ufeff交易时间".encode())


def test_pipe_in_out_refund_no_is_verified_unquoted(sandbox: SandboxServer,
                                                    wx: WeChatPay) -> None:
    payment = pay(sandbox, 100)
    assert refund(wx, payment, "R|1*@x", 10)[0] == 200
    code, body = query(wx, "R|1*@x")            # requests sends R%7C1*@x
    assert code == 200 and body["out_refund_no"] == "R|1*@x"


def test_request_signature_checked(sandbox: SandboxServer) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    code, body = client(sandbox, private_key=pem).query_refund("R1")
    assert (code, json.loads(body)["code"]) == (401, "SIGN_ERROR")
    r = requests.get(f"{sandbox.url}/v3/refund/domestic/refunds/R1", timeout=5)
    assert (r.status_code, r.json()["code"]) == (401, "SIGN_ERROR")
    wx = client(sandbox)
    path = "/v3/refund/domestic/refunds/R1"
    stale = str(int(time.time()) - 301)          # outside the ±5 min window
    signature = rsa_sign(wx._core._private_key, f"GET\n{path}\n{stale}\nN1\n\n")
    for mchid, stamp in ((wx._core._mchid, stale), ("1900000001", str(int(time.time())))):
        auth = (f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="N1",'
                f'signature="{signature}",timestamp="{stamp}",'
                f'serial_no="{wx._core._cert_serial_no}"')
        r = requests.get(sandbox.url + path, headers={"Authorization": auth}, timeout=5)
        assert (r.status_code, r.json()["code"]) == (401, "SIGN_ERROR")


def test_fault_timeout_after_commit(sandbox: SandboxServer) -> None:
    payment = pay(sandbox, 100)
    fault(sandbox, "refund", "timeout_after_commit", stall_seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        refund(client(sandbox, timeout=(1, 0.3)), payment, "R-to", 100)
    [row] = truth(sandbox)
    assert row["executions"] == 1
    wx = client(sandbox)
    assert refund(wx, payment, "R-to", 100)[1]["refund_id"] == row["channel_refund_id"]
    assert truth(sandbox)[0]["executions"] == 1


def test_fault_drop_before_commit(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 100)
    fault(sandbox, "refund", "drop_before_commit")
    with pytest.raises(requests.exceptions.ConnectionError):
        refund(wx, payment, "R-drop", 100)
    assert truth(sandbox) == []


def test_fault_http_500_and_rate_limited(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 100)
    fault(sandbox, "refund", "http_500")
    assert refund(wx, payment, "R-x", 100) == (500, {"code": "SYSTEM_ERROR",
                                                     "message": "系统超时"})
    fault(sandbox, "refund", "rate_limited")
    code, body = refund(wx, payment, "R-x", 100)
    assert (code, body["code"]) == (429, "FREQUENCY_LIMITED")
    assert truth(sandbox) == []
    fault(sandbox, "query", "rate_limited")
    assert refund(wx, payment, "R-x", 100)[0] == 200
    assert query(wx, "R-x")[0] == 429
    assert query(wx, "R-x")[1]["status"] == "SUCCESS"


def test_fault_bad_signature(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 100)
    fault(sandbox, "refund", "bad_signature")
    fault(sandbox, "notify", "bad_signature")
    with pytest.raises(Exception, match="failed to verify"):
        refund(wx, payment, "R-sig", 100)
    assert truth(sandbox)[0]["executions"] == 1      # executed; only the answer is forged
    [note] = sandbox.pending_notifications("wechatpay")
    assert wx.callback(note.headers, note.body) is None


def test_after_seconds_settles_and_notifies_without_a_query(sandbox: SandboxServer,
                                                            wx: WeChatPay) -> None:
    sandbox.state.settle["wechatpay"] = Settle(mode="after_seconds", seconds=0.2)
    payment = pay(sandbox, 100)
    assert refund(wx, payment, "R-later", 100)[1]["status"] == "PROCESSING"
    notes: list[dict[str, Any]] = []
    for _ in range(40):
        notes += notifications(sandbox, wx)
        if notes:
            break
        threading.Event().wait(0.05)
    [note] = notes
    assert note["resource"]["refund_status"] == "SUCCESS"
    assert truth(sandbox)[0]["queries"] == 0


class _Receiver(BaseHTTPRequestHandler):
    """A merchant notify endpoint: fails the first delivery, accepts the rest."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(500 if len(self.received) == 1 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/wx/refund-notify"
    httpd.shutdown()
    httpd.server_close()


def test_notification_redelivered_with_fresh_signature(sandbox: SandboxServer, wx: WeChatPay,
                                                       receiver: str) -> None:
    payment = pay(sandbox, 100)
    refund(wx, payment, "R-n", 100, notify_url=receiver)
    for _ in range(60):
        if len(_Receiver.received) >= 2:
            break
        threading.Event().wait(0.1)
    (h1, b1), (h2, b2) = _Receiver.received[:2]
    assert b1 == b2
    assert h1["Wechatpay-Nonce"] != h2["Wechatpay-Nonce"]
    for headers, body in ((h1, b1), (h2, b2)):
        decoded = wx.callback(headers, body)
        assert decoded is not None
        assert decoded["resource"]["out_refund_no"] == "R-n"
    assert sandbox.pending_notifications("wechatpay") == []
