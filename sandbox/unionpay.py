"""UnionPay online gateway 5.1.0 (银联全渠道, CH §6): refunds to bank cards (route ``bankcard``).

Endpoints (``prefixes = ("/gateway/api/", "/filedownload/")``)
---------------------------------------------------------------
``POST /gateway/api/backTransReq.do``  refund (退货, txnType 04), form UTF-8.
``POST /gateway/api/queryTrans.do``    single query (txnType 00) of a refund.
``POST /filedownload/``                file transfer (txnType 76): the settlement file.
                                       Stands for the ROOT of UnionPay's own host
                                       ``https://filedownload.95516.com/`` (addendum §1);
                                       one sandbox host serves both, hence the path.

Signing (both directions, CH §6 "5.1.0 / signMethod=01")
---------------------------------------------------------
string = every field except ``signature``, sorted by name, ``k=v`` joined by ``&``
(raw values, not URL-encoded); hex = lowercase SHA-256 hex of the UTF-8 string;
``signature`` = base64(SHA256withRSA PKCS#1 v1.5 over the ASCII bytes of hex).
Requests are verified with the MERCHANT public key and ``certId`` must equal
``REFUND_GATEWAY_BANKCARD__CERT_ID``. Answers and back notifications carry
``signPubKeyCert`` (the PEM of the sandbox UnionPay signing certificate, see
"Certificates") and are signed the same way with its key; ``signPubKeyCert`` is a signed
field like any other.

Certificates (CH §6: the answer's certificate chains to UnionPay's middle and root)
-------------------------------------------------------------------------------------
One test root CA and one middle CA per run (``sandbox.keys.TestCA``); the middle issues
the signing certificate, CN ``041@Z12@00040000:SIGN@00000062`` like UnionPay's test
environment (the ACP SDK's CN rule takes the third ``@`` field, ``00040000:SIGN``, which
only a client that does not insist on production's 中国银联股份有限公司 accepts, hence
``REFUND_GATEWAY_BANKCARD__VALIDATE_CN_NAME=false`` in the settings, as
``acpsdk.ifValidateCNName=false`` in UnionPay's test-environment properties). The
settings carry the middle and root PEMs (``__MIDDLE_CERT`` / ``__ROOT_CERT``, the
acpsdk.middleCert / acpsdk.rootCert an ACP-SDK client verifies the chain with) and the
signing certificate of the moment (``__UNIONPAY_PUBLIC_KEY``, for a client that pins it).

Fault ``cert_rotated`` (any operation; ``notify``: before the next back notification):
from the request it hits on, answers and notifications are signed with a NEW key whose
certificate the same middle CA issued (serial +1 each time): a client that trusts the
chain goes on verifying, one that pinned the old certificate does not. Until the next
rotation or ``/_sandbox/reset``. Params make the new certificate one a client must
refuse: ``"issuer": "foreign"`` (issued by another root/middle pair with the SAME names,
so only the signature tells), ``"expired": true`` (validity ended yesterday), ``"cn"``
(another CN, e.g. ``041@Z12@00040001:SIGN@00000062``).

Answers are ``k=v&k=v`` in name order, values NOT URL-encoded (the PEM keeps its
newlines), ``Content-Type: text/plain; charset=utf-8``.

Refund request fields: version 5.1.0, encoding UTF-8 (in any case, echoed as sent; queries
too), signMethod 01, txnType 04, txnSubType 00, bizType 000201, accessType 0, channelType
(2 digits), merId, orderId
(8-32 ASCII letters/digits, no ``-``/``_``), txnTime (YYYYMMDDhhmmss), txnAmt (fen, positive
integer, no leading zero), currencyCode (optional, 156 when sent: CH §6 lists none and
UnionPay's Form_6_4_Refund demo sends none), origQryId (the consume's queryId = the
payment's ``channel_trade_no``), backUrl, certId, signature; reqReserved optional.
Refund answer: version, encoding, signMethod, txnType, txnSubType, bizType, accessType,
merId, orderId, txnTime, txnAmt, queryId (only when accepted: the refund's own 21-digit
queryId), respCode, respMsg, signPubKeyCert, signature (fields the request lacked are left
out of refusals).

Query request fields: version, encoding, signMethod, txnType 00, txnSubType 00, bizType
000000, accessType 0, merId, orderId + txnTime OF THE REFUND, certId, signature.
Query answer: respCode 00 (the query worked) with origRespCode/origRespMsg (the refund's
state), txnType 04, txnSubType 00, bizType 000201, merId, orderId, txnTime, txnAmt,
currencyCode, queryId, origQryId; when the refund succeeded (origRespCode 00, or A6 under
a ``resp_code_A6`` fault) also settleAmt, settleCurrencyCode,
settleDate (MMDD), traceNo (6 digits), traceTime (MMDDhhmmss). Unknown orderId, or an
orderId whose txnTime differs: respCode 34.

respCode / origRespCode values this sandbox uses
------------------------------------------------
``00`` 成功 (refund: accepted and executed; query: the query worked / origRespCode: the
refund succeeded). ``05`` 交易已受理，请稍后查询交易结果 (origRespCode only: still processing,
query again). ``06`` 系统繁忙，请稍后再试 (fault ``rate_limited``, refund or query: NOTHING
executed; resending the same orderId + txnTime later is safe and executes once).
``10`` 报文格式错误 (a field has a bad value). ``11`` 验证签名失败 (bad signature or certId
not the merchant's). ``12`` 重复交易[2010002] (the orderId is taken, addendum §2: by a
refund already made under it, whether this is the same request resent - same orderId and
txnTime - or other content; or by the consume itself, the mistake of
lokielse/omnipay-unionpay#19/#22. Nothing is executed again, and the answer has no
queryId: it is no proof of the first request, which the query of that orderId + txnTime
tells; UnionPay keeps orderIds unique per day, the sandbox for good). ``13``
报文交易要素缺失 (a required field is missing). ``31`` 商户状态不正确 (merId is not the
sandbox merchant). ``33`` 交易金额超限
(Σ refunds of the consume would exceed its amount; refunds that failed with 63 do not
count). ``34`` 查无此交易 (query of an unknown refund). ``35`` 原交易不存在或状态不正确
(origQryId unknown). ``63`` 卡状态不正确 (origRespCode and notification respCode of a refund
that was accepted but failed afterwards: fault ``abnormal``, the card was cancelled; no
money reached the card). Only 00/05 (and 06 for rate limiting) reflect state; every other
code is a refusal and nothing was executed, except under the faults below.

Fault kinds ``resp_code_<code>`` (CHANNELS-ADDENDUM §2 codes; ``sandbox.state.UNIONPAY_CODES``)
-------------------------------------------------------------------------------------------
* operation ``refund``: ``resp_code_A6`` 有缺陷的成功: the refund is executed and SUCCEEDS at
  once (whatever the Settle rule), the answer says A6 with the refund's queryId, and from
  then on its query origRespCode and its back notification respCode are A6 too.
  ``resp_code_03`` 交易通讯超时 / ``_04`` 交易状态未明 / ``_05`` 交易已受理 / ``_12`` 重复交易:
  the refund IS executed (accepted, then as the Settle rule says), but the answer carries
  only that code and no queryId: the query tells the truth. ``resp_code_02`` 系统未开放 /
  ``_06`` 系统繁忙 / ``_37`` 过于频繁 / ``_34``, and every code of the addendum's
  final-failure row (``sandbox.state.UNIONPAY_FAILURE_CODES``: ``resp_code_63`` 卡状态不正确
  ...): NOTHING executed, answered with the code.
* operation ``query``: ``resp_code_A6``: a refund that has succeeded is answered (now and
  later, notifications too) with origRespCode A6. Any other: the query's own respCode is
  that code, with no origRespCode, and the refund does not progress.
* operation ``notify``: the next back notification of a refund carries that respCode
  (``resp_code_A6`` only changes a success notice).

Progression: an accepted refund is PROCESSING in the truth; the route's Settle rule
(``/_sandbox/config``) moves it to SUCCESS (ABNORMAL under the abnormal fault) when a
submit, a query, a settlement file or the server's ~50 ms tick finds it due. The
default rule (immediate) settles it right after acceptance, so the first query answers
origRespCode 00. On that change a back notification is sent.

Back notification: form POST (``application/x-www-form-urlencoded; charset=UTF-8``) to
the refund's ``backUrl`` (``/_sandbox/config`` notify_url for ``bankcard`` overrides it),
retried on non-2xx, signed as above with signPubKeyCert. Fields: version, encoding (as
the refund request spelled it: ``utf-8`` stays ``utf-8``; inferred, UNCONFIRMED),
signMethod, txnType 04, txnSubType 00, bizType 000201, accessType 0, merId, orderId,
txnTime, txnAmt, currencyCode, queryId, origQryId, respCode (00 | 63; A6 or another code
under a ``resp_code_*`` fault), respMsg,
settleAmt, settleCurrencyCode, settleDate (MMDD), traceNo, traceTime, signPubKeyCert,
signature. Fault ``bad_signature`` on operation ``notify`` signs one with the wrong key.

Settlement file: file transfer (CHANNELS-ADDENDUM §1), also ``statement(day)``
----------------------------------------------------------------------------------
Request (form, signed like a refund): version 5.1.0, encoding (UTF-8 in any case),
signMethod 01, txnType 76, txnSubType 01, bizType 000000, accessType 0, fileType 00, merId,
txnTime (YYYYMMDDhhmmss), settleDate (MMDD: the latest such day not after today, Beijing),
certId, signature; reqReserved optional. Missing field 13, bad value 10, signature 11,
another merId 31 (fault ``rate_limited``: 06, ``bad_signature``: a wrongly signed answer).
Answer (signed, ``k=v`` as above): version, encoding, signMethod, bizType, accessType,
merId, txnTime, txnType, txnSubType, settleDate, fileType, reqReserved (echoed), respCode
``00``, respMsg, fileName ``<merId>_<YYYYMMDD>.zip``, fileContent = base64(zlib(ZIP)),
signPubKeyCert, signature. Every day has a file; one without transactions holds an empty
ZM member (whether UnionPay then answers 98 文件不存在 instead: UNCONFIRMED).

The ZIP (``sandbox/unionpay_files.py`` has the record layout) holds
``INN<yymmdd>88ZM_<merId>``: one fixed-width GBK record per transaction cleared that day
(Beijing; no 23:00 cut-off here, so settleDate is the day of acceptance): the bank-card
payments (consumes, txnType 01) made on it and the refunds (txnType 04) accepted on it
that reached the card. A refund still processing, or failed after acceptance (63), moved
no money and is not listed. Then ``RD2010<yymmdd>01_<merId>``, the summary report.
``GET /_sandbox/statements/bankcard/{YYYY-MM-DD}`` serves the same ZIP bytes as the decoded
fileContent. Statement faults apply to refund records (one missing, one twice, an amount
drifted); consume records are always exact.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from sandbox import unionpay_files as files
from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.keys import KeyPair, SandboxKeys, TestCA, dn, pem, verify_b64
from sandbox.state import (
    BEIJING,
    CERT_ROTATED,
    RESP_CODE_FAULTS,
    Fault,
    Refund,
    State,
    now_utc,
)

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
    "12": "重复交易[2010002]",       # addendum §2: yansongda/pay, lokielse#19/#22
    "13": "报文交易要素缺失",
    "31": "商户状态不正确",
    "33": "交易金额超限",
    "34": "查无此交易",
    "35": "原交易不存在或状态不正确",
    "63": "卡状态不正确",
    # CHANNELS-ADDENDUM §2 meanings (the ACP 应答码 table), for the resp_code_* faults.
    "A6": "有缺陷的成功",
    "02": "系统未开放",
    "03": "交易通讯超时，请发起查询交易",
    "04": "交易状态未明，请查询对账结果",
    "37": "超过最大查询次数或操作过于频繁",
    # ... and its final-failure row (UNIONPAY_FAILURE_CODES), in the addendum's words.
    "01": "交易失败",
    "30": "未通过",
    "32": "无此权限",
    "36": "与原交易信息不符",
    "38": "风险受限",
    "39": "不在受理时间",
    "45": "原交易已被成功退货或撤销",
    "60": "发卡行失败",
    "61": "卡号无效",
    "62": "发卡行不支持该商户",
    "99": "通用错误",
}
# resp_code_* faults on a refund after which the refund has been executed (addendum §2:
# accepted / unknown / duplicate); the rest leave nothing executed.
EXECUTED_CODES = frozenset({"A6", "03", "04", "05", "12"})
WITH_DEFECTS = "A6"
REFUND_FIXED = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01",
                "txnType": "04", "txnSubType": "00", "bizType": "000201",
                "accessType": "0"}
CURRENCY = "156"
QUERY_FIXED = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01",
               "txnType": "00", "txnSubType": "00", "bizType": "000000", "accessType": "0"}
REFUND_REQUIRED = (*REFUND_FIXED, "channelType", "merId", "orderId", "txnTime", "txnAmt",
                   "origQryId", "backUrl", "certId", "signature")
QUERY_REQUIRED = (*QUERY_FIXED, "merId", "orderId", "txnTime", "certId", "signature")
ECHO = ("version", "encoding", "signMethod", "txnType", "txnSubType", "bizType",
        "accessType", "merId", "orderId", "txnTime", "txnAmt")
FINGERPRINT = ("merId", "txnTime", "txnAmt", "origQryId", "currencyCode")
ORDER_ID = re.compile(r"[A-Za-z0-9]{8,32}")
AMOUNT = re.compile(r"[1-9][0-9]{0,11}")
FAILED_CODE = "63"
FILE_TRANS_PATH = "/filedownload/"


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


def fault_code(fault: Fault | None) -> str | None:
    """The UnionPay code a ``resp_code_<code>`` fault names, else None."""
    if fault is None or fault.kind not in RESP_CODE_FAULTS:
        return None
    return fault.kind.removeprefix("resp_code_")


def mask_card(card_no: str) -> str:
    return card_no[:6] + "*" * max(len(card_no) - 10, 0) + card_no[-4:]


@dataclass(frozen=True)
class Signer:
    """What signs answers and notifications: a key and its certificate (``signPubKeyCert``)."""

    key: KeyPair
    cert_pem: str
    serial: int


def _chain() -> tuple[TestCA, TestCA]:
    """A (root, middle) pair with the sandbox's CA names."""
    root = TestCA.root(dn("Sandbox UnionPay Test Root CA", o="Sandbox"))
    return root, root.issue_ca(dn("Sandbox UnionPay Test Middle CA", o="Sandbox"), 2)


