"""Alipay OpenAPI v1 gateway (CH §1, §4), as python-alipay-sdk 3.4.0 talks to it.

Endpoints (``prefixes = ("/gateway.do", "/alipay/")``)
------------------------------------------------------
``GET|POST /gateway.do``            every API method; GET with the query string (what the
                                    SDK sends) or POST form (query and form merged).
``GET /alipay/bills/download?fileId=…`` the bill ZIP a ``bill_download_url`` points at
                                    (valid 30 s, no auth, like Alipay's bill centre).

Gateway errors (CHANNELS-ADDENDUM §6): the request checks, in this order
-------------------------------------------------------------------------
HTTP 200 and JSON ``{"code","msg","sub_code","sub_msg"}`` under one key, signed or not as
Alipay does it: before the app is known there is no key to sign with; once it is, the
answer is signed like any other (the bad-signature, 40006 and 20000 answers in the
addendum and Alipay's docs carry ``sign``). Unsigned answers (and ``error_response`` even
when signed) make the SDK raise ``AliPayException``; signed ``<method>_response`` failures
are returned as dicts (CH §1.3).

1. ``sign`` missing: ``{"error_response":{40001 isv.missing-signature 缺少签名参数}}``,
   unsigned (a real answer quoted in public code). ``method`` missing: the same with
   isv.missing-method.
2. ``app_id`` missing: ``{"<method>_response":{40001 isv.missing-app-id}}``, unsigned.
3. ``app_id`` unknown: ``{"<method>_response":{"code":"40002","msg":"Invalid
   Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数，解决方案：
   https://open.alipay.com/api/errCheck?traceId=…&source=openapi"}}``, unsigned.
4. ``sign_type`` missing / not RSA2: 40001 isv.missing-signature-type / 40002
   isv.invalid-signature-type under ``<method>_response``, unsigned (the sign type is
   what Alipay would sign with; shape UNCONFIRMED).
5. ``timestamp`` / ``version`` missing: 40001 isv.missing-timestamp / isv.missing-version
   under ``<method>_response``, SIGNED (the app is known; shape UNCONFIRMED).
6. Signature wrong: ``{"<method>_response":{"code":"40002","msg":"Invalid Arguments",
   "sub_code":"isv.invalid-signature","sub_msg":"验签出错，建议检查签名字符串或签名私钥与应用
   公钥是否匹配，网关生成的验签字符串为：<the string>"},"sign":"…"}``, SIGNED, the string
   HTML-escaped (``&amp;``, ``&quot;``) exactly as Alipay echoes it. Braces inside
   ``biz_content`` stay balanced, so the SDK's brace matching still finds the signed text
   (a client value with an unbalanced brace would throw it off, as against Alipay).
7. ``method`` not one of the three below: ``error_response`` 40002 isv.invalid-method,
   unsigned.

Unsigned answers go out as ``Content-Type: text/html;charset=utf-8`` (Alipay's probe
notes). The signed string is every parameter except ``sign`` (``sign_type`` INCLUDED),
sorted by name, ``k=v`` joined by ``&``, values as sent (URL-decoded once); RSA2 =
SHA256withRSA PKCS#1 v1.5, verified with the app public key.

Gateway-error faults (``sandbox.state.ALIPAY_GATEWAY_FAULTS``; operation refund, query or
statement): the request passes the checks above, then is answered as if it had not, and
NOTHING is executed: ``invalid_signature`` (6.), ``invalid_app_id`` (3.),
``missing_parameter`` with ``"parameter"`` one of sign (default), method, app_id,
sign_type, timestamp, version (1., 2., 4., 5.), ``invalid_auth_token`` (signed
``{"error_response":{"code":"20001","msg":"Insufficient Token Permissions","sub_code":
"aop.invalid-app-auth-token","sub_msg":"无效的应用授权令牌"},"sign":…}``, as a public
answer shows), ``insufficient_permissions`` (signed ``<method>_response`` 40006
"Insufficient Permissions" isv.insufficient-isv-permissions), ``service_unavailable``
(signed ``<method>_response`` 20000 "Service Currently Unavailable" isp.unknow-error
系统繁忙, Alipay's own refund error sample; with ``"executed": true`` the refund IS executed
first and the answer still says 20000: the query tells the truth).

Answers (CH §0 #7, §1.4): ``{"<method_with_underscores>_response":{…},"sign":"…"}``; the
signature (Alipay platform key) covers exactly the inner JSON text as it appears in the
body (``ensure_ascii=False``, separators ``,``/``:``). Every answer is signed, business
failures included (the SDK returns those as dicts); strings echoed from the client have
``{``/``}`` removed so the SDK's brace matching cannot be thrown off.

``alipay.trade.refund`` (CH §4.1)
    ``trade_no`` wins over ``out_trade_no``. Refusals (code 40004 "Business Failed"):
    ACQ.INVALID_PARAMETER (no trade id, biz_content not a JSON object),
    ACQ.REASON_TRADE_REFUND_FEE_ERR (``refund_amount`` not a positive yuan amount with at
    most 2 decimals), ACQ.TRADE_NOT_EXIST, ACQ.DISCORDANT_REPEAT_REQUEST (same
    ``out_request_no`` on the trade with a different ``refund_amount``),
    ACQ.REFUND_AMT_NOT_EQUAL_TOTAL (Σ refunds of the trade would exceed the paid amount).
    Idempotent per (trade, ``out_request_no``); without ``out_request_no`` the trade's
    ``out_trade_no`` is the request number (what Alipay documents for queries). A repeat
    with the same amount gets the first answer again with ``fund_change`` "N": nothing moved
    THIS time (that is what ``fund_change`` means; CH §4.1 "N/absent => confirm with
    query"), and ``executions`` stays 1. Refunds settle synchronously under the default
    Settle rule (``fund_change`` "Y", ``gmt_refund_pay``, ``refund_detail_item_list``,
    ``send_back_fee``); when the rule says not yet, ``fund_change`` is "N" and the refund
    settles on a later query (or, for ``after_seconds``, on any later gateway call).
    ``refund_fee`` is the trade's cumulative accepted refund amount.

``alipay.trade.fastpay.refund.query`` (CH §4.2)
    Unknown trade: 40004 ACQ.TRADE_NOT_EXIST. Unknown refund on a known trade: code 10000
    WITHOUT ``refund_status`` (absent = not received). Settled refund: ``refund_status``
    REFUND_SUCCESS; with ``query_options``: ``gmt_refund_pay``, ``refund_detail_item_list``
    (and ``send_back_fee``), ``deposit_back_info``.

Card-funded payments and the bank leg (``deposit_back_info``)
    A payment is card-funded when it was created with ``"funding": "bankcard"``
    (``POST /_sandbox/payments``), or when the ``abnormal`` fault hits one of its refunds
    (a cancelled card needs a card). Every other payment was paid from the Alipay balance:
    its refunds have ``fund_channel`` ALIPAYACCOUNT and ``has_deposit_back`` "false".
    Card refunds have ``fund_channel`` BANKCARD / ``fund_type`` DEBIT_CARD and a bank leg
    that starts ``dback_status`` P when the refund settles, answers P to the first query
    after that (``DBACK_PENDING_QUERIES``) and S from the next one on, or F under the
    ``abnormal`` fault (the card was cancelled: the money went to the buyer's Alipay
    balance). Alipay still reports the refund itself as REFUND_SUCCESS, so the truth keeps
    ``status`` SUCCESS with ``abnormal`` true and ``extra.dback_status`` "F".

``alipay.data.dataservice.bill.downloadurl.query`` (CH §4.5)
    ``bill_type`` ``trade`` (the 业务明细 ZIP) or ``signcustomer`` (the 账务明细 ZIP,
    addendum §7) and a day ``bill_date`` (YYYY-MM-DD) only; other types, month bills and
    future days: 40002 isv.invalid_arguments. Today is allowed (Alipay serves T+1; the
    sandbox lets tests reconcile the day they ran). No payment and no refund that day:
    40004 isp.bill_not_exist. Otherwise ``bill_download_url`` =
    ``{base_url}/alipay/bills/download?bizType=<bill_type>&fileId=…`` valid 30 s; the file
    is rendered at download time (``sandbox.alipay_bill``) with statement faults applied.
    Payments of the day become 交易 rows, SUCCESS refunds created that day 退款 rows (with
    their payment's 创建时间, as in Alipay's files: a public bill sample's refund rows
    repeat the trade's creation time and carry the refund's as 完成时间).

Faults: ``rate_limited`` (refund/query/statement): signed 40004 isv.app-call-limited,
nothing executed. ``abnormal`` (refund; or query of a refund whose bank leg is still P):
bank leg ends F. ``bad_signature``: the answer (the refund still executes) or a
notification (operation ``notify``) is signed with the wrong key. ``http_500``: a plain
HTTP 500 page (the SDK raises ``HTTPError``). The gateway-error faults above. Operation
``download`` (the bill file) takes the connection faults and ``latency`` only.

Notifications (CH §1.5, §4.4), form POST, ``Content-Type:
application/x-www-form-urlencoded; charset=utf-8``, to the request's ``notify_url`` when the
client sent one, else the configured Alipay notify URL; signed with the platform key over
the sorted parameters EXCLUDING ``sign`` and ``sign_type``:
* on settle, ``trade_status_sync``: trade_status TRADE_SUCCESS (partial) or TRADE_CLOSED
  (fully refunded), out_biz_no = out_request_no, refund_fee (cumulative settled),
  gmt_refund (``yyyy-MM-dd HH:mm:ss.SSS``), send_back_fee, total_amount, buyer_logon_id…;
* when the bank leg ends (S/F), ``alipay.trade.refund.depositback.completed`` (envelope
  notify_id, utc_timestamp, msg_method, app_id, version, biz_content JSON, charset,
  sign_type, sign).

Certificates: the certificate-mode app (CHANNELS-ADDENDUM §5)
-------------------------------------------------------------
Two apps: ``APP_ID`` in public-key mode (Alipay's public key verifies its answers) and
``CERT_APP_ID`` in public-key-certificate mode, with its own key. A sandbox test CA (an
RSA root and under it a "Class 2" CA, both named ``CN=…,OU=Certification
Authority,O=…,C=CN`` like Ant's) issued its app certificate and the Alipay certificate.
The root file (``__ALIPAY_ROOT_CERT``) holds an ECDSA root first and the RSA root after a
blank line, as Alipay's does: the root SN is that of the RSA one only. SN = lower-case
hex MD5 of the issuer DN (``CN=…,OU=…,O=…,C=…``, RFC 2253) followed by the decimal serial.

* Requests of the certificate app must carry ``app_cert_sn`` (its certificate's SN) and
  ``alipay_root_cert_sn``, both signed; else, signed under ``<method>_response``, 40002
  ``isv.missing-app-cert-sn`` / ``isv.app-cert-not-exist`` (another SN) /
  ``isv.missing-alipay-root-cert-sn`` / ``isv.invalid-alipay-root-cert-sn`` (sub_codes
  from Alipay's common error table; where Alipay checks them and whether it signs:
  UNCONFIRMED). The signature is verified with the key of the app certificate.
* Its answers are ``{"<method>_response":{…},"alipay_cert_sn":"<SN>","sign":"…"}``
  signed with the key of the Alipay certificate of that SN; its notifications are signed
  with it too (they name no certificate).
* ``alipay.open.app.alipaycert.download`` ``{"alipay_cert_sn"}`` answers
  ``alipay_cert_content`` = base64 of that certificate's PEM followed by its issuer's
  (the file's layout); an SN it never issued: 40004 ``isv.alipay-cert-not-exist``
  (UNCONFIRMED). It takes no faults.
* Fault ``cert_rotated`` (any operation; ``notify``: before the next notification): a
  new key and Alipay certificate from the Class 2 CA (a new random serial, so a new SN);
  from then on the certificate app's answers name it and notifications are signed with
  it, until the next rotation or ``/_sandbox/reset``; every certificate issued stays
  downloadable. ``"issuer": "foreign"``: from another root/Class 2 pair with the SAME
  names (the chain does not verify); ``"expired": true``: validity ended yesterday.
  The public-key app is not affected.

ISV (service provider, addendum §5): a request may carry ``app_auth_token`` (a signed
top-level parameter). ``app_auth_token`` (new each run, like the keys; the settings'
``__APP_AUTH_TOKEN`` in ISV mode) is the token of the one merchant that authorised the
apps (its app is ``AUTH_APP_ID``); any other value: signed ``error_response`` 20001
``aop.invalid-app-auth-token`` (the shape of the ``invalid_auth_token`` fault), nothing
executed. A refund made with the token is the merchant's: its notifications carry
``auth_app_id`` and the truth ``extra.auth_app_id``.

Not emulated: RSA (SHA1), the timestamp window, refund currencies/royalties/goods
details, month bills, ``bill_file_code``, ACQ.SYSTEM_ERROR answers (isp.unknow-error: the
``service_unavailable`` fault), the T+1 bill rule, which merchant a trade belongs to (any
app refunds any Alipay payment).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.alipay_bill import (
    BillRow,
    account_id,
    render_account_zip,
    render_zip,
    yuan,
    zip_name,
)
from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.keys import KeyPair, SandboxKeys, TestCA, dn, pem, verify_b64
from sandbox.state import BEIJING, CERT_ROTATED, Fault, Payment, Refund, State, now_utc

APP_ID = "2021000000000001"
CERT_APP_ID = "2021000000000002"         # the public-key-certificate app ("Certificates")
AUTH_APP_ID = "2021000000000009"         # the merchant that authorised the apps (ISV)
PID = "2088000000000001"                 # the merchant's partner id (bill account)
METHODS = {"alipay.trade.refund": "refund",
           "alipay.trade.fastpay.refund.query": "query",
           "alipay.data.dataservice.bill.downloadurl.query": "statement"}
CERT_DOWNLOAD = "alipay.open.app.alipaycert.download"   # no faults: not in METHODS
CLIENT_MODES = ("key", "cert")           # the apps client_settings() can write
RSA_SIGNATURES = "1.2.840.113549.1.1"
DBACK_PENDING_QUERIES = 1                # queries answered P before the bank acks
BILL_URL_TTL = 30.0                      # seconds a bill_download_url stays valid
BANK_RECEIPT_DAYS = 3                    # est_bank_receipt_time = refund + 3 days
NOTIFY_HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
STAMP = "%Y-%m-%d %H:%M:%S"
# 40001 sub_codes and sub_msgs per common parameter (Alipay's public 公共错误码 table as
# copied in public code; addendum §6 lists the sub_codes).
MISSING = {"sign": ("isv.missing-signature", "缺少签名参数"),
           "method": ("isv.missing-method", "缺少方法名参数"),
           "app_id": ("isv.missing-app-id", "缺少AppID参数"),
           "sign_type": ("isv.missing-signature-type", "缺少签名类型参数"),
           "timestamp": ("isv.missing-timestamp", "缺少时间戳参数"),
           "version": ("isv.missing-version", "缺少版本参数")}
BAD_SIGNATURE_MSG = ("验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，"
                     "网关生成的验签字符串为：")

Fields = dict[str, Any]


class _Refusal(Exception):
    """A failure answer: signed or not, under ``<method>_response`` or ``error_response``
    (``envelope`` "method" | "error"; addendum §6 says which one Alipay uses when)."""

    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str, *,
                 signed: bool = True, envelope: str = "method") -> None:
        super().__init__(sub_code)
        self.fields = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}
        self.signed = signed
        self.envelope = envelope


def _business(sub_code: str, sub_msg: str) -> _Refusal:
    return _Refusal("40004", "Business Failed", sub_code, sub_msg)


def _invalid(sub_code: str, sub_msg: str, *, signed: bool = True,
             envelope: str = "method") -> _Refusal:
    return _Refusal("40002", "Invalid Arguments", sub_code, sub_msg, signed=signed,
                    envelope=envelope)


def _missing(name: str, *, signed: bool, envelope: str = "method") -> _Refusal:
    sub_code, sub_msg = MISSING[name]
    return _Refusal("40001", "Missing Required Arguments", sub_code, sub_msg,
                    signed=signed, envelope=envelope)


def _html_escape(text: str) -> str:
    """As Alipay echoes its string-to-sign (addendum §6): ``&`` -> ``&amp;``, ``"`` ->
    ``&quot;`` (a public answer shows ``biz_content={&quot;out_trade_no&quot;:…``)."""
    return (text.replace("&", "&amp;").replace('"', "&quot;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def _clean(value: Any) -> str:
    """A client string safe to echo: no braces (CH §0 #7)."""
    return str(value).replace("{", "").replace("}", "")


def _beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime(STAMP)


def cert_sn(cert: x509.Certificate) -> str:
    """Alipay's certificate SN: MD5 of the issuer DN + the decimal serial. The sandbox's
    names hold only CN/OU/O/C without special characters, for which the RFC 4514 string
    is Java's RFC 2253 ``getName()``."""
    text = cert.issuer.rfc4514_string() + str(cert.serial_number)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class AlipayCert:
    """An Alipay certificate of the certificate app: its key, its file (the certificate,
    then its issuer's), its SN."""

    key: KeyPair
    pem: str
    sn: str


def _cas() -> tuple[TestCA, TestCA]:
    """A (root, Class 2) pair with the sandbox's Alipay CA names."""
    root = TestCA.root(dn("Sandbox Alipay Root CA R1", ou="Certification Authority",
                          o="Sandbox Ant Financial", c="CN"))
    return root, root.issue_ca(dn("Sandbox Alipay Certification Authority Class 2 R1",
                                  ou="Certification Authority", o="Sandbox Ant Financial",
                                  c="CN"), x509.random_serial_number())


def _ecdsa_root() -> str:
    """A self-signed ECDSA root, as Alipay's root file carries one the root SN skips."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = dn("Sandbox Alipay Root CA E1", ou="Certification Authority",
              o="Sandbox Ant Financial", c="CN")
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA384()))
    return pem(cert)


def _alipay_cert(ca: TestCA, key: KeyPair, *, expired: bool = False) -> AlipayCert:
    now = datetime.now(UTC)
    cert = ca.issue(key.public, dn(f"支付宝(中国)网络技术有限公司-{PID}", ou="Alipay",
                                   o="Sandbox", c="CN"), x509.random_serial_number(),
                    not_before=now - timedelta(days=30) if expired else None,
                    not_after=now - timedelta(days=1) if expired else None)
    return AlipayCert(key, pem(cert) + ca.pem, cert_sn(cert))


def buyer_of(user_id: str) -> tuple[str, str]:
    """(masked buyer_logon_id like 159****5620, buyer_user_id 2088…), stable per user."""
    digits = str(int(hashlib.sha256(user_id.encode()).hexdigest(), 16))
    return f"15{digits[0]}****{digits[1:5]}", f"2088{digits[5:17]}"


class AlipayChannel(Channel):
    route = "alipay"
    prefixes = ("/gateway.do", "/alipay/")

    def __init__(self, state: State, keys: SandboxKeys) -> None:
        super().__init__(state, keys)
        self._links: dict[str, tuple[date, str, float]] = {}
        self._links_lock = threading.Lock()
        # "Certificates": the CA, the certificate app's certificate, the first Alipay one.
        self.root_ca, self.class2_ca = _cas()
        self.root_file = _ecdsa_root() + "\n" + self.root_ca.pem
        self.root_cert_sn = cert_sn(self.root_ca.cert)       # the RSA root only
        app_cert = self.class2_ca.issue(
            keys.alipay_cert_app.public, dn(f"{PID}-{CERT_APP_ID}", ou="Alipay",
                                            o="Sandbox merchant", c="CN"),
            x509.random_serial_number())
        self.app_cert, self.app_cert_sn = pem(app_cert), cert_sn(app_cert)
        self.first_alipay_cert = _alipay_cert(self.class2_ca, keys.alipay_platform)
        # ISV: the authorised merchant's token (40 characters, like Alipay's).
        self.app_auth_token = f"{datetime.now(BEIJING):%Y%m}BB{secrets.token_hex(15)[:29]}X01"
        # What client_settings() writes: "key" (the public-key app) or "cert", and
        # whether with the ISV token (``refund-gateway sandbox serve --alipay-mode``).
        self.client_mode = "key"
        self.client_isv = False

    # -- certificates -------------------------------------------------------------------
    def alipay_certs(self) -> tuple[AlipayCert, ...]:
        """Every Alipay certificate issued this run, the one signing now last."""
        with self.state.lock:
            held = self.state.certificates.get(self.route)
        return held if isinstance(held, tuple) and held else (self.first_alipay_cert,)

    @property
    def alipay_cert(self) -> AlipayCert:
        return self.alipay_certs()[-1]

    def rotate(self, params: dict[str, Any] | None = None) -> AlipayCert:
        """A new Alipay certificate for the certificate app (fault ``cert_rotated``)."""
        params = params or {}
        ca = _cas()[1] if params.get("issuer") == "foreign" else self.class2_ca
        new = _alipay_cert(ca, KeyPair.generate(), expired=bool(params.get("expired")))
        with self.state.lock:
            self.state.certificates[self.route] = (*self.alipay_certs(), new)
        return new

    def _cert_download(self, biz: Fields) -> Fields:
        wanted = str(biz.get("alipay_cert_sn", ""))
        for cert in self.alipay_certs():
            if cert.sn == wanted:
                return {"code": "10000", "msg": "Success", "alipay_cert_content":
                        base64.b64encode(cert.pem.encode("ascii")).decode("ascii")}
        raise _business("isv.alipay-cert-not-exist", "支付宝公钥证书不存在")

    # -- framework hooks ----------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        if request.path.startswith("/alipay/bills/download"):
            return "download"      # connection faults and latency only
        if request.path != "/gateway.do":
            return None
        return METHODS.get(self._params(request).get("method", ""))

    def server_error(self) -> Response:
        return Response(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>",
                        {"Content-Type": "text/html; charset=utf-8"})

    def client_settings(self, base_url: str) -> dict[str, str]:
        return self.app_settings(base_url, mode=self.client_mode, isv=self.client_isv)

    def app_settings(self, base_url: str, *, mode: str = "key", isv: bool = False,
                     prefix: str = "REFUND_GATEWAY_ALIPAY__") -> dict[str, str]:
        """The settings of one app: ``key`` (public-key mode, ``APP_ID``) or ``cert``
        (``CERT_APP_ID`` with its three certificates, no public key); ``isv``: with the
        authorised merchant's ``app_auth_token``. ``prefix`` may name an account, e.g.
        ``REFUND_GATEWAY_ALIPAY__ACCOUNTS__CERT__``."""
        if mode not in CLIENT_MODES:
            raise ValueError(f"mode is one of {CLIENT_MODES}")
        if mode == "cert":
            settings = {"APP_ID": CERT_APP_ID,
                        "APP_PRIVATE_KEY": self.keys.alipay_cert_app.private_pem(),
                        "APP_CERT": self.app_cert, "ALIPAY_CERT": self.alipay_cert.pem,
                        "ALIPAY_ROOT_CERT": self.root_file}
        else:
            settings = {"APP_ID": APP_ID, "APP_PRIVATE_KEY": self.keys.alipay_app.private_pem(),
                        "ALIPAY_PUBLIC_KEY": self.keys.alipay_platform.public_pem()}
        settings["GATEWAY_URL"] = f"{base_url}/gateway.do"
        if isv:
            settings["APP_AUTH_TOKEN"] = self.app_auth_token
        notify_url = self.state.notify_urls.get(self.route)
        if notify_url:
            settings["NOTIFY_URL"] = notify_url
        return {prefix + key: value for key, value in settings.items()}

    def tick(self) -> None:
        """Time-based progression (Settle mode after_seconds), when the server ticks."""
        self._sweep()

    def settle(self, refund: Refund, *, query: bool) -> bool:
        """The framework's Settle rule, except that Alipay reports the refund itself as
        succeeded even when the card leg fails (F): ``abnormal`` only decides the bank leg
        here, never the refund's status. True when the refund just succeeded."""
        abnormal, refund.abnormal = refund.abnormal, False
        try:
            changed = super().settle(refund, query=query)
        finally:
            refund.abnormal = abnormal
        if changed:
            refund.extra["gmt_refund_pay"] = _beijing(refund.succeeded_at or now_utc())
            if refund.extra["card_funded"]:
                refund.extra["dback_status"] = "P"
        return changed

    # -- requests -----------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.startswith("/alipay/bills/download"):
            return self._download(request)
        if request.path != "/gateway.do":
            return Response.text("Not Found", 404)
        if request.method not in ("GET", "POST"):
            return Response.text("Method Not Allowed", 405)
        params = self._params(request)
        method = params.get("method", "")
        self._sweep()
        if request.fault is not None and request.fault.kind == CERT_ROTATED:
            self.rotate(request.fault.params)
        name = method.replace(".", "_") + "_response"
        bad = request.fault is not None and request.fault.kind == "bad_signature"
        cert_app = params.get("app_id") == CERT_APP_ID
        try:
            self._authenticate(params)
            if request.fault is not None:
                self._gateway_fault(request.fault, params, method, request.base_url)
            biz = self._biz(params)
            fault = request.fault.kind if request.fault is not None else None
            if fault == "rate_limited":
                raise _business("isv.app-call-limited", "调用频率超限")
            if method == "alipay.trade.refund":
                inner = self._refund(params, biz, fault)
            elif method == "alipay.trade.fastpay.refund.query":
                inner = self._query(biz, fault)
            elif method == CERT_DOWNLOAD:
                inner = self._cert_download(biz)
            else:
                inner = self._bill_url(biz, request.base_url)
        except _Refusal as refusal:
            if refusal.envelope == "error":
                name = "error_response"
            if not refusal.signed:
                return Response.json({name: refusal.fields}, headers={
                    "Content-Type": "text/html;charset=utf-8"})
            inner = refusal.fields
        return self._signed(name, inner, self.keys.wrong if bad else None,
                            cert_app=cert_app)

    @staticmethod
    def _params(request: Request) -> dict[str, str]:
        params = request.query
        content_type = str(request.headers.get("Content-Type", ""))
        if request.method == "POST" and request.body and \
                "application/x-www-form-urlencoded" in content_type:
            params.update(request.form())
        return params

    def _authenticate(self, params: dict[str, str]) -> None:
        """The gateway's checks, in order; each failure in Alipay's shape (addendum §6)."""
        sign = params.get("sign", "")
        if not sign:
            raise _missing("sign", signed=False, envelope="error")
        if not params.get("method"):
            raise _missing("method", signed=False, envelope="error")
        if not params.get("app_id"):
            raise _missing("app_id", signed=False)
        if params["app_id"] not in (APP_ID, CERT_APP_ID):
            raise self._unknown_app()
        if not params.get("sign_type"):
            raise _missing("sign_type", signed=False)
        if params["sign_type"] != "RSA2":
            raise _invalid("isv.invalid-signature-type", "无效签名类型", signed=False)
        for name in ("timestamp", "version"):
            if not params.get(name):
                raise _missing(name, signed=True)
        cert_app = params["app_id"] == CERT_APP_ID
        if cert_app:
            self._check_cert_sns(params)
        content = self._string_to_sign(params)
        key = self.keys.alipay_cert_app if cert_app else self.keys.alipay_app
        if not verify_b64(key.public, content.encode("utf-8"), sign):
            raise self._bad_signature(params)
        if params["method"] not in METHODS and not (cert_app and
                                                    params["method"] == CERT_DOWNLOAD):
            raise _invalid("isv.invalid-method", "不存在的方法名", signed=False,
                           envelope="error")
        token = params.get("app_auth_token")
        if token is not None and token != self.app_auth_token:
            raise _Refusal("20001", "Insufficient Token Permissions",
                           "aop.invalid-app-auth-token", "无效的应用授权令牌", envelope="error")

    def _check_cert_sns(self, params: dict[str, str]) -> None:
        """The certificate app's two SNs ("Certificates"), before its signature: the app
        certificate they name holds the key that verifies it."""
        if not params.get("app_cert_sn"):
            raise _invalid("isv.missing-app-cert-sn", "缺少应用公钥证书序列号")
        if params["app_cert_sn"] != self.app_cert_sn:
            raise _invalid("isv.app-cert-not-exist", "应用公钥证书不存在")
        if not params.get("alipay_root_cert_sn"):
            raise _invalid("isv.missing-alipay-root-cert-sn", "缺少支付宝根证书序列号")
        if params["alipay_root_cert_sn"] != self.root_cert_sn:
            raise _invalid("isv.invalid-alipay-root-cert-sn", "支付宝根证书序列号无效")

    @staticmethod
    def _string_to_sign(params: dict[str, str]) -> str:
        return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign")

    def _bad_signature(self, params: dict[str, str]) -> _Refusal:
        """Signed, echoing the gateway's string-to-sign HTML-escaped (addendum §6)."""
        return _invalid("isv.invalid-signature",
                        BAD_SIGNATURE_MSG + _html_escape(self._string_to_sign(params)))

    def _unknown_app(self) -> _Refusal:
        """Unsigned, under the method's own key (addendum §6): no app, no key to sign."""
        with self.state.lock:
            trace = f"{self.state.rng.getrandbits(96):024x}"
        return _invalid("isv.invalid-app-id", "无效的AppID参数，解决方案：https://open.alipay.com"
                        f"/api/errCheck?traceId={trace}&source=openapi", signed=False)

    def _gateway_fault(self, fault: Fault, params: dict[str, str], method: str,
                       base_url: str) -> None:
        """Answer a gateway-error fault (see "Gateway errors" above) instead of ``method``."""
        kind = fault.kind
        if kind == "invalid_signature":
            raise self._bad_signature(params)
        if kind == "invalid_app_id":
            raise self._unknown_app()
        if kind == "missing_parameter":
            name = str(fault.params.get("parameter", "sign"))
            if name not in MISSING:
                name = "sign"
            signed = name in ("timestamp", "version")
            raise _missing(name, signed=signed,
                           envelope="error" if name in ("sign", "method") else "method")
        if kind == "invalid_auth_token":
            raise _Refusal("20001", "Insufficient Token Permissions",
                           "aop.invalid-app-auth-token", "无效的应用授权令牌", envelope="error")
        if kind == "insufficient_permissions":
            raise _Refusal("40006", "Insufficient Permissions",
                           "isv.insufficient-isv-permissions",
                           "ISV权限不足，建议在开放平台控制台检查对应产品是否已经绑定")
        if kind == "service_unavailable":
            if fault.params.get("executed") and method == "alipay.trade.refund":
                # refused anyway: the 20000 answer hides that just the same
                with contextlib.suppress(_Refusal):
                    self._refund(params, self._biz(params), None)
            raise _Refusal("20000", "Service Currently Unavailable", "isp.unknow-error",
                           "系统繁忙")

    @staticmethod
    def _biz(params: dict[str, str]) -> Fields:
        try:
            # Amounts stay decimal text: never floats.
            biz = json.loads(params.get("biz_content") or "{}", parse_float=str,
                             parse_int=str)
        except ValueError:
            biz = None
        if not isinstance(biz, dict):
            raise _business("ACQ.INVALID_PARAMETER", "biz_content 不是合法的JSON对象")
        return biz

    def _signed(self, name: str, inner: Fields, key: KeyPair | None = None, *,
                cert_app: bool = False) -> Response:
        """``{"<name>":{…},"sign":"…"}``: the sign covers the inner JSON text exactly. The
        certificate app's answers name the Alipay certificate between them."""
        text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
        signer = self.alipay_cert if cert_app else None
        sign = (key or (signer.key if signer else self.keys.alipay_platform)).sign_b64(
            text.encode("utf-8"))
        sn = f'"alipay_cert_sn":"{signer.sn}",' if signer else ""
        body = f'{{"{name}":{text},{sn}"sign":"{sign}"}}'
        return Response(200, body.encode("utf-8"),
                        {"Content-Type": "application/json;charset=utf-8"})

    # -- trade and refund lookup --------------------------------------------------------
    def _payment(self, biz: Fields) -> Payment:
        trade_no, order_no = biz.get("trade_no"), biz.get("out_trade_no")
        if not trade_no and not order_no:
            raise _business("ACQ.INVALID_PARAMETER", "out_trade_no 和 trade_no 不能同时为空")
        if trade_no:      # trade_no wins when both are given
            payment = self.state.find_payment(self.route, trade_no=str(trade_no))
        else:
            payment = self.state.find_payment(self.route, order_no=str(order_no))
        if payment is None:
            raise _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return payment

    def _find(self, trade_no: str, request_no: str) -> Refund | None:
        for refund in self.state.refunds.values():
            if refund.route == self.route and refund.channel_trade_no == trade_no \
                    and refund.channel_refund_no == request_no:
                return refund
        return None

    def _refunded(self, trade_no: str, *, settled_only: bool = False) -> int:
        statuses = ("SUCCESS",) if settled_only else ("PROCESSING", "SUCCESS")
        return sum(r.amount_fen for r in self.state.refunds.values()
                   if r.route == self.route and r.channel_trade_no == trade_no
                   and r.status in statuses)

    # -- alipay.trade.refund ------------------------------------------------------------
    def _refund(self, params: dict[str, str], biz: Fields, fault: str | None) -> Fields:
        try:
            fen = self.yuan_to_fen(str(biz.get("refund_amount", "")))
        except ValueError:
            fen = 0
        payment = self._payment(biz)
        if fen <= 0:
            raise _business("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额无效")
        request_no = str(biz.get("out_request_no") or payment.merchant_order_no)
        fingerprint = json.dumps([payment.channel_trade_no, request_no, fen])
        settled: Refund | None = None
        with self.state.lock:
            existing = self._find(payment.channel_trade_no, request_no)
            if existing is not None:
                if existing.request_fingerprint != fingerprint:
                    raise _business("ACQ.DISCORDANT_REPEAT_REQUEST",
                                    "本次请求与之前请求的参数不一致")
                return self._refund_answer(existing, payment, fund_change="N")
            if self._refunded(payment.channel_trade_no) + fen > payment.amount_fen:
                raise _business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            abnormal = fault == "abnormal"
            key = (self.route, request_no)
            if key in self.state.refunds:          # out_request_no is unique per trade only
                key = (self.route, f"{request_no}@{payment.channel_trade_no}")
            now = now_utc()
            refund = Refund(
                route=self.route, channel_refund_no=request_no,
                channel_refund_id=(now.astimezone(BEIJING).strftime("%Y%m%d")
                                   + "2101" + self.state.next_id(10)),
                merchant_order_no=payment.merchant_order_no,
                channel_trade_no=payment.channel_trade_no, amount_fen=fen,
                status="PROCESSING", created_at=now, request_fingerprint=fingerprint,
                abnormal=abnormal, notify_url=params.get("notify_url") or None,
                extra={"refund_reason": _clean(biz.get("refund_reason", "")),
                       "app_id": params["app_id"],
                       "auth_app_id": AUTH_APP_ID if params.get("app_auth_token") else None,
                       "card_funded": payment.funding == "bankcard" or abnormal,
                       "dback_status": None, "dback_queries": 0, "gmt_refund_pay": None,
                       "bank_ack_time": None})
            self.state.refunds[key] = refund
            payment.refunded_fen = self._refunded(payment.channel_trade_no)
            if self.settle(refund, query=False):
                settled = refund
            answer = self._refund_answer(refund, payment,
                                         fund_change="Y" if settled else "N")
        if settled is not None:
            self._notify_trade(settled)
        return answer

    def _refund_answer(self, refund: Refund, payment: Payment, *, fund_change: str
                       ) -> Fields:
        logon, user = buyer_of(payment.user_id)
        answer: Fields = {"code": "10000", "msg": "Success",
                          "trade_no": payment.channel_trade_no,
                          "out_trade_no": _clean(payment.merchant_order_no),
                          "buyer_logon_id": logon, "buyer_user_id": user,
                          "fund_change": fund_change,
                          "refund_fee": yuan(
                              self._refunded(payment.channel_trade_no))}
        if refund.status == "SUCCESS":
            answer.update(gmt_refund_pay=refund.extra["gmt_refund_pay"],
                          refund_detail_item_list=self._fund_bills(refund),
                          send_back_fee=yuan(refund.amount_fen))
            if refund.extra["card_funded"]:
                answer["has_deposit_back"] = "true"
        return answer

    def _fund_bills(self, refund: Refund) -> list[dict[str, str]]:
        amount = yuan(refund.amount_fen)
        if refund.extra["card_funded"]:
            return [{"fund_channel": "BANKCARD", "amount": amount, "real_amount": amount,
                     "fund_type": "DEBIT_CARD"}]
        return [{"fund_channel": "ALIPAYACCOUNT", "amount": amount, "real_amount": amount}]

    # -- alipay.trade.fastpay.refund.query ----------------------------------------------
    def _query(self, biz: Fields, fault: str | None) -> Fields:
        payment = self._payment(biz)
        request_no = str(biz.get("out_request_no") or payment.merchant_order_no)
        options = biz.get("query_options") or []
        options = [str(o) for o in options] if isinstance(options, list) else []
        answer: Fields = {"code": "10000", "msg": "Success",
                          "trade_no": payment.channel_trade_no,
                          "out_trade_no": _clean(payment.merchant_order_no),
                          "out_request_no": _clean(request_no)}
        with self.state.lock:
            refund = self._find(payment.channel_trade_no, request_no)
            if refund is None:
                return answer          # no refund_status: not received
            if fault == "abnormal" and refund.extra["dback_status"] in (None, "P"):
                refund.abnormal = True
                refund.extra["card_funded"] = True
            settled = self.settle(refund, query=True)
            dback_done = self._advance_bank_leg(refund)
            answer.update(total_amount=yuan(payment.amount_fen),
                          refund_amount=yuan(refund.amount_fen))
            if refund.extra["refund_reason"]:
                answer["refund_reason"] = refund.extra["refund_reason"]
            if refund.status == "SUCCESS":
                answer["refund_status"] = "REFUND_SUCCESS"
                answer.update(self._query_options(refund, options))
        if settled:
            self._notify_trade(refund)
        if dback_done:
            self._notify_depositback(refund)
        return answer

    def _advance_bank_leg(self, refund: Refund) -> bool:
        """Count a query against a pending bank leg; True when it just ended (S or F)."""
        if refund.status != "SUCCESS" or refund.extra["dback_status"] != "P":
            return False
        refund.extra["dback_queries"] += 1
        if refund.extra["dback_queries"] <= DBACK_PENDING_QUERIES:
            return False
        refund.extra["dback_status"] = "F" if refund.abnormal else "S"
        refund.extra["bank_ack_time"] = _beijing(now_utc())
        return True

    def _query_options(self, refund: Refund, options: list[str]) -> Fields:
        out: Fields = {}
        if "gmt_refund_pay" in options:
            out["gmt_refund_pay"] = refund.extra["gmt_refund_pay"]
        if "refund_detail_item_list" in options:
            out["refund_detail_item_list"] = self._fund_bills(refund)
        if options:
            out["send_back_fee"] = yuan(refund.amount_fen)
        if "deposit_back_info" in options:
            out["deposit_back_info"] = self._deposit_back(refund)
        return out

    def _deposit_back(self, refund: Refund) -> dict[str, str]:
        if not refund.extra["card_funded"]:
            return {"has_deposit_back": "false"}
        paid = datetime.strptime(refund.extra["gmt_refund_pay"], STAMP)  # noqa: DTZ007
        info = {"has_deposit_back": "true", "dback_status": refund.extra["dback_status"],
                "dback_amount": yuan(refund.amount_fen),
                "est_bank_receipt_time":
                    (paid + timedelta(days=BANK_RECEIPT_DAYS)).strftime(STAMP)}
        if refund.extra["bank_ack_time"]:
            info["bank_ack_time"] = refund.extra["bank_ack_time"]
        return info

    def _sweep(self) -> None:
        """Settle refunds that came due without a query (Settle mode after_seconds)."""
        for refund in self.settle_due_refunds():
            self._notify_trade(refund)

    # -- notifications ------------------------------------------------------------------
    def _queue(self, refund: Refund, fields: dict[str, str]) -> None:
        """Sign (wrong key under a notify ``bad_signature`` fault) and queue: the refund's
        app is the notice's ``app_id``; the certificate app's are signed with its current
        Alipay certificate's key (after a notify ``cert_rotated``: a new one)."""
        rotation = self.state.take_fault(self.route, "notify", (CERT_ROTATED,))
        if rotation is not None:
            self.rotate(rotation.params)
        app_id = refund.extra.get("app_id") or APP_ID
        fields = {**fields, "app_id": app_id}
        if refund.extra.get("auth_app_id"):
            fields["auth_app_id"] = refund.extra["auth_app_id"]
        fault = self.state.take_fault(self.route, "notify", ("bad_signature",))
        key = (self.keys.wrong if fault is not None else self.alipay_cert.key
               if app_id == CERT_APP_ID else self.keys.alipay_platform)
        content = "&".join(f"{k}={v}" for k, v in sorted(fields.items())
                           if k not in ("sign", "sign_type"))
        body = urlencode({**fields, "sign": key.sign_b64(content.encode("utf-8"))})
        self.notify(refund, dict(NOTIFY_HEADERS), body.encode("utf-8"), None)

    def _notify_id(self) -> str:
        with self.state.lock:
            return f"{self.state.rng.getrandbits(128):032x}"

    def _notify_trade(self, refund: Refund) -> None:
        """``trade_status_sync`` with the refund fields (CH §4.4)."""
        with self.state.lock:
            payment = self.state.find_payment(self.route, trade_no=refund.channel_trade_no)
            if payment is None:
                return
            refunded = self._refunded(payment.channel_trade_no, settled_only=True)
            logon, user = buyer_of(payment.user_id)
            succeeded = refund.succeeded_at or now_utc()
            fields = {
                "notify_time": _beijing(now_utc()), "notify_type": "trade_status_sync",
                "notify_id": self._notify_id(), "app_id": APP_ID, "charset": "utf-8",
                "version": "1.0", "sign_type": "RSA2",
                "trade_no": payment.channel_trade_no,
                "out_trade_no": payment.merchant_order_no,
                "out_biz_no": refund.channel_refund_no,
                "trade_status": ("TRADE_CLOSED" if refunded >= payment.amount_fen
                                 else "TRADE_SUCCESS"),
                "refund_fee": yuan(refunded),
                "gmt_refund": succeeded.astimezone(BEIJING).strftime(STAMP)
                + f".{succeeded.microsecond // 1000:03d}",
                "send_back_fee": yuan(refund.amount_fen),
                "total_amount": yuan(payment.amount_fen),
                "buyer_logon_id": logon, "buyer_id": user, "seller_id": PID,
                "gmt_payment": _beijing(payment.created_at)}
        self._queue(refund, fields)

    def _notify_depositback(self, refund: Refund) -> None:
        """``alipay.trade.refund.depositback.completed`` when the bank leg ends."""
        with self.state.lock:
            biz = {"trade_no": refund.channel_trade_no,
                   "out_trade_no": refund.merchant_order_no,
                   "out_request_no": refund.channel_refund_no,
                   **{k: v for k, v in self._deposit_back(refund).items()
                      if k != "has_deposit_back"}}
        fields = {"notify_id": self._notify_id(),
                  "utc_timestamp": str(int(time.time() * 1000)),
                  "msg_method": "alipay.trade.refund.depositback.completed",
                  "app_id": APP_ID, "version": "1.1",
                  "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
                  "charset": "utf-8", "sign_type": "RSA2"}
        self._queue(refund, fields)

    # -- bills --------------------------------------------------------------------------
    def _bill_url(self, biz: Fields, base_url: str) -> Fields:
        bill_type = str(biz.get("bill_type"))
        if bill_type not in ("trade", "signcustomer"):
            raise _invalid("isv.invalid_arguments", "bill_type 仅支持 trade, signcustomer")
        try:
            day = date.fromisoformat(str(biz.get("bill_date", "")))
        except ValueError:
            raise _invalid("isv.invalid_arguments", "bill_date 格式应为 yyyy-MM-dd") from None
        if day > datetime.now(BEIJING).date():
            raise _invalid("isv.invalid_arguments", "账单日期不能晚于今天")
        with self.state.lock:
            empty = not self.refunds_on(day) and not self._payments_on(day)
        if empty:
            raise _business("isp.bill_not_exist", "账单不存在")
        with self.state.lock:
            token = f"{self.state.rng.getrandbits(96):024x}"
        with self._links_lock:
            now = time.monotonic()
            self._links = {k: v for k, v in self._links.items() if v[2] > now}
            self._links[token] = (day, bill_type, now + BILL_URL_TTL)
        return {"code": "10000", "msg": "Success",
                "bill_download_url": f"{base_url}/alipay/bills/download?bizType={bill_type}"
                                     f"&fileId={token}&billDate={day:%Y%m%d}"}

    def _download(self, request: Request) -> Response:
        with self._links_lock:
            link = self._links.get(request.query.get("fileId", ""))
        if link is None or link[2] < time.monotonic():
            return Response.text("bill file not found or link expired (valid 30 s)", 404)
        day, bill_type = link[0], link[1]
        if bill_type == "signcustomer":
            body, name = (render_account_zip(PID, day, self._bill_rows(day), now_utc()),
                          zip_name(account_id(PID), day))
        else:
            body, name = self.statement(day, request.base_url), zip_name(PID, day)
        return Response(200, body, {"Content-Type": "application/oct-stream",
                                    "Content-Disposition": f'attachment; filename="{name}"'})

    def _payments_on(self, day: date) -> list[Payment]:
        return sorted((p for (route, _), p in self.state.payments.items()
                       if route == self.route
                       and p.created_at.astimezone(BEIJING).date() == day),
                      key=lambda p: (p.created_at, p.merchant_order_no))

    def statement(self, day: date, base_url: str) -> bytes:
        """The trade bill ZIP for ``day`` (CH §4.6), statement faults applied."""
        return render_zip(PID, day, self._bill_rows(day), now_utc())

    def _bill_rows(self, day: date) -> list[BillRow]:
        """The day's bill lines, statement faults applied (both bills are cut from them)."""
        with self.state.lock:
            payments = self._payments_on(day)
            refunds = [r for r in self.refunds_on(day) if r.status == "SUCCESS"]
            buyers = {p.merchant_order_no: buyer_of(p.user_id)[0]
                      for p in self.state.payments.values() if p.route == self.route}
            created = {p.merchant_order_no: p.created_at
                       for p in self.state.payments.values() if p.route == self.route}
        rows = [BillRow(p.channel_trade_no, p.merchant_order_no, "交易", p.created_at,
                        p.created_at, buyers[p.merchant_order_no], p.amount_fen)
                for p in payments]
        for refund, fen in self.statement_faults(refunds):
            rows.append(BillRow(refund.channel_trade_no, refund.merchant_order_no, "退款",
                                created.get(refund.merchant_order_no, refund.created_at),
                                refund.succeeded_at or refund.created_at,
                                buyers.get(refund.merchant_order_no, ""), -fen,
                                refund.channel_refund_no))
        rows.sort(key=lambda r: (r.finished, r.kind != "交易"))
        return rows
