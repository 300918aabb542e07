"""A minimal WeChat Pay API v3 server on 127.0.0.1, written from CH §2.2-2.6 and §5 only.

Stands in for the sandbox's WeChat channel (issue 3) until ``sandbox/wechatpay.py`` lands,
so the adapter runs with the real SDK over real HTTP today. It verifies our Authorization
(CH §2.2, merchant public key), signs every 2xx with the platform key and echoes the
public-key id (CH §0 #4-5), dedupes on out_refund_no, keeps a truth list of executed
refunds, injects faults, decrypts abnormal-refund card fields, serves gzip bills with
``hash_value`` and builds signed, encrypted REFUND.* notifications. Not a product.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BEIJING = timezone(timedelta(hours=8))


def _now_bj() -> str:
    return datetime.now(BEIJING).isoformat(timespec="seconds")


@dataclass
class Executed:
    refund_id: str
    out_refund_no: str
    transaction_id: str
    amount: int
    total: int
    status: str = "PROCESSING"
    success_time: str | None = None
    channel: str = "ORIGINAL"
    account: str = "招商银行信用卡0403"
    abnormal_applied: dict[str, str] = field(default_factory=dict)

    def doc(self, mchid: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "refund_id": self.refund_id, "out_refund_no": self.out_refund_no,
            "transaction_id": self.transaction_id, "out_trade_no": "ORD-" + self.transaction_id,
            "channel": self.channel, "user_received_account": self.account,
            "create_time": _now_bj(), "status": self.status, "funds_account": "AVAILABLE",
            "amount": {"total": self.total, "refund": self.amount, "payer_total": self.total,
                       "payer_refund": self.amount, "currency": "CNY"}}
        if self.success_time:
            out["success_time"] = self.success_time
        return out


class FakeWechat:
    def __init__(self, *, mchid: str, merchant_public: rsa.RSAPublicKey,
                 platform: rsa.RSAPrivateKey, public_key_id: str, apiv3_key: str) -> None:
        self.mchid = mchid
        self.merchant_public = merchant_public
        self.platform = platform
        self.public_key_id = public_key_id
        self.apiv3_key = apiv3_key
        self.refunds: dict[str, Executed] = {}
        self.executions: list[Executed] = []
        self.faults: dict[str, list[str]] = {}       # operation -> kinds (FIFO)
        self.settle_to = "SUCCESS"                    # what a PROCESSING refund becomes
        self.stall = 2.0
        self.lock = threading.Lock()
        self.auth_failures = 0
        self.seq = 0
        self.bills: dict[str, bytes] = {}
        self.secrets_seen: list[str] = []            # signatures and Authorization values
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------
    def fault(self, operation: str, kind: str, count: int = 1) -> None:
        with self.lock:
            self.faults.setdefault(operation, []).extend([kind] * count)

    def _take(self, operation: str) -> str | None:
        with self.lock:
            kinds = self.faults.get(operation) or []
            return kinds.pop(0) if kinds else None

    def truth(self, out_refund_no: str) -> list[Executed]:
        return [e for e in self.executions if e.out_refund_no == out_refund_no]

    def settle(self, out_refund_no: str, status: str | None = None) -> Executed:
        e = self.refunds[out_refund_no]
        e.status = status or self.settle_to
        if e.status == "SUCCESS":
            e.success_time = _now_bj()
        return e

    # -- signing ---------------------------------------------------------------------
    def sign_headers(self, body: str, *, forged: bool = False) -> dict[str, str]:
        ts, nonce = str(int(time.time())), secrets.token_hex(16).upper()
        text = f"{ts}\n{nonce}\n{body}\n" + ("x" if forged else "")
        sig = base64.b64encode(self.platform.sign(text.encode(), padding.PKCS1v15(),
                                                  hashes.SHA256())).decode()
        self.secrets_seen.append(sig)
        return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
                "Wechatpay-Serial": self.public_key_id, "Wechatpay-Signature": sig,
                "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}

    def notification(self, out_refund_no: str, *, event_id: str | None = None,
                     ts: int | None = None) -> tuple[dict[str, str], bytes]:
        """A REFUND.<status> notification for an executed refund (CH §5.5)."""
        e = self.refunds[out_refund_no]
        resource = {"mchid": self.mchid, "transaction_id": e.transaction_id,
                    "out_trade_no": "ORD-" + e.transaction_id, "refund_id": e.refund_id,
                    "out_refund_no": e.out_refund_no, "refund_status": e.status,
                    "success_time": e.success_time, "user_received_account": e.account,
                    "amount": {"total": e.total, "refund": e.amount, "payer_total": e.total,
                               "payer_refund": e.amount}}
        nonce = secrets.token_hex(6)
        ct = AESGCM(self.apiv3_key.encode()).encrypt(nonce.encode(),
                                                     json.dumps(resource).encode(), b"refund")
        envelope = {"id": event_id or f"EV-{secrets.token_hex(8)}",
                    "create_time": _now_bj(), "resource_type": "encrypt-resource",
                    "event_type": f"REFUND.{e.status}", "summary": "退款",
                    "resource": {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
                                 "ciphertext": base64.b64encode(ct).decode(),
                                 "associated_data": "refund", "nonce": nonce}}
        body = json.dumps(envelope, ensure_ascii=False)
        headers = self.sign_headers(body)
        if ts is not None:
            headers = self._resign(body, ts)
        return headers, body.encode()

    def _resign(self, body: str, ts: int) -> dict[str, str]:
        nonce = secrets.token_hex(16).upper()
        sig = base64.b64encode(self.platform.sign(f"{ts}\n{nonce}\n{body}\n".encode(),
                                                  padding.PKCS1v15(), hashes.SHA256()))
        self.secrets_seen.append(sig.decode())
        return {"Wechatpay-Timestamp": str(ts), "Wechatpay-Nonce": nonce,
                "Wechatpay-Serial": self.public_key_id, "Wechatpay-Signature": sig.decode(),
                "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}

    def verify_authorization(self, method: str, path: str, body: str, auth: str) -> bool:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', auth))
        text = f"{method}\n{unquote(path)}\n{fields.get('timestamp')}\n" \
               f"{fields.get('nonce_str')}\n{body}\n"
        try:
            self.merchant_public.verify(base64.b64decode(fields.get("signature", "")),
                                        text.encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # any failure is a 401
            return False
        return fields.get("mchid") == self.mchid

    # -- serving ---------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                out = fake.handle(self.command, self.path, body, dict(self.headers.items()))
                if out is None:                     # drop the connection, no answer
                    self.close_connection = True
                    return
                status, headers, payload, stall = out
                if stall:
                    time.sleep(stall)
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _json(self, status: int, doc: Any, *, sign: bool = True, forged: bool = False
              ) -> tuple[int, dict[str, str], bytes, float]:
        body = json.dumps(doc, ensure_ascii=False)
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Request-ID": f"REQ-{secrets.token_hex(6)}"}
        if sign and 200 <= status < 300:
            headers.update(self.sign_headers(body, forged=forged))
        return status, headers, body.encode(), 0.0

    def handle(self, method: str, path: str, body: str, headers: dict[str, str]
               ) -> tuple[int, dict[str, str], bytes, float] | None:
        auth = headers.get("Authorization", "")
        self.secrets_seen.extend(re.findall(r'signature="([^"]+)"', auth))
        if not self.verify_authorization(method, path, body, auth):
            self.auth_failures += 1
            return self._json(401, {"code": "SIGN_ERROR", "message": "签名错误"})
        url = urlsplit(path)
        if method == "POST" and url.path == "/v3/refund/domestic/refunds":
            return self._refund(json.loads(body))
        m = re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)/apply-abnormal-refund", url.path)
        if method == "POST" and m:
            return self._abnormal(m.group(1), json.loads(body), headers)
        m = re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)", url.path)
        if method == "GET" and m:
            return self._query(m.group(1))
        if method == "GET" and url.path in ("/v3/bill/tradebill", "/v3/bill/fundflowbill"):
            return self._bill(url.path, parse_qs(url.query))
        if method == "GET" and url.path == "/v3/billdownload/file":
            data = self.bills.get(parse_qs(url.query)["token"][0])
            if data is None:
                return self._json(400, {"code": "INVALID_REQUEST", "message": "token"})
            return 200, {"Content-Type": "application/octet-stream"}, gzip.compress(data), 0.0
        return self._json(404, {"code": "NOT_FOUND", "message": url.path})

    def _faulted(self, op: str) -> tuple[str | None, Any]:
        kind = self._take(op)
        if kind == "drop_before_commit":
            return kind, None
        if kind == "http_500":
            return kind, self._json(500, {"code": "SYSTEM_ERROR", "message": "系统超时"})
        if kind == "rate_limited":
            return kind, self._json(429, {"code": "FREQUENCY_LIMITED", "message": "频率限制"})
        return kind, False

    def _refund(self, req: dict[str, Any]) -> Any:
        kind, early = self._faulted("refund")
        if early is not False:
            return early
        no = req["out_refund_no"]
        with self.lock:
            e = self.refunds.get(no)
            if e is None:
                if req["amount"]["refund"] > req["amount"]["total"]:
                    return self._json(400, {"code": "INVALID_REQUEST", "message": "金额"})
                self.seq += 1
                e = Executed(f"5030{self.seq:025d}", no, req.get("transaction_id", ""),
                             req["amount"]["refund"], req["amount"]["total"])
                self.refunds[no] = e
                self.executions.append(e)
                if kind == "abnormal":
                    e.status = "ABNORMAL"
        out = self._json(200, e.doc(self.mchid), forged=kind == "bad_signature")
        if kind == "timeout_after_commit":
            return out[0], out[1], out[2], self.stall
        return out

    def _query(self, no: str) -> Any:
        kind, early = self._faulted("query")
        if early is not False:
            return early
        e = self.refunds.get(no)
        if e is None:
            return self._json(404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"})
        if e.status == "PROCESSING":
            self.settle(no)
        return self._json(200, e.doc(self.mchid), forged=kind == "bad_signature")

    def _abnormal(self, refund_id: str, req: dict[str, Any], headers: dict[str, str]) -> Any:
        e = next((x for x in self.refunds.values() if x.refund_id == refund_id), None)
        if e is None:
            return self._json(404, {"code": "RESOURCE_NOT_EXISTS", "message": "不存在"})
        if e.status != "ABNORMAL" or req.get("out_refund_no") != e.out_refund_no:
            return self._json(400, {"code": "INVALID_REQUEST", "message": "状态不符"})
        if headers.get("Wechatpay-Serial") != self.public_key_id:
            return self._json(400, {"code": "PARAM_ERROR", "message": "serial"})
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),  # noqa: S303
                            label=None)
        applied = {"type": req["type"]}
        if req["type"] == "USER_BANK_CARD":
            account = self.platform.decrypt(base64.b64decode(req["bank_account"]), oaep).decode()
            self.platform.decrypt(base64.b64decode(req["real_name"]), oaep)
            applied["last4"] = account[-4:]
            e.account = f"{req['bank_type']}{account[-4:]}"
            e.channel = "OTHER_BANKCARD"
        e.abnormal_applied = applied
        e.status = "PROCESSING"
        return self._json(200, e.doc(self.mchid))

    def _bill(self, path: str, query: dict[str, list[str]]) -> Any:
        day = query["bill_date"][0]
        if day == "2000-01-01":
            return self._json(400, {"code": "NO_STATEMENT_EXIST", "message": "账单不存在"})
        if path.endswith("tradebill"):
            lines = ["交易时间,微信退款单号,商户退款单号,退款金额,退款状态"]
            lines += [f"`{day} 10:00:00,`{e.refund_id},`{e.out_refund_no},"
                      f"`{e.amount // 100}.{e.amount % 100:02d},`{e.status}"
                      for e in self.executions]
        else:
            lines = ["记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,"
                     "收支金额（元）"]
            lines += [f"`{day} 10:00:00,`{e.refund_id},`x,`退款,`退款,`支出,"
                      f"`{e.amount // 100}.{e.amount % 100:02d}" for e in self.executions]
        data = ("\r\n".join(lines) + "\r\n").encode()
        token = secrets.token_hex(8)
        self.bills[token] = data
        base = f"http://127.0.0.1:{self._server.server_address[1]}" if self._server else ""
        return self._json(200, {"hash_type": "SHA1",
                                "hash_value": hashlib.sha1(data, usedforsecurity=False)
                                .hexdigest(),
                                "download_url": f"{base}/v3/billdownload/file?token={token}"})
