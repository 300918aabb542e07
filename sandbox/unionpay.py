"""UnionPay online gateway 5.1.0 (银联全渠道, CH §6): refunds to bank cards (route ``bankcard``).

Endpoints (``prefixes = ("/gateway/api/", "/unionpay/")``)
-----------------------------------------------------------
``POST /gateway/api/backTransReq.do``  refund (退货, txnType 04), form UTF-8.
``POST /gateway/api/queryTrans.do``    single query (txnType 00) of a refund.
``GET  /unionpay/settlement/{YYYYMMDD}`` the day's settlement file (layout below).

Signing (both directions, CH §6 "5.1.0 / signMethod=01")
---------------------------------------------------------
string = every field except ``signature``, sorted by name, ``k=v`` joined by ``&``
(raw values, not URL-encoded); hex = lowercase SHA-256 hex of the UTF-8 string;
``signature`` = base64(SHA256withRSA PKCS#1 v1.5 over the ASCII bytes of hex).
Requests are verified with the MERCHANT public key and ``certId`` must equal
``REFUND_GATEWAY_BANKCARD__CERT_ID``. Answers and back notifications carry
``signPubKeyCert`` (the PEM of the sandbox UnionPay signing certificate, the same PEM as
``REFUND_GATEWAY_BANKCARD__UNIONPAY_PUBLIC_KEY``; self-signed, CN
``041@Z12@00040000:SIGN@00000062`` like UnionPay's test environment) and are signed the
same way with its key; ``signPubKeyCert`` is a signed field like any other.

Answers are ``k=v&k=v`` in name order, values NOT URL-encoded (the PEM keeps its
newlines), ``Content-Type: text/plain; charset=utf-8``.

Refund request fields: version 5.1.0, encoding UTF-8, signMethod 01, txnType 04,
txnSubType 00, bizType 000201, accessType 0, channelType (2 digits), merId, orderId
(8-32 ASCII letters/digits, no ``-``/``_``), txnTime (YYYYMMDDhhmmss), txnAmt (fen, positive
integer, no leading zero), currencyCode 156, origQryId (the consume's queryId = the
payment's ``channel_trade_no``), backUrl, certId, signature; reqReserved optional.
Refund answer: version, encoding, signMethod, txnType, txnSubType, bizType, accessType,
merId, orderId, txnTime, txnAmt, queryId (only when accepted: the refund's own 21-digit
queryId), respCode, respMsg, signPubKeyCert, signature (fields the request lacked are left
out of refusals).

Query request fields: version, encoding, signMethod, txnType 00, txnSubType 00, bizType
000000, accessType 0, merId, orderId + txnTime OF THE REFUND, certId, signature.
Query answer: respCode 00 (the query worked) with origRespCode/origRespMsg (the refund's
state), txnType 04, txnSubType 00, bizType 000201, merId, orderId, txnTime, txnAmt,
currencyCode, queryId, origQryId; on origRespCode 00 also settleAmt, settleCurrencyCode,
settleDate (MMDD), traceNo (6 digits), traceTime (MMDDhhmmss). Unknown orderId, or an
orderId whose txnTime differs: respCode 34.

respCode / origRespCode values this sandbox uses
------------------------------------------------
``00`` 成功 (refund: accepted and executed; query: the query worked / origRespCode: the
refund succeeded). ``05`` 交易已受理，请稍后查询交易结果 (origRespCode only: still processing,
query again). ``06`` 系统繁忙，请稍后再试 (fault ``rate_limited``, refund or query: NOTHING
executed; resending the same orderId + txnTime later is safe and executes once).
``10`` 报文格式错误 (a field has a bad value). ``11`` 验证签名失败 (bad signature or certId
not the merchant's). ``12`` 重复交易 (orderId already used with different content: merId,
txnTime, txnAmt, origQryId or currencyCode differ; same content gets the first answer
again and nothing is executed twice). ``13`` 报文交易要素缺失 (a required field is
missing). ``31`` 商户状态不正确 (merId is not the sandbox merchant). ``33`` 交易金额超限
(Σ refunds of the consume would exceed its amount; refunds that failed with 63 do not
count). ``34`` 查无此交易 (query of an unknown refund). ``35`` 原交易不存在或状态不正确
(origQryId unknown). ``63`` 卡状态不正确 (origRespCode and notification respCode of a refund
that was accepted but failed afterwards: fault ``abnormal``, the card was cancelled; no
money reached the card). Only 00/05 (and 06 for rate limiting) reflect state; every other
code is a refusal and nothing was executed.

Progression: an accepted refund is PROCESSING in the truth; the route's Settle rule
(``/_sandbox/config``) moves it to SUCCESS (ABNORMAL under the abnormal fault) when a
submit, a query, a settlement file or the server's ~50 ms tick finds it due. The
default rule (immediate) settles it right after acceptance, so the first query answers
origRespCode 00. On that change a back notification is sent.

Back notification: form POST (``application/x-www-form-urlencoded; charset=UTF-8``) to
the refund's ``backUrl`` (``/_sandbox/config`` notify_url for ``bankcard`` overrides it),
retried on non-2xx, signed as above with signPubKeyCert. Fields: version, encoding,
signMethod, txnType 04, txnSubType 00, bizType 000201, accessType 0, merId, orderId,
txnTime, txnAmt, currencyCode, queryId, origQryId, respCode (00 | 63), respMsg,
settleAmt, settleCurrencyCode, settleDate (MMDD), traceNo, traceTime, signPubKeyCert,
signature. Fault ``bad_signature`` on operation ``notify`` signs one with the wrong key.

Settlement file (``GET /unionpay/settlement/{YYYYMMDD}``, also ``statement(day)``)
-------------------------------------------------------------------------------------
Modelled on UnionPay's 对账文件 but simplified (the real one is a fixed-width file inside a
zip fetched with txnType 76; that transfer is not emulated). Exact layout:

* Encoding UTF-8, no BOM; lines end with ``\\n`` (also the last one).
* Line 1, fixed header, exactly:
  ``txnType|merId|orderId|txnTime|queryId|origQryId|txnAmt|currencyCode|settleDate|traceNo|respCode|accNo``
* Then one line per transaction of the day, sorted by txnTime then orderId: the
  consumes (txnType 01) of bank-card payments made on the day, and the refunds
  (txnType 04) the sandbox accepted on the day (Beijing time). 12 fields split by ``|``
  (no field contains ``|``, no quoting, no padding):
  1. txnType: ``01`` consume | ``04`` refund (退货)
  2. merId: 15 digits
  3. orderId: consume: the payment's merchant order number; refund: the merchant's
     refund orderId
  4. txnTime: YYYYMMDDhhmmss, Beijing time (refund: as the merchant sent it)
  5. queryId: consume: its queryId (= the payment's channel trade number); refund: the
     refund's own queryId (21 digits)
  6. origQryId: refund: the original consume's queryId; consume: empty
  7. txnAmt: the amount in fen, a plain positive integer (no sign, no decimals)
  8. currencyCode: ``156``
  9. settleDate: MMDD of the file's day (the sandbox clears on the day it accepted the
     transaction; no 23:00 cut-off)
  10. traceNo: 6 digits
  11. respCode: ``00`` done (for a refund: the money reached the card); ``63`` a refund
      that failed after acceptance (no money moved; txnAmt is what was asked)
  12. accNo: the card number masked to BIN (first 6) + ``*`` for the middle digits +
      last 4, e.g. ``622202******1234`` (same length as the card number)
* No trailer, no totals. A refund still processing when the file is produced is not
  listed; a day without transactions is the header line alone. Statement faults apply
  to refund lines (a missing line, a line twice, txnAmt drifted); consume lines are
  always exact.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from urllib.parse import urlencode

from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.keys import KeyPair, SandboxKeys, verify_b64
from sandbox.state import BEIJING, Refund, State, now_utc

MER_ID = "777290058110048"
MERCHANT_CERT_ID = "68759663125"          # decimal serial of the merchant signing cert
PLATFORM_CERT_SERIAL = 69042905377
PLATFORM_CERT_CN = "041@Z12@00040000:SIGN@00000062"

MESSAGES = {
    "00": "成功[0000000]",
    "05": "交易已受理，请稍后查询交易结果",
    "06": "系统繁忙，请稍后再试",
    "10": "报文格式错误",
    "11": "验证签名失败",
    "12": "重复交易",
    "13": "报文交易要素缺失",
    "31": "商户状态不正确",
    "33": "交易金额超限",
    "34": "查无此交易",
    "35": "原交易不存在或状态不正确",
    "63": "卡状态不正确",
}
REFUND_FIXED = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01",
                "txnType": "04", "txnSubType": "00", "bizType": "000201",
                "accessType": "0", "currencyCode": "156"}
QUERY_FIXED = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01",
               "txnType": "00", "txnSubType": "00", "bizType": "000000", "accessType": "0"}
REFUND_REQUIRED = (*REFUND_FIXED, "channelType", "merId", "orderId", "txnTime", "txnAmt",
                   "origQryId", "backUrl", "certId", "signature")
QUERY_REQUIRED = (*QUERY_FIXED, "merId", "orderId", "txnTime", "certId", "signature")
ECHO = ("version", "encoding", "signMethod", "txnType", "txnSubType", "bizType",
        "accessType", "merId", "orderId", "txnTime", "txnAmt")
FINGERPRINT = ("merId", "txnTime", "txnAmt", "origQryId", "currencyCode")
HEADER = ("txnType|merId|orderId|txnTime|queryId|origQryId|txnAmt|currencyCode|"
          "settleDate|traceNo|respCode|accNo")
ORDER_ID = re.compile(r"[A-Za-z0-9]{8,32}")
AMOUNT = re.compile(r"[1-9][0-9]{0,11}")
FAILED_CODE = "63"


def signing_digest(fields: dict[str, str]) -> bytes:
    """CH §6: sorted ``k=v`` (all but ``signature``) joined by ``&`` -> SHA-256 lowercase hex."""
    text = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")


def encode_answer(fields: dict[str, str]) -> str:
    """``k=v&k=v`` with raw values (CH §6), names sorted, signature last."""
    names = sorted(k for k in fields if k != "signature")
    if "signature" in fields:
        names.append("signature")
    return "&".join(f"{k}={fields[k]}" for k in names)


def _valid_time(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{14}", text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d%H%M%S")  # noqa: DTZ007 - a Beijing wall-clock stamp
    except ValueError:
        return False
    return True


def mask_card(card_no: str) -> str:
    return card_no[:6] + "*" * max(len(card_no) - 10, 0) + card_no[-4:]


class UnionPayChannel(Channel):
    route = "bankcard"
    prefixes = ("/gateway/api/", "/unionpay/")

    def __init__(self, state: State, keys: SandboxKeys) -> None:
        super().__init__(state, keys)
        # One certificate per run: the client pins it (__UNIONPAY_PUBLIC_KEY).
        self.platform_cert = keys.unionpay_platform.certificate_pem(
            PLATFORM_CERT_CN, PLATFORM_CERT_SERIAL)

    # -- framework hooks ----------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        path = request.path
        if request.method == "POST" and path == "/gateway/api/backTransReq.do":
            return "refund"
        if request.method == "POST" and path == "/gateway/api/queryTrans.do":
            return "query"
        if request.method == "GET" and path.startswith("/unionpay/settlement/"):
            return "statement"
        return None

    def server_error(self) -> Response:
        return Response.text("<html><body><h1>500 Internal Server Error</h1></body></html>",
                             500, "text/html")

    def client_settings(self, base_url: str) -> dict[str, str]:
        settings = {
            "REFUND_GATEWAY_BANKCARD__MER_ID": MER_ID,
            "REFUND_GATEWAY_BANKCARD__PRIVATE_KEY": self.keys.unionpay_merchant.private_pem(),
            "REFUND_GATEWAY_BANKCARD__CERT_ID": MERCHANT_CERT_ID,
            "REFUND_GATEWAY_BANKCARD__UNIONPAY_PUBLIC_KEY": self.platform_cert,
            "REFUND_GATEWAY_BANKCARD__BASE_URL": base_url,
        }
        back_url = self.state.notify_urls.get(self.route)
        if back_url:
            settings["REFUND_GATEWAY_BANKCARD__BACK_URL"] = back_url
        return settings

    def handle(self, request: Request) -> Response:
        self._sweep()
        operation = self.operation(request)
        if operation == "statement":
            return self._settlement(request)
        if operation is None:
            return Response.text("404 Not Found", 404)
        try:
            fields = request.form()
        except UnicodeDecodeError:
            return self._answer({"respCode": "10"}, request)
        if operation == "refund":
            return self._answer(self._refund(fields, request), request)
        return self._answer(self._query(fields, request), request)

    # -- refund -------------------------------------------------------------------------
    def _check(self, fields: dict[str, str], fixed: dict[str, str],
               required: tuple[str, ...]) -> str | None:
        """The respCode of a malformed or forged request, None when it is sound."""
        if any(not fields.get(name) for name in required):
            return "13"
        if any(fields[name] != value for name, value in fixed.items()):
            return "10"
        if not ORDER_ID.fullmatch(fields["orderId"]) or not _valid_time(fields["txnTime"]):
            return "10"
        if "txnAmt" in fields and not AMOUNT.fullmatch(fields["txnAmt"]):
            return "10"
        if "channelType" in fields and not re.fullmatch(r"[0-9]{2}", fields["channelType"]):
            return "10"
        if fields["certId"] != MERCHANT_CERT_ID or not verify_b64(
                self.keys.unionpay_merchant.public, signing_digest(fields),
                fields["signature"]):
            return "11"
        if fields["merId"] != MER_ID:
            return "31"
        return None

    def _refund(self, fields: dict[str, str], request: Request) -> dict[str, str]:
        echo = {k: fields[k] for k in ECHO if fields.get(k)}
        code = self._check(fields, REFUND_FIXED, REFUND_REQUIRED)
        if code is not None:
            return {**echo, "respCode": code}
        if request.fault is not None and request.fault.kind == "rate_limited":
            return {**echo, "respCode": "06"}
        fingerprint = json.dumps([fields[k] for k in FINGERPRINT])
        order_id = fields["orderId"]
        settled: Refund | None = None
        with self.state.lock:
            existing = self.state.refunds.get((self.route, order_id))
            if existing is not None:
                if existing.request_fingerprint != fingerprint:
                    return {**echo, "respCode": "12"}
                return {**echo, "queryId": existing.channel_refund_id, "respCode": "00"}
            payment = self.state.find_payment(self.route, trade_no=fields["origQryId"])
            if payment is None:
                return {**echo, "respCode": "35"}
            amount = int(fields["txnAmt"])
            if self._refunded(payment.channel_trade_no) + amount > payment.amount_fen:
                return {**echo, "respCode": "33"}
            now = now_utc()
            beijing = now.astimezone(BEIJING)
            query_id = (beijing.strftime("%Y%m%d") + self.state.next_id(7)
                        + f"{self.state.rng.randrange(10**6):06d}")
            refund = Refund(
                route=self.route, channel_refund_no=order_id, channel_refund_id=query_id,
                merchant_order_no=payment.merchant_order_no,
                channel_trade_no=payment.channel_trade_no, amount_fen=amount,
                status="PROCESSING", created_at=now, request_fingerprint=fingerprint,
                notify_url=fields["backUrl"],
                abnormal=request.fault is not None and request.fault.kind == "abnormal",
                extra={"txnTime": fields["txnTime"], "merId": fields["merId"],
                       "currencyCode": fields["currencyCode"],
                       "card_no": payment.card_no,
                       "settleDate": beijing.strftime("%m%d"),
                       "traceNo": f"{self.state.rng.randrange(10**6):06d}",
                       "traceTime": beijing.strftime("%m%d%H%M%S")})
            self.state.refunds[(self.route, order_id)] = refund
            payment.refunded_fen = self._refunded(payment.channel_trade_no)
            if self.settle(refund, query=False):
                settled = refund
        if settled is not None:
            self._notify(settled)
        return {**echo, "queryId": query_id, "respCode": "00"}

    def _refunded(self, trade_no: str) -> int:
        """Σ of the consume's refunds that still count (failed ones gave the room back)."""
        return sum(r.amount_fen for r in self.state.refunds.values()
                   if r.route == self.route and r.channel_trade_no == trade_no
                   and r.status != "ABNORMAL")

    # -- query --------------------------------------------------------------------------
    def _query(self, fields: dict[str, str], request: Request) -> dict[str, str]:
        echo = {k: fields[k] for k in ECHO if fields.get(k)}
        code = self._check(fields, QUERY_FIXED, QUERY_REQUIRED)
        if code is not None:
            return {**echo, "respCode": code}
        if request.fault is not None and request.fault.kind == "rate_limited":
            return {**echo, "respCode": "06"}
        changed = False
        with self.state.lock:
            refund = self.state.refunds.get((self.route, fields["orderId"]))
            if refund is None or refund.extra["txnTime"] != fields["txnTime"]:
                return {**echo, "respCode": "34"}
            changed = self.settle(refund, query=True)
            self._release(refund)
            answer = {**echo, "txnType": "04", "txnSubType": "00", "bizType": "000201",
                      **self._state_fields(refund), "respCode": "00"}
            answer["origRespCode"] = answer.pop("_code")
            answer["origRespMsg"] = MESSAGES[answer["origRespCode"]]
        if changed:
            self._notify(refund)
        return answer

    def _release(self, refund: Refund) -> None:
        payment = self.state.find_payment(self.route, trade_no=refund.channel_trade_no)
        if payment is not None:
            payment.refunded_fen = self._refunded(payment.channel_trade_no)

    def _state_fields(self, refund: Refund) -> dict[str, str]:
        """A refund's fields as queries and notifications state them (``_code`` = its code)."""
        code = {"SUCCESS": "00", "ABNORMAL": FAILED_CODE}.get(refund.status, "05")
        fields = {"merId": refund.extra["merId"], "orderId": refund.channel_refund_no,
                  "txnTime": refund.extra["txnTime"], "txnAmt": str(refund.amount_fen),
                  "currencyCode": refund.extra["currencyCode"],
                  "queryId": refund.channel_refund_id, "origQryId": refund.channel_trade_no,
                  "_code": code}
        if code == "00":
            fields.update(settleAmt=str(refund.amount_fen), settleCurrencyCode="156",
                          settleDate=refund.extra["settleDate"],
                          traceNo=refund.extra["traceNo"],
                          traceTime=refund.extra["traceTime"])
        return fields

    # -- progression and notifications -------------------------------------------------
    def tick(self) -> None:
        self._sweep()

    def _sweep(self) -> None:
        """Settle refunds the rule says are due without a query (after_seconds), notify."""
        with self.state.lock:
            changed = self.settle_due_refunds()
            for refund in changed:
                self._release(refund)
        for refund in changed:
            self._notify(refund)

    def _notify(self, refund: Refund) -> None:
        with self.state.lock:
            fields = self._state_fields(refund)
        code = fields.pop("_code")
        fields.update(version="5.1.0", encoding="UTF-8", signMethod="01", txnType="04",
                      txnSubType="00", bizType="000201", accessType="0", respCode=code,
                      respMsg=MESSAGES[code])
        fault = self.state.take_fault(self.route, "notify", ("bad_signature",))
        signed = self._sign(fields, self.keys.wrong if fault is not None else None)
        self.notify(refund, {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
                    urlencode(signed).encode("utf-8"), self.state.notify_urls.get(self.route))

    # -- answers ------------------------------------------------------------------------
    def _sign(self, fields: dict[str, str], key: KeyPair | None = None) -> dict[str, str]:
        out = {**fields, "signPubKeyCert": self.platform_cert}
        out.pop("signature", None)
        out["signature"] = (key or self.keys.unionpay_platform).sign_b64(signing_digest(out))
        return out

    def _answer(self, fields: dict[str, str], request: Request) -> Response:
        fields = {k: v for k, v in fields.items() if v != ""}
        fields.setdefault("respMsg", MESSAGES.get(fields["respCode"], "交易失败"))
        bad = request.fault is not None and request.fault.kind == "bad_signature"
        signed = self._sign(fields, self.keys.wrong if bad else None)
        return Response.text(encode_answer(signed))

    # -- settlement file ----------------------------------------------------------------
    def _settlement(self, request: Request) -> Response:
        day_text = request.path.rsplit("/", 1)[-1]
        try:
            day = datetime.strptime(day_text, "%Y%m%d").date()  # noqa: DTZ007 - a date
        except ValueError:
            return Response.text("settlement date must be YYYYMMDD", 400)
        return Response(200, self.statement(day, request.base_url),
                        {"Content-Type": "text/plain; charset=utf-8",
                         "Content-Disposition":
                             f'attachment; filename="INN{day:%y%m%d}01ZM_{MER_ID}.txt"'})

    def statement(self, day: date, base_url: str) -> bytes:
        self._sweep()
        with self.state.lock:
            final = [r for r in self.refunds_on(day) if r.status in ("SUCCESS", "ABNORMAL")]
            consumes = [p for p in self.state.payments.values() if p.route == self.route
                        and p.created_at.astimezone(BEIJING).date() == day]
        rows = [(p.created_at.astimezone(BEIJING).strftime("%Y%m%d%H%M%S"),
                 p.merchant_order_no, "01", p.channel_trade_no, "", p.amount_fen,
                 p.channel_trade_no[-6:], "00", p.card_no) for p in consumes]
        rows += [(r.extra["txnTime"], r.channel_refund_no, "04", r.channel_refund_id,
                  r.channel_trade_no, fen, r.extra["traceNo"],
                  "00" if r.status == "SUCCESS" else FAILED_CODE, r.extra["card_no"])
                 for r, fen in self.statement_faults(final)]
        lines = [HEADER]
        for txn_time, order_id, txn_type, query_id, orig, fen, trace, code, card in \
                sorted(rows, key=lambda row: (row[0], row[1])):
            lines.append("|".join((txn_type, MER_ID, order_id, txn_time, query_id, orig,
                                   str(fen), "156", f"{day:%m%d}", trace, code,
                                   mask_card(card))))
        return ("\n".join(lines) + "\n").encode("utf-8")