class UnionPayChannel(Channel):
    route = "bankcard"
    prefixes = ("/gateway/api/", FILE_TRANS_PATH)

    def __init__(self, state: State, keys: SandboxKeys) -> None:
        super().__init__(state, keys)
        # One chain per run ("Certificates"): clients verify the signing certificate
        # through the middle and root (__MIDDLE_CERT, __ROOT_CERT).
        self.root_ca, self.middle_ca = _chain()
        self.middle_cert, self.root_cert = self.middle_ca.pem, self.root_ca.pem
        self._first = Signer(keys.unionpay_platform, pem(self.middle_ca.issue(
            keys.unionpay_platform.public, dn(PLATFORM_CERT_CN, o="Sandbox"),
            PLATFORM_CERT_SERIAL)), PLATFORM_CERT_SERIAL)

    # -- certificates -------------------------------------------------------------------
    @property
    def signer(self) -> Signer:
        """The signing key and certificate of the moment (rotated by ``cert_rotated``)."""
        with self.state.lock:
            current = self.state.certificates.get(self.route)
        return current if isinstance(current, Signer) else self._first

    @property
    def platform_cert(self) -> str:
        return self.signer.cert_pem

    def rotate(self, params: dict[str, object] | None = None) -> Signer:
        """A new signing key and certificate (fault ``cert_rotated``; params above)."""
        params = params or {}
        ca = self.middle_ca if params.get("issuer", "middle") != "foreign" else _chain()[1]
        key = KeyPair.generate()
        now = datetime.now(BEIJING)
        expired = bool(params.get("expired"))
        with self.state.lock:
            serial = self.signer.serial + 1
            cert = ca.issue(key.public, dn(str(params.get("cn") or PLATFORM_CERT_CN),
                                           o="Sandbox"), serial,
                            not_before=now - timedelta(days=30) if expired else None,
                            not_after=now - timedelta(days=1) if expired else None)
            signer = Signer(key, pem(cert), serial)
            self.state.certificates[self.route] = signer
        return signer

    # -- framework hooks ----------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        path = request.path
        if request.method == "POST" and path == "/gateway/api/backTransReq.do":
            return "refund"
        if request.method == "POST" and path == "/gateway/api/queryTrans.do":
            return "query"
        if request.method == "POST" and path == FILE_TRANS_PATH:
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
            "REFUND_GATEWAY_BANKCARD__MIDDLE_CERT": self.middle_cert,
            "REFUND_GATEWAY_BANKCARD__ROOT_CERT": self.root_cert,
            # The sandbox's CN is the test environment's ("Certificates").
            "REFUND_GATEWAY_BANKCARD__VALIDATE_CN_NAME": "false",
            "REFUND_GATEWAY_BANKCARD__BASE_URL": base_url,
            "REFUND_GATEWAY_BANKCARD__FILE_TRANS_URL": base_url + FILE_TRANS_PATH,
        }
        back_url = self.state.notify_urls.get(self.route)
        if back_url:
            settings["REFUND_GATEWAY_BANKCARD__BACK_URL"] = back_url
        return settings

    def handle(self, request: Request) -> Response:
        self._sweep()
        operation = self.operation(request)
        if operation is None:
            return Response.text("404 Not Found", 404)
        if request.fault is not None and request.fault.kind == CERT_ROTATED:
            self.rotate(request.fault.params)
        try:
            fields = request.form()
        except UnicodeDecodeError:
            return self._answer({"respCode": "10"}, request)
        if operation == "refund":
            return self._answer(self._refund(fields, request), request)
        if operation == "statement":
            return self._answer(self._file_transfer(fields, request), request)
        return self._answer(self._query(fields, request), request)

    # -- refund -------------------------------------------------------------------------
    def _check(self, fields: dict[str, str], fixed: dict[str, str],
               required: tuple[str, ...]) -> str | None:
        """The respCode of a malformed or forged request, None when it is sound."""
        if any(not fields.get(name) for name in required):
            return "13"
        # encoding in any case, echoed as sent (addendum §2: UnionPay's PHP SDK sends utf-8).
        if any(fields[name] != value for name, value in fixed.items() if name != "encoding") \
                or fields["encoding"].upper() != fixed["encoding"]:
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
        if code is None and fields.setdefault("currencyCode", CURRENCY) != CURRENCY:
            code = "10"
        if code is not None:
            return {**echo, "respCode": code}
        if request.fault is not None and request.fault.kind == "rate_limited":
            return {**echo, "respCode": "06"}
        forced = fault_code(request.fault)
        if forced is not None and forced not in EXECUTED_CODES:
            return {**echo, "respCode": forced}
        fingerprint = json.dumps([fields[k] for k in FINGERPRINT])
        order_id = fields["orderId"]
        settled: Refund | None = None
        with self.state.lock:
            if (self.route, order_id) in self.state.refunds or any(
                    p.route == self.route and p.merchant_order_no == order_id
                    for p in self.state.payments.values()):
                return {**echo, "respCode": "12"}       # taken: resent or other content
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
                       "encoding": fields["encoding"],      # as sent: the notice echoes it
                       "card_no": payment.card_no,
                       "reqReserved": fields.get("reqReserved", ""),
                       "settleDate": beijing.strftime("%m%d"),
                       "traceNo": f"{self.state.rng.randrange(10**6):06d}",
                       "traceTime": beijing.strftime("%m%d%H%M%S")})
            self.state.refunds[(self.route, order_id)] = refund
            payment.refunded_fen = self._refunded(payment.channel_trade_no)
            if forced == WITH_DEFECTS:   # final success on the answer itself
                refund.extra["success_code"] = WITH_DEFECTS
                refund.status, refund.succeeded_at = "SUCCESS", now
                settled = refund
            elif self.settle(refund, query=False):
                settled = refund
        if settled is not None:
            self._notify(settled)
        if forced is not None and forced != WITH_DEFECTS:
            return {**echo, "respCode": forced}     # executed, but the answer does not say
        return {**echo, "queryId": query_id, "respCode": forced or "00"}

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
        forced = fault_code(request.fault)
        if forced is not None and forced != WITH_DEFECTS:
            return {**echo, "respCode": forced}
        changed = False
        with self.state.lock:
            refund = self.state.refunds.get((self.route, fields["orderId"]))
            if refund is None or refund.extra["txnTime"] != fields["txnTime"]:
                return {**echo, "respCode": "34"}
            changed = self.settle(refund, query=True)
            if forced == WITH_DEFECTS and refund.status == "SUCCESS":
                refund.extra["success_code"] = WITH_DEFECTS
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
        code = {"SUCCESS": refund.extra.get("success_code", "00"),
                "ABNORMAL": FAILED_CODE}.get(refund.status, "05")
        fields = {"merId": refund.extra["merId"], "orderId": refund.channel_refund_no,
                  "txnTime": refund.extra["txnTime"], "txnAmt": str(refund.amount_fen),
                  "currencyCode": refund.extra["currencyCode"],
                  "queryId": refund.channel_refund_id, "origQryId": refund.channel_trade_no,
                  "_code": code}
        if refund.status == "SUCCESS":
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
        forced = fault_code(self.state.take_fault(self.route, "notify", RESP_CODE_FAULTS))
        if forced is not None and (forced != WITH_DEFECTS or refund.status == "SUCCESS"):
            code = forced
        fields.update(version="5.1.0", encoding=refund.extra.get("encoding", "UTF-8"),
                      signMethod="01", txnType="04",
                      txnSubType="00", bizType="000201", accessType="0", respCode=code,
                      respMsg=MESSAGES.get(code, "交易失败"))
        rotation = self.state.take_fault(self.route, "notify", (CERT_ROTATED,))
        if rotation is not None:
            self.rotate(rotation.params)
        fault = self.state.take_fault(self.route, "notify", ("bad_signature",))
        signed = self._sign(fields, self.keys.wrong if fault is not None else None)
        self.notify(refund, {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
                    urlencode(signed).encode("utf-8"), self.state.notify_urls.get(self.route))

    # -- answers ------------------------------------------------------------------------
    def _sign(self, fields: dict[str, str], key: KeyPair | None = None) -> dict[str, str]:
        signer = self.signer
        out = {**fields, "signPubKeyCert": signer.cert_pem}
        out.pop("signature", None)
        out["signature"] = (key or signer.key).sign_b64(signing_digest(out))
        return out

    def _answer(self, fields: dict[str, str], request: Request) -> Response:
        fields = {k: v for k, v in fields.items() if v != ""}
        fields.setdefault("respMsg", MESSAGES.get(fields["respCode"], "交易失败"))
        bad = request.fault is not None and request.fault.kind == "bad_signature"
        signed = self._sign(fields, self.keys.wrong if bad else None)
        return Response.text(encode_answer(signed))

    # -- settlement file (file transfer, addendum §1) ----------------------------------
    def _file_transfer(self, fields: dict[str, str], request: Request) -> dict[str, str]:
        echo = {k: fields[k] for k in files.ECHO if fields.get(k)}
        code = files.request_problem(fields)
        if code is None and (fields["certId"] != MERCHANT_CERT_ID or not verify_b64(
                self.keys.unionpay_merchant.public, signing_digest(fields),
                fields["signature"])):
            code = "11"
        if code is None and fields["merId"] != MER_ID:
            code = "31"
        if code is None and request.fault is not None and \
                request.fault.kind == "rate_limited":
            code = "06"
        if code is not None:
            return {**echo, "respCode": code}
        today = datetime.now(BEIJING).date()
        day = files.settle_day(fields["settleDate"], today)
        if day is None:
            return {**echo, "respCode": "10"}
        return {**echo, "respCode": "00", "fileName": files.archive_name(day, MER_ID),
                "fileContent": files.file_content(self.statement(day, request.base_url))}

    def statement(self, day: date, base_url: str) -> bytes:
        """The day's settlement ZIP (as the file transfer's fileContent decodes)."""
        self._sweep()
        with self.state.lock:
            done = [r for r in self.refunds_on(day) if r.status == "SUCCESS"]
            consumes = [p for p in self.state.payments.values() if p.route == self.route
                        and p.created_at.astimezone(BEIJING).date() == day]
            lines = [files.Line("01", p.channel_trade_no[-6:], self._trace_time(p.created_at),
                                mask_card(p.card_no), p.amount_fen, p.channel_trade_no,
                                p.merchant_order_no) for p in consumes]
            for refund, fen in self.statement_faults(done):
                paid = self.state.find_payment(self.route, trade_no=refund.channel_trade_no)
                lines.append(files.Line(
                    "04", refund.extra["traceNo"], refund.extra["traceTime"],
                    mask_card(refund.extra["card_no"]), fen, refund.channel_refund_id,
                    refund.channel_refund_no,
                    orig_trace_no=refund.channel_trade_no[-6:],
                    orig_trace_time=self._trace_time(paid.created_at) if paid else "",
                    orig_query_id=refund.channel_trade_no,
                    orig_order_id=refund.merchant_order_no,
                    reserved=refund.extra.get("reqReserved", "")))
        return files.settlement_zip(day, MER_ID, lines)

    @staticmethod
    def _trace_time(at: datetime) -> str:
        return at.astimezone(BEIJING).strftime("%m%d%H%M%S")
