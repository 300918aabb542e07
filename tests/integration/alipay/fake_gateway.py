"""A minimal Alipay OpenAPI gateway on 127.0.0.1, written from CH §1.2-1.5 and §4 only.

Stands in for the sandbox (issue 3) until ``sandbox/`` lands, so the adapter runs with the
real SDK over real HTTP today. It verifies our request signatures (all params but
``sign``, ``sign_type`` included: CH §0 #8), signs the exact inner JSON text (CH §1.4),
dedupes on out_request_no, keeps a truth list of executed refunds and injects faults.
Not a product: no pay flow, one app, trade bill only.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

BEIJING = timezone(timedelta(hours=8))


def _now_bj() -> str:
    return datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _sign(key: rsa.RSAPrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(),
                                     hashes.SHA256())).decode()


@dataclass
class Executed:
    trade_no: str
    out_request_no: str
    amount_fen: int
    at: str
    dback_status: str | None = None


@dataclass
class State:
    trades: dict[str, tuple[str, int]] = field(default_factory=dict)  # trade_no -> (otn, fen)
    refunds: dict[tuple[str, str], Executed] = field(default_factory=dict)
    executions: list[Executed] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)      # method -> kinds
    requests: list[dict[str, str]] = field(default_factory=list)
    dback: str | None = None        # bank-card leg of new refunds: P / S / F


class FakeAlipay:
    def __init__(self, app_id: str, app_public_pem: str, read_delay: float = 1.5) -> None:
        self.app_id = app_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._app_public = serialization.load_pem_public_key(app_public_pem.encode())
        self.state = State()
        self.read_delay = read_delay
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    # -- control -------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/gateway.do"

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def add_trade(self, trade_no: str, out_trade_no: str, fen: int) -> None:
        self.state.trades[trade_no] = (out_trade_no, fen)

    def fault(self, method: str, *kinds: str) -> None:
        self.state.faults.setdefault(method, []).extend(kinds)

    def sign_form(self, fields: dict[str, str]) -> bytes:
        message = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
        return urllib.parse.urlencode({**fields, "sign_type": "RSA2",
                                       "sign": _sign(self.key, message)}).encode()

    @contextmanager
    def running(self) -> Iterator[FakeAlipay]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    # -- protocol ------------------------------------------------------------------
    def _verify_request(self, params: dict[str, str]) -> bool:
        sign = params.get("sign", "")
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign")
        try:
            self._app_public.verify(base64.b64decode(sign), message.encode(),  # type: ignore[union-attr,call-arg]
                                    padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return False
        return True

    def _answer(self, method: str, inner: dict[str, Any], *, bad: bool = False) -> bytes:
        text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
        sign = _sign(self.wrong_key if bad else self.key, text)
        rt = method.replace(".", "_") + "_response"
        return f'{{"{rt}":{text},"sign":"{sign}"}}'.encode()

    def _refund(self, biz: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(inner answer, committed now)."""
        trade_no = biz.get("trade_no") or next(
            (t for t, (o, _) in self.state.trades.items() if o == biz.get("out_trade_no")), "")
        if trade_no not in self.state.trades:
            return {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST",
                    "sub_msg": "交易不存在"}, False
        fen = int(biz["refund_amount"].replace(".", ""))
        key = (trade_no, biz["out_request_no"])
        base = {"code": "10000", "msg": "Success", "trade_no": trade_no,
                "out_trade_no": self.state.trades[trade_no][0],
                "buyer_logon_id": "159****5620", "buyer_user_id": "2088101117955611"}
        if key in self.state.refunds:
            if self.state.refunds[key].amount_fen != fen:
                return {"code": "40004", "msg": "Business Failed",
                        "sub_code": "ACQ.DISCORDANT_REPEAT_REQUEST"}, False
            return {**base, "fund_change": "N"}, False
        done = sum(r.amount_fen for r in self.state.refunds.values() if r.trade_no == trade_no)
        if done + fen > self.state.trades[trade_no][1]:
            return {"code": "40004", "msg": "Business Failed",
                    "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "sub_msg": "退款金额超限"}, False
        ex = Executed(trade_no, biz["out_request_no"], fen, _now_bj(), self.state.dback)
        self.state.refunds[key] = ex
        self.state.executions.append(ex)
        total = (done + fen)
        return {**base, "fund_change": "Y", "refund_fee": f"{total // 100}.{total % 100:02d}",
                "gmt_refund_pay": ex.at}, True

    def _query(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade_no = biz.get("trade_no", "")
        if trade_no not in self.state.trades:
            return {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}
        ex = self.state.refunds.get((trade_no, biz["out_request_no"]))
        inner: dict[str, Any] = {"code": "10000", "msg": "Success", "trade_no": trade_no,
                                 "out_request_no": biz["out_request_no"]}
        if ex is None:
            return inner   # CH §4.2: refund_status absent
        inner.update(refund_status="REFUND_SUCCESS",
                     refund_amount=f"{ex.amount_fen // 100}.{ex.amount_fen % 100:02d}",
                     total_amount="100.00")
        options = biz.get("query_options") or []
        if "gmt_refund_pay" in options:
            inner["gmt_refund_pay"] = ex.at
        if "deposit_back_info" in options and ex.dback_status:
            info = {"has_deposit_back": "true", "dback_status": ex.dback_status,
                    "dback_amount": inner["refund_amount"],
                    "est_bank_receipt_time": "2026-11-23 10:00:00"}
            if ex.dback_status == "S":
                info["bank_ack_time"] = "2026-11-21 10:00:00"
            inner["deposit_back_info"] = info
        return inner

    def bill_zip(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            lines = ["#支付宝业务明细查询"] + [
                f"{e.trade_no}\t,x\t,退款\t,-{e.amount_fen / 100:.2f},{e.out_request_no}"
                for e in self.state.executions]
            info = zipfile.ZipInfo("2088_20261120_业务明细.csv".encode("gbk").decode("cp437"))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, "\r\n".join(lines).encode("gbk"))
        return buf.getvalue()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes,
                      ctype: str = "application/json;charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path.startswith("/bill/"):
                    self._send(200, fake.bill_zip() if path != "/bill/bomb" else _bomb(),
                               "application/zip")
                    return
                params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                method = params.get("method", "")
                with fake._lock:
                    fake.state.requests.append(params)
                    if not fake._verify_request(params):
                        self._send(200, json.dumps({"error_response": {
                            "code": "40002", "msg": "Invalid Arguments",
                            "sub_code": "isv.invalid-signature"}}).encode())
                        return
                    kinds = fake.state.faults.get(method) or []
                    kind = kinds.pop(0) if kinds else None
                    if kind == "drop_before_commit":
                        self.connection.close()
                        return
                    if kind == "http_500":
                        self._send(500, b"<html>Internal Server Error</html>", "text/html")
                        return
                    if kind == "rate_limited":
                        self._send(200, fake._answer(method, {
                            "code": "40004", "msg": "Business Failed",
                            "sub_code": "isv.app-call-limited", "sub_msg": "调用频率超限"}))
                        return
                    biz = json.loads(params.get("biz_content") or "{}")
                    if method == "alipay.trade.refund":
                        inner, _ = fake._refund(biz)
                    elif method == "alipay.trade.fastpay.refund.query":
                        inner = fake._query(biz)
                    elif method == "alipay.data.dataservice.bill.downloadurl.query":
                        if biz.get("bill_date") == "2026-01-01":
                            inner = {"code": "40004", "msg": "Business Failed",
                                     "sub_code": "isp.bill_not_exist"}
                        else:
                            name = "bomb" if kind == "bomb" else biz.get("bill_date")
                            inner = {"code": "10000", "msg": "Success", "bill_download_url":
                                     f"http://127.0.0.1:{fake.port}/bill/{name}"}
                    else:
                        inner = {"code": "40004", "sub_code": "isv.invalid-method"}
                body = fake._answer(method, inner, bad=kind == "bad_signature")
                if kind == "timeout_after_commit":
                    time.sleep(fake.read_delay)   # committed; the client gives up first
                    return
                self._send(200, body)

        return Handler


@functools.cache
def _bomb() -> bytes:
    """Built once: compressing 30 MB took over a second under a loaded test run, past
    the adapter's 1 s socket timeout, so the test saw a timeout instead of the guard."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"0" * (30 * 1024 * 1024))
    return buf.getvalue()
