"""WeChat Pay API v3 (CH §2, §5; addendum §3, §4): the only way to run WeChat end to end.

WeChat has no APIv3 sandbox (CH §0 #10), so this module is what ``wechatpayv3`` 2.0.4
talks to in development and in our reliability tests. Configure the SDK with
``public_key=<platform SPKI PEM>, public_key_id=PUB_KEY_ID_SANDBOX`` and set
``wx._core._gate_way`` to the sandbox URL (CH §2.7; ``client_settings`` lists every value),
or in certificate mode download ``/v3/certificates`` from it (``settings_for``).

Two merchants: the direct merchant ``MCHID`` and the service provider ``SP_MCHID`` with
its sub-merchant ``SUB_MCHID`` (addendum §4), each with its own API key, certificate
serial and platform public-key id; one platform (its public key and certificates sign for
both) and one API v3 key.

Emulated:
* ``Authorization: WECHATPAY2-SHA256-RSA2048 ...`` on every request: a known mchid with
  its merchant serial, timestamp within ±5 min, SHA256withRSA over
  ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` with that merchant's key; URL is checked
  as sent and percent-decoded (``requests`` encodes ``|``, CH §0 #9) -> else 401
  SIGN_ERROR.
* Every 2xx JSON answer signed (CH §0 #4, §2.4); errors are not signed, like WeChat's.
  By the merchant's verification mode (``set_verification``; ``settings_for`` sets it,
  ``--wechatpay-verification`` the direct merchant's default; a reset forgets it):
  ``public_key`` (the default) signs with the public key (``Wechatpay-Serial`` = the
  merchant's ``PUB_KEY_ID_...``), ``certificate`` with the current platform certificate
  (``Wechatpay-Serial`` = its serial, 40 upper-case hex), ``both`` (a migration,
  addendum §3) with the key when the request carried its id in ``Wechatpay-Serial``
  (which steers the answers to the key) and with the certificate otherwise;
  notifications as the refund's request asked.
* Platform certificates (addendum §3): ``GET /v3/certificates[?algorithm_type=RSA|SM2|
  ALL]`` (operation ``certificates``), signed like every answer, lists each certificate
  with exactly ``serial_no``, ``effective_time``, ``expire_time`` (RFC 3339 +08:00; not
  the official example's ``"effective_time "`` with a trailing space, which wechatpayv3
  would skip) and ``encrypt_certificate`` {``algorithm`` AEAD_AES_256_GCM, ``nonce`` 12
  characters used as bytes, ``associated_data`` ``certificate``, ``ciphertext``
  base64(ct || 16-byte tag) of the PEM under the API v3 key}; SM2 lists nothing (RSA
  only); another algorithm_type is 400 PARAM_ERROR. Certificates live 5 years, each its
  own key (not the public key's). ``certificate_downloads`` counts the requests
  since the sandbox started.
  Faults (any operation, ``notify`` included):
  - ``cert_rotated``: a new certificate (new key, new serial) signs every
    certificate-signed answer and notification from this one on (one the public key
    signs shows nothing of it); the previous one stays listed (during a rotation either
    signs) until the next rotation; a reset brings back the first;
  - ``serial_switch``: this answer (notification) is signed by the other verifier: the
    certificate instead of the public key, or the public key instead of the certificate
    (a merchant in the gray switch, "应答使用公钥比例"); ``"count": null`` for every one.
* Service provider (addendum §4, CH §5.1/5.2): a request signed by ``SP_MCHID`` must name
  a bound ``sub_mchid`` (refund body, abnormal-refund body, ``?sub_mchid=`` on the query;
  missing -> 400 PARAM_ERROR, not bound -> 403 NO_AUTH, wording UNCONFIRMED), and sees
  only that sub-merchant's payments and refunds (another's -> 404 RESOURCE_NOT_EXISTS);
  the direct merchant may not send one (400 PARAM_ERROR). A payment belongs to the
  merchant it was made with (``Payment.merchant``: a sub_mchid; None = ``MCHID``). The
  notification's resource carries ``sp_mchid`` and ``sub_mchid`` instead of ``mchid``
  (whether WeChat adds ``mchid`` too is UNCONFIRMED). The trade bill takes
  ``sub_mchid``: that sub-merchant's rows with 商户号 = the provider and 特约商户号 = the
  sub-merchant; without it, all of the provider's sub-merchants (UNCONFIRMED); the
  provider's fund-flow bill has no sub-merchant money (NO_STATEMENT_EXIST).
* ``POST /v3/refund/domestic/refunds`` (CH §5.1): idempotent per ``out_refund_no`` (same
  content -> the same refund, no second execution; other content -> 400 INVALID_REQUEST),
  404 RESOURCE_NOT_EXISTS, total/refundable checks (400 INVALID_REQUEST), currency and
  field checks (400 PARAM_ERROR). The refund limits of addendum §9, all refusals with
  nothing executed:
  - ``reason`` longer than 80 BYTES of UTF-8 (26 CJK characters fit, 27 do not) -> 400
    PARAM_ERROR with ``detail.field`` ``/reason`` (WeChat's over-length answer is
    UNCONFIRMED; CH §5.3 files a malformed parameter under PARAM_ERROR);
  - a 51st refund of one order -> 400 INVALID_REQUEST "该订单已退款50次…" (CH §5.3: a
    business rule; the message text is UNCONFIRMED);
  - refunds of one order less than ``refund_interval_seconds`` apart -> 429
    FREQUENCY_LIMITED with the v3 error object ``{"code","message"}`` (addendum §9; the
    message text is UNCONFIRMED). Off by default, because the project's tests refund one
    order in quick succession; turn it on with ``POST /_sandbox/config {"limits":
    {"wechatpay": {"refund_interval_seconds": 60}}}``. It counts from the last refund
    of the order that was executed; a resend of an ``out_refund_no`` already executed is
    answered as always (not a new refund), and one refused by the rule may be sent again
    under the same number once the interval has passed.
  Answers PROCESSING; the Settle rule of
  ``state.py`` then moves it to SUCCESS or ABNORMAL (at once after the answer in
  ``immediate`` mode, on the n-th query, or after T seconds via ``tick()`` without a
  query) and sends the notification.
* ``GET /v3/refund/domestic/refunds/{out_refund_no}`` (CH §5.2), counting as a query.
* ``POST .../{refund_id}/apply-abnormal-refund`` (CH §5.6): ABNORMAL only; USER_BANK_CARD
  fields RSA-OAEP(SHA1)-decrypted with the key ``Wechatpay-Serial`` names (the public
  key's id or a listed certificate; required), MERCHANT_BANK_CARD; then PROCESSING on
  channel OTHER_BANKCARD. Only the card's last four digits are kept.
* Bills (CH §5.7): ``/v3/bill/tradebill`` (ALL, SUCCESS, REFUND), ``/v3/bill/fundflowbill``
  (BASIC), SHA1 of the un-gzipped file, ``download_url`` starting with exactly the base
  URL the client addressed (CH §0 #6), valid 30 s, ``/v3/billdownload/file`` (signed
  request, unsigned gzip/plain answer). Files as WeChat writes them (CH §5.7, addendum
  §8): UTF-8, BOM on the first header cell, CRLF, backtick-prefixed cells, commas inside
  the 商品名称 and 商户数据包 cells (the attach is a JSON object, as merchants send),
  手续费 with 5 decimals, NEGATIVE on refund rows (the fee given back), the summary
  computed from the rows (手续费总金额 net); statement faults apply.
  ``statement(day)`` (``GET /_sandbox/statements/wechatpay/{date}``) is the plain REFUND
  trade bill (header and zero summary when the day has no refunds).
* REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED notifications (CH §5.5): AES-256-GCM
  under the API v3 key, signed like answers, re-signed (fresh timestamp and nonce) on
  every delivery attempt; redelivery is the server's compressed schedule.
* Faults: ``rate_limited`` -> 429 FREQUENCY_LIMITED (nothing executed); ``abnormal`` ->
  executed, settles ABNORMAL; ``bad_signature`` -> answer (or notification) signed with
  the wrong key; ``http_500`` -> 500 SYSTEM_ERROR; ``cert_rotated`` and ``serial_switch``
  above; the connection faults and ``latency`` of sandbox/server.py, operations
  ``download`` (the bill file) and ``certificates`` included.

Not emulated: SM2 certificates, a merchant with no platform certificate
(``/v3/certificates`` always answers), a certificate listed before it is used, the
sub-merchant fund-flow bill (encrypted, addendum §4), ``sub_appid``,
``amount.from``/``goods_detail``/promotions (payer amounts equal order amounts), the
1-year refund window, the 6 qps limit on bad requests, 403 NOT_ENOUGH /
USER_ACCOUNT_ABNORMAL, 503 SERVICE_UNAVAILABLE, T+1 bill availability (today's bill is
served at once) and STATEMENT_CREATING, bill types other than ALL/SUCCESS/REFUND
(answered NO_STATEMENT_EXIST), fee rows in the fund-flow bill, nonce replay checks.
``apply-abnormal-refund`` takes no faults (operation None).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from sandbox.channel import Channel
from sandbox.http import Request, Response
from sandbox.keys import KeyPair, verify_b64
from sandbox.state import BEIJING, Payment, Refund, State, now_utc

if TYPE_CHECKING:
    from sandbox.keys import SandboxKeys

MCHID = "1900000109"
APPID = "wx8888888888888888"
MERCHANT_CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
# Real ids: PUB_KEY_ID_01 + mchid + issue date + sequence.
PUB_KEY_ID_SANDBOX = f"PUB_KEY_ID_01{MCHID}2025010100000000"
# The service provider (服务商) and its one sub-merchant (addendum §4).
SP_MCHID = "1230000109"
SP_CERT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD24562E25"
PUB_KEY_ID_PARTNER = f"PUB_KEY_ID_01{SP_MCHID}2025010100000000"
SUB_MCHID = "1900000119"
# The first platform certificate's serial; a rotation draws new ones (40 hex, first < 8:
# an x509 serial is a positive number of at most 20 bytes).
PLATFORM_CERT_SERIAL = "2D4F1C8B0E3A5B6C7D8E9F0A1B2C3D4E5F607182"
PLATFORM_CERT_YEARS = 5                     # addendum §3: certificates live 5 years
VERIFICATIONS = ("public_key", "certificate", "both")
SIGN_TYPE = "WECHATPAY2-SHA256-RSA2048"
CLOCK_SKEW_SECONDS = 300
MAX_REFUNDS_PER_ORDER = 50
REASON_MAX_BYTES = 80                      # addendum §9: 80 bytes of UTF-8, not characters
BILL_URL_TTL_SECONDS = 30.0
FEE_RATE_PER_MILLE = 6                     # 0.60%
OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')

REFUNDS_PATH = "/v3/refund/domestic/refunds"
CERTIFICATES_PATH = "/v3/certificates"
TRADEBILL_PATH = "/v3/bill/tradebill"
FUNDFLOWBILL_PATH = "/v3/bill/fundflowbill"
DOWNLOAD_PATH = "/v3/billdownload/file"

# How the original payment was funded: (bill 付款银行, user_received_account prefix).
PAYERS = (("OTHERS", "支付用户零钱"), ("CMB_CREDIT", "招商银行信用卡"),
          ("ICBC_DEBIT", "工商银行借记卡"), ("CCB_DEBIT", "建设银行借记卡"))
BANK_NAMES = {"ICBC_DEBIT": "工商银行", "CMB_DEBIT": "招商银行", "CCB_DEBIT": "建设银行",
              "ABC_DEBIT": "农业银行", "BOC_DEBIT": "中国银行", "COMM_DEBIT": "交通银行",
              "PAB_DEBIT": "平安银行", "SPDB_DEBIT": "浦发银行", "CITIC_DEBIT": "中信银行",
              "CEB_DEBIT": "光大银行", "CMBC_DEBIT": "民生银行", "CIB_DEBIT": "兴业银行",
              "GDB_DEBIT": "广发银行", "PSBC_DEBIT": "邮储银行", "NBCB_DEBIT": "宁波银行"}
EVENTS = {"SUCCESS": ("REFUND.SUCCESS", "退款成功"),
          "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
          "CLOSED": ("REFUND.CLOSED", "退款关闭")}
# 商品名称 and 商户数据包 with commas in them: data, not separators (addendum §8). Never a
# backtick: that breaks every parser of the format, WeChat's own rule for them.
GOODS_NAME = "沙箱测试商品,1件"

_COMMON = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额"  # noqa: E501
TRADE_BILL_HEADERS = {
    "ALL": _COMMON + ",微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",  # noqa: E501
    "SUCCESS": _COMMON + ",商品名称,商户数据包,手续费,费率,订单金额,费率备注",
    "REFUND": _COMMON + ",退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",  # noqa: E501
}
TRADE_SUMMARY_HEADER = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"  # noqa: E501
FUNDFLOW_HEADER = "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号"  # noqa: E501
FUNDFLOW_SUMMARY_HEADER = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"
OTHER_TRADE_BILL_TYPES = ("RECHARGE_REFUND", "ALL_SPECIAL", "SUC_SPECIAL", "REF_SPECIAL")


class WechatPayError(Exception):
    """A WeChat error answer: HTTP status, ``code``, ``message`` (+ ``detail``)."""

    def __init__(self, status: int, code: str, message: str,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail

    def response(self) -> Response:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            data["detail"] = self.detail
        return Response.json(data, self.status, {"Request-ID": _request_id()})


def _param_error(field: str, issue: str, value: Any = None) -> WechatPayError:
    return WechatPayError(400, "PARAM_ERROR", f"参数错误: {issue}",
                          {"field": field, "value": value, "issue": issue,
                           "location": "body"})


def _invalid(message: str) -> WechatPayError:
    return WechatPayError(400, "INVALID_REQUEST", message)


def _sign_error(issue: str) -> WechatPayError:
    return WechatPayError(401, "SIGN_ERROR", f"错误的签名，验签失败: {issue}",
                          {"issue": issue})


def _request_id() -> str:
    return secrets.token_hex(20).upper()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")


def _bill_time(moment: datetime | None) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _fen_field(amount: dict[str, Any], name: str) -> int:
    value = amount.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _param_error(f"/amount/{name}", f"amount.{name} 必须为正整数（分）", value)
    return value


def _fee_fen(amount_fen: int) -> int:
    """The channel fee on an amount, rounded half up to the fen (integer arithmetic)."""
    return (amount_fen * FEE_RATE_PER_MILLE + 500) // 1000


def _payer(payment: Payment) -> tuple[str, str]:
    """(bill 付款银行, user_received_account): the payment's funding when it says,
    else a fixed choice per payment."""
    if payment.funding == "balance":
        bank, account = PAYERS[0]
    elif payment.funding == "bankcard":
        bank, account = PAYERS[1 + int(payment.card_no[-2:]) % (len(PAYERS) - 1)]
    else:
        bank, account = PAYERS[int(payment.card_no[-2:]) % len(PAYERS)]
    return bank, account if bank == "OTHERS" else account + payment.card_no[-4:]


def _attach(payment: Payment) -> str:
    """商户数据包: the merchant's attach, a JSON object as merchants commonly send (a public
    merchant bill shows ``{"statement_id":"…"}``, addendum §8); its commas are data."""
    return json.dumps({"order": payment.merchant_order_no, "src": "sandbox"},
                      separators=(",", ":"))


def _fee_cell(fee_fen: int) -> str:
    """手续费 as the bill writes it: yuan with 5 decimals, signed (``-0.27000``)."""
    return f"{Channel.fen_to_yuan(fee_fen)}000"


def _openid(payment: Payment) -> str:
    return "o" + hashlib.sha256(payment.user_id.encode()).hexdigest()[:27]


@dataclass
class _Bill:
    content: bytes
    gzip: bool
    expires_at: float


@dataclass(frozen=True)
class PlatformCertificate:
    """One WeChat Pay platform certificate: its serial, key and x509, and when it took
    over signing (``effective``)."""

    serial: str
    key: KeyPair
    certificate: x509.Certificate
    effective: datetime

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def expires(self) -> datetime:
        return self.certificate.not_valid_after_utc


def issue_platform_certificate(serial: str, key: KeyPair | None = None
                               ) -> PlatformCertificate:
    """A self-signed platform certificate with its own key, valid 5 years from a day ago
    (clients trust it through the API v3 key that encrypts it, not a chain)."""
    key = key or KeyPair.generate()
    now = now_utc()
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Sandbox Platform")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public).serial_number(int(serial, 16))
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365 * PLATFORM_CERT_YEARS))
            .sign(key.private, hashes.SHA256()))
    return PlatformCertificate(serial, key, cert, now)


@dataclass(frozen=True)
class Merchant:
    """A merchant the sandbox knows: its id, API certificate serial and key (verifies its
    requests), its platform public-key id, and its sub-merchants (a service provider)."""

    mchid: str
    cert_serial: str
    key: KeyPair
    public_key_id: str
    sub_mchids: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Platform:
    """What a reset takes back (kept in ``State.certificates``): the listed certificates
    after rotations, and each merchant's verification mode set since."""

    certificates: tuple[PlatformCertificate, ...] = ()
    verification: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Signer:
    serial: str
    key: KeyPair
    by_key: bool           # the public key (else a platform certificate)


def _owner(payment: Payment) -> str:
    """The merchant a payment was made with: a sub_mchid, or the direct merchant."""
    return payment.merchant or MCHID


class WechatPayChannel(Channel):
    route = "wechatpay"
    prefixes = ("/v3/",)

    def __init__(self, state: State, keys: SandboxKeys) -> None:
        super().__init__(state, keys)
        self._bills: dict[str, _Bill] = {}
        self._bills_lock = threading.Lock()
        # Key material of this channel beyond SandboxKeys (kept by a state file as it is)
        self.partner_key = KeyPair.generate()                  # the provider's API key
        self.platform_certificate = issue_platform_certificate(PLATFORM_CERT_SERIAL)
        # What client_settings (the env file) configures: public_key | certificate | both
        self.env_verification = "public_key"
        self.certificate_downloads = 0

    # -- merchants and platform keys -------------------------------------------------------
    @property
    def merchants(self) -> dict[str, Merchant]:
        return {MCHID: Merchant(MCHID, MERCHANT_CERT_SERIAL, self.keys.wechat_merchant,
                                PUB_KEY_ID_SANDBOX),
                SP_MCHID: Merchant(SP_MCHID, SP_CERT_SERIAL, self.partner_key,
                                   PUB_KEY_ID_PARTNER, (SUB_MCHID,))}

    def _platform(self) -> _Platform:
        found = self.state.certificates.get(self.route)
        return found if isinstance(found, _Platform) else _Platform()

    def certificates(self) -> list[PlatformCertificate]:
        """The listed platform certificates, oldest first; the last one signs."""
        with self.state.lock:
            rotated = self._platform().certificates
        return list(rotated) if rotated else [self.platform_certificate]

    @property
    def certificate(self) -> PlatformCertificate:
        """The platform certificate that signs now."""
        return self.certificates()[-1]

    def rotate_certificate(self) -> PlatformCertificate:
        """``cert_rotated``: a new certificate signs from now on; the one before it stays
        listed (either signs during a rotation, addendum §3)."""
        with self.state.lock:
            serial = f"{self.state.rng.randrange(1, 8):X}" + \
                f"{self.state.rng.getrandbits(156):039X}"
        new = issue_platform_certificate(serial)   # key generation outside the lock
        with self.state.lock:
            platform = self._platform()
            self.state.certificates[self.route] = replace(
                platform, certificates=(self.certificates()[-1], new))
        return new

    def verification_of(self, mchid: str) -> str:
        """How WeChat signs for this merchant: ``public_key``, ``certificate``, or
        ``both`` (a migration: as each request asks, addendum §3). Until set, the direct
        merchant's is what the env file configures (``env_verification``), the
        provider's ``public_key``."""
        with self.state.lock:
            chosen = dict(self._platform().verification).get(mchid)
        return chosen or (self.env_verification if mchid == MCHID else "public_key")

    def set_verification(self, mchid: str, verification: str) -> None:
        """Put a merchant in a verification mode (until a reset)."""
        if verification not in VERIFICATIONS or mchid not in self.merchants:
            raise ValueError(f"a merchant of {sorted(self.merchants)} and one of "
                             f"{', '.join(VERIFICATIONS)}")
        with self.state.lock:
            platform = self._platform()
            modes = {**dict(platform.verification), mchid: verification}
            self.state.certificates[self.route] = replace(
                platform, verification=tuple(sorted(modes.items())))

    def _certificate_of(self, serial: str) -> PlatformCertificate | None:
        wanted = serial.strip().upper()
        return next((c for c in self.certificates() if c.serial == wanted), None)

    def _signer(self, merchant: Merchant, *, asked_key: bool, fault: str | None
                ) -> _Signer:
        """Who signs an answer or notification: the public key or the current
        certificate, as the merchant's mode says (``both``: as the request asked),
        after the ``cert_rotated`` / ``serial_switch`` / ``bad_signature`` fault."""
        mode = self.verification_of(merchant.mchid)
        by_key = mode == "public_key" or (mode == "both" and asked_key)
        if fault == "cert_rotated":
            self.rotate_certificate()      # signs this answer if a certificate signs it
        elif fault == "serial_switch":
            by_key = not by_key
        if by_key:
            serial, key = merchant.public_key_id, self.keys.wechat_platform
        else:
            cert = self.certificate
            serial, key = cert.serial, cert.key
        return _Signer(serial, self.keys.wrong if fault == "bad_signature" else key, by_key)

    # -- framework interface ---------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        path = request.path
        if path == REFUNDS_PATH and request.method == "POST":
            return "refund"
        if path.startswith(REFUNDS_PATH + "/") and request.method == "GET" \
                and "/" not in path[len(REFUNDS_PATH) + 1:]:
            return "query"
        if path in (TRADEBILL_PATH, FUNDFLOWBILL_PATH):
            return "statement"
        if path == DOWNLOAD_PATH and request.method == "GET":
            return "download"      # connection faults and latency only
        if path == CERTIFICATES_PATH and request.method == "GET":
            return "certificates"
        return None

    def handle(self, request: Request) -> Response:
        try:
            merchant = self._authenticate(request)
            kind = request.fault.kind if request.fault is not None else None
            if kind == "rate_limited":
                raise WechatPayError(429, "FREQUENCY_LIMITED", "频率超限")
            asked = request.headers.get("Wechatpay-Serial") == merchant.public_key_id
            signer = self._signer(merchant, asked_key=asked, fault=kind)
            return self._route(request, merchant, signer)
        except WechatPayError as error:
            return error.response()

    def server_error(self) -> Response:
        return WechatPayError(500, "SYSTEM_ERROR", "系统超时").response()

    def statement(self, day: date, base_url: str) -> bytes:
        """The direct merchant's plain (un-gzipped) REFUND trade bill of ``day``; rows-less
        when none."""
        return self._trade_bill(day, "REFUND", self.merchants[MCHID], owners={MCHID},
                                allow_empty=True) or b""

    def client_settings(self, base_url: str) -> dict[str, str]:
        return self.settings_for(base_url, verification=self.env_verification)

    def settings_for(self, base_url: str, *, verification: str = "public_key",
                     partner: bool = False) -> dict[str, str]:
        """REFUND_GATEWAY_WECHATPAY__* settings for the direct merchant, or (``partner``)
        the service provider acting for ``SUB_MCHID``, verifying by ``public_key``,
        ``certificate`` (downloaded from /v3/certificates) or ``both``; and that merchant
        put in that mode (``set_verification``), so the gateway can verify its answers."""
        if verification not in VERIFICATIONS:
            raise ValueError(f"verification is one of {', '.join(VERIFICATIONS)}")
        merchant = self.merchants[SP_MCHID if partner else MCHID]
        self.set_verification(merchant.mchid, verification)
        prefix = "REFUND_GATEWAY_WECHATPAY__"
        out = {f"{prefix}MCHID": merchant.mchid, f"{prefix}APPID": APPID,
               f"{prefix}PRIVATE_KEY": merchant.key.private_pem(pkcs8=True),
               f"{prefix}CERT_SERIAL_NO": merchant.cert_serial,
               f"{prefix}APIV3_KEY": self.keys.apiv3_key,
               f"{prefix}BASE_URL": base_url.rstrip("/")}
        if verification != "certificate":
            out[f"{prefix}PUBLIC_KEY"] = self.keys.wechat_platform.public_pem()
            out[f"{prefix}PUBLIC_KEY_ID"] = merchant.public_key_id
        if verification != "public_key":
            out[f"{prefix}VERIFICATION"] = verification
        if partner:
            out[f"{prefix}SUB_MCHID"] = SUB_MCHID
        return out

    # -- signatures ------------------------------------------------------------------
    def _authenticate(self, request: Request) -> Merchant:
        schema, _, params = str(request.headers.get("Authorization") or "").partition(" ")
        if schema != SIGN_TYPE:
            raise _sign_error(f"Authorization 认证类型必须为 {SIGN_TYPE}")
        fields = dict(AUTH_FIELD.findall(params))
        missing = {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} - set(fields)
        if missing:
            raise _sign_error(f"Authorization 缺少 {', '.join(sorted(missing))}")
        merchant = self.merchants.get(fields["mchid"])
        if merchant is None:
            raise _sign_error("mchid 与商户号不一致")
        if fields["serial_no"] != merchant.cert_serial:
            raise _sign_error("serial_no 不是商户API证书序列号")
        stamp = fields["timestamp"]
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > CLOCK_SKEW_SECONDS:
            raise _sign_error("timestamp 与当前时间相差超过5分钟")
        body = request.body.decode("utf-8", errors="replace")
        for url in dict.fromkeys((request.target, unquote(request.target))):
            message = f"{request.method}\n{url}\n{stamp}\n{fields['nonce_str']}\n{body}\n"
            if verify_b64(merchant.key.public, message.encode(), fields["signature"]):
                return merchant
        raise _sign_error("签名验证失败")

    @staticmethod
    def _sign_headers(body: bytes, signer: _Signer) -> dict[str, str]:
        stamp, nonce = str(int(time.time())), secrets.token_hex(16).upper()
        return {"Wechatpay-Signature-Type": SIGN_TYPE,
                "Wechatpay-Serial": signer.serial,
                "Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": signer.key.sign_b64(
                    f"{stamp}\n{nonce}\n".encode() + body + b"\n"),
                "Request-ID": _request_id()}

    def _signed(self, data: dict[str, Any], signer: _Signer) -> Response:
        body = _dumps(data)
        return Response(200, body, {"Content-Type": "application/json; charset=utf-8",
                                    **self._sign_headers(body, signer)})

    # -- routing ---------------------------------------------------------------------
    def _route(self, request: Request, merchant: Merchant, signer: _Signer) -> Response:
        path, method = request.path, request.method
        if path == REFUNDS_PATH and method == "POST":
            return self._signed(self._create(request, merchant, signer), signer)
        if path.startswith(REFUNDS_PATH + "/"):
            rest = unquote(path[len(REFUNDS_PATH) + 1:])
            if method == "GET" and "/" not in rest:
                owner = self._sub_merchant(merchant, request.query.get("sub_mchid"),
                                           "query")
                return self._signed(self._query(rest, owner), signer)
            refund_id, _, action = rest.partition("/")
            if method == "POST" and action == "apply-abnormal-refund":
                return self._signed(self._apply_abnormal(request, merchant, refund_id),
                                    signer)
        if method == "GET" and path in (TRADEBILL_PATH, FUNDFLOWBILL_PATH):
            return self._signed(self._bill_url(request, merchant), signer)
        if method == "GET" and path == DOWNLOAD_PATH:
            return self._download(request)
        if method == "GET" and path == CERTIFICATES_PATH:
            return self._signed(self._certificates(request), signer)
        raise WechatPayError(404, "NOT_FOUND", f"请求的资源不存在: {method} {path}")

    def _sub_merchant(self, merchant: Merchant, sub_mchid: Any, where: str) -> str:
        """The merchant a request acts for: a provider's bound ``sub_mchid`` (required),
        or the direct merchant itself (which sends none)."""
        if not merchant.sub_mchids:
            if sub_mchid is not None:
                raise _param_error("/sub_mchid", "直连商户不能传入 sub_mchid", sub_mchid)
            return merchant.mchid
        if not isinstance(sub_mchid, str) or not sub_mchid:
            raise _param_error("/sub_mchid", f"服务商模式下{where}必须传递 sub_mchid")
        if sub_mchid not in merchant.sub_mchids:
            raise WechatPayError(403, "NO_AUTH", "特约商户与服务商不存在绑定关系")
        return sub_mchid

    # -- platform certificates (addendum §3) ---------------------------------------------
    def _certificates(self, request: Request) -> dict[str, Any]:
        algorithm = request.query.get("algorithm_type", "RSA")
        if algorithm not in ("RSA", "SM2", "ALL"):
            raise _param_error("/algorithm_type", "algorithm_type 须为 RSA、SM2 或 ALL",
                               algorithm)
        with self.state.lock:
            self.certificate_downloads += 1
        data = []
        for cert in (self.certificates() if algorithm != "SM2" else []):
            nonce = "".join(secrets.choice(string.ascii_letters + string.digits)
                            for _ in range(12))
            ciphertext = AESGCM(self.keys.apiv3_key.encode()).encrypt(
                nonce.encode(), cert.pem.encode(), b"certificate")
            data.append({"serial_no": cert.serial,
                         "effective_time": _rfc3339(cert.effective),
                         "expire_time": _rfc3339(cert.expires),
                         "encrypt_certificate": {
                             "algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                             "associated_data": "certificate",
                             "ciphertext": base64.b64encode(ciphertext).decode()}})
        return {"data": data}

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _param_error("/", "请求体不是合法的JSON") from None
        if not isinstance(data, dict):
            raise _param_error("/", "请求体必须是JSON对象")
        return data

    # -- refunds ---------------------------------------------------------------------
    def _create(self, request: Request, merchant: Merchant, signer: _Signer
                ) -> dict[str, Any]:
        body = self._body(request)
        owner = self._sub_merchant(merchant, body.get("sub_mchid"), "退款")
        out_refund_no = body.get("out_refund_no")
        if not isinstance(out_refund_no, str) or not OUT_REFUND_NO.fullmatch(out_refund_no):
            raise _param_error("/out_refund_no", "out_refund_no 须为1-64位数字、字母或_-|*@",
                               out_refund_no)
        transaction_id, out_trade_no = body.get("transaction_id"), body.get("out_trade_no")
        for name, value in (("transaction_id", transaction_id),
                            ("out_trade_no", out_trade_no)):
            if value is not None and (not isinstance(value, str) or not value):
                raise _param_error(f"/{name}", f"{name} 格式错误", value)
        if not transaction_id and not out_trade_no:
            raise _param_error("/transaction_id", "transaction_id 与 out_trade_no 必填其一")
        amount = body.get("amount")
        if not isinstance(amount, dict):
            raise _param_error("/amount", "缺少 amount")
        refund_fen, total_fen = _fen_field(amount, "refund"), _fen_field(amount, "total")
        if amount.get("currency") != "CNY":
            raise _param_error("/amount/currency", "currency 仅支持 CNY",
                               amount.get("currency"))
        reason, notify_url = body.get("reason"), body.get("notify_url")
        if reason is not None and (not isinstance(reason, str)
                                   or len(reason.encode("utf-8")) > REASON_MAX_BYTES):
            raise _param_error("/reason", f"reason 最长{REASON_MAX_BYTES}个字节（UTF-8）",
                               reason)
        if notify_url is not None:
            parts = urlsplit(notify_url) if isinstance(notify_url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
                    or parts.query:
                raise _param_error("/notify_url", "notify_url 须为不带参数的 http(s) 地址",
                                   notify_url)
        funds_account = body.get("funds_account")
        if funds_account not in (None, "AVAILABLE"):
            raise _param_error("/funds_account", "funds_account 仅支持 AVAILABLE",
                               funds_account)
        abnormal = request.fault is not None and request.fault.kind == "abnormal"
        with self.state.lock:
            payment = (self.state.find_payment(self.route, trade_no=transaction_id)
                       if transaction_id else
                       self.state.find_payment(self.route, order_no=out_trade_no))
            if payment is not None and _owner(payment) != owner:
                payment = None               # another merchant's order: not found
            fingerprint = json.dumps(
                [payment.channel_trade_no if payment else [transaction_id, out_trade_no],
                 refund_fen, total_fen, "CNY"])
            refund = self.state.refunds.get((self.route, out_refund_no))
            if refund is not None:           # a repeat: never a second execution
                if refund.request_fingerprint != fingerprint or \
                        refund.extra.get("merchant", MCHID) != owner:
                    raise _invalid("out_refund_no already used: "
                                   "商户退款单号已被使用且请求参数不一致")
                changed = self.settle(refund, query=False)
                answer = self._refund_object(refund)
            else:
                if payment is None:
                    raise WechatPayError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
                refund = self._execute(payment, out_refund_no, refund_fen, total_fen,
                                       fingerprint, body, abnormal=abnormal)
                # who it is for, and what its request asked for (the key if it sent the
                # key's id): its notifications follow that in ``both`` mode
                wanted = "public_key" if request.headers.get("Wechatpay-Serial") == \
                    merchant.public_key_id else "certificate"
                refund.extra.update({"merchant": owner, "signer": merchant.mchid,
                                     "verify_by": wanted})
                answer = self._refund_object(refund)     # accepted: PROCESSING
                changed = self.settle(refund, query=False)
        if changed:
            self._send_notification(refund)
        return answer

    def _execute(self, payment: Payment, out_refund_no: str, refund_fen: int,
                 total_fen: int, fingerprint: str, body: dict[str, Any], *,
                 abnormal: bool) -> Refund:
        """Business checks, then the one execution (caller holds the state lock)."""
        interval = self.state.limits[self.route].get("refund_interval_seconds", 0.0)
        if interval > 0:
            last = max((r.created_at for r in self.state.refunds.values()
                        if r.route == self.route
                        and r.channel_trade_no == payment.channel_trade_no), default=None)
            if last is not None and (now_utc() - last).total_seconds() < interval:
                raise WechatPayError(429, "FREQUENCY_LIMITED",
                                     "请求频率超限，同一笔订单多次退款的请求需相隔1分钟")
        if total_fen != payment.amount_fen:
            raise _invalid("订单金额 amount.total 与原订单金额不一致")
        count = sum(1 for r in self.state.refunds.values()
                    if r.route == self.route and r.channel_trade_no == payment.channel_trade_no)
        if count >= MAX_REFUNDS_PER_ORDER:
            raise _invalid(f"该订单已退款{MAX_REFUNDS_PER_ORDER}次，不能再发起退款")
        refundable = payment.amount_fen - payment.refunded_fen
        if refundable <= 0:
            raise _invalid("订单已全额退款")
        if refund_fen > refundable:
            raise _invalid("申请退款金额超过订单可退金额")
        now = now_utc()
        day = now.astimezone(BEIJING).strftime("%Y%m%d")
        refund_id = f"5030{self.state.next_id(6)}{day}{self.state.rng.randrange(10**11):011d}"
        refund = Refund(
            route=self.route, channel_refund_no=out_refund_no, channel_refund_id=refund_id,
            merchant_order_no=payment.merchant_order_no,
            channel_trade_no=payment.channel_trade_no, amount_fen=refund_fen,
            status="PROCESSING", created_at=now, request_fingerprint=fingerprint,
            abnormal=abnormal, notify_url=body.get("notify_url"),
            extra={"total_fen": payment.amount_fen, "channel": "ORIGINAL",
                   "user_received_account": _payer(payment)[1],
                   "funds_account": body.get("funds_account") or "UNSETTLED",
                   "reason": body.get("reason")})
        self.state.refunds[(self.route, out_refund_no)] = refund
        payment.refunded_fen += refund_fen
        return refund

    def tick(self) -> None:
        """Settle refunds whose ``after_seconds`` rule came due without a query, so their
        notification goes out as WeChat's would."""
        if self.state.settle[self.route].mode != "after_seconds":
            return
        with self.state.lock:
            changed = [r for r in self.state.refunds.values()
                       if r.route == self.route and r.status == "PROCESSING"
                       and self.settle(r, query=False)]
        for refund in changed:
            self._send_notification(refund)

    def _query(self, out_refund_no: str, owner: str) -> dict[str, Any]:
        with self.state.lock:
            refund = self.state.refunds.get((self.route, out_refund_no))
            if refund is None or refund.extra.get("merchant", MCHID) != owner:
                raise WechatPayError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            changed = self.settle(refund, query=True)
            answer = self._refund_object(refund)
        if changed:
            self._send_notification(refund)
        return answer

    def _apply_abnormal(self, request: Request, merchant: Merchant, refund_id: str
                        ) -> dict[str, Any]:
        body = self._body(request)
        owner = self._sub_merchant(merchant, body.get("sub_mchid"), "异常退款")
        with self.state.lock:
            refund = next((r for r in self.state.refunds.values()
                           if r.route == self.route and r.channel_refund_id == refund_id
                           and r.extra.get("merchant", MCHID) == owner), None)
        if refund is None:
            raise WechatPayError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        if body.get("out_refund_no") != refund.channel_refund_no:
            raise _param_error("/out_refund_no", "out_refund_no 与 refund_id 不对应",
                               body.get("out_refund_no"))
        kind = body.get("type")
        if kind == "USER_BANK_CARD":
            serial = str(request.headers.get("Wechatpay-Serial") or "")
            cert = self._certificate_of(serial) if serial else None
            if serial != merchant.public_key_id and cert is None:
                raise WechatPayError(400, "PARAM_ERROR", "请求头 Wechatpay-Serial "
                                     "须为加密所用的平台公钥ID或平台证书序列号")
            decrypt_with = cert.key if cert is not None else self.keys.wechat_platform
            bank_type = body.get("bank_type")
            if bank_type not in BANK_NAMES:
                raise _param_error("/bank_type", "bank_type 不支持", bank_type)
            account = self._decrypt(body.get("bank_account"), "/bank_account", decrypt_with)
            if not account.isdigit() or not 12 <= len(account) <= 30:
                raise _param_error("/bank_account", "bank_account 不是有效的银行卡号")
            if not self._decrypt(body.get("real_name"), "/real_name",
                                 decrypt_with).strip():
                raise _param_error("/real_name", "real_name 不能为空")
            received = f"{BANK_NAMES[str(bank_type)]}借记卡{account[-4:]}"
            record = {"type": kind, "bank_type": bank_type, "bank_account_last4": account[-4:]}
        elif kind == "MERCHANT_BANK_CARD":
            received, record = "商户结算银行账户", {"type": kind}
        else:
            raise _param_error("/type", "type 须为 USER_BANK_CARD 或 MERCHANT_BANK_CARD", kind)
        with self.state.lock:
            if refund.status != "ABNORMAL":
                raise _invalid(f"退款单状态为{refund.status}，仅 ABNORMAL 可发起异常退款")
            refund.status, refund.abnormal = "PROCESSING", False
            refund.extra.update({"channel": "OTHER_BANKCARD",
                                 "user_received_account": received,
                                 "abnormal_refund": record})
            answer = self._refund_object(refund)
            changed = self.settle(refund, query=False)
        if changed:
            self._send_notification(refund)
        return answer

    @staticmethod
    def _decrypt(value: Any, field: str, key: KeyPair) -> str:
        """RSA-OAEP(SHA1) with the platform private key, as the SDK encrypts (CH §2.1)."""
        if not isinstance(value, str) or not value:
            raise _param_error(field, f"缺少 {field[1:]}")
        try:
            plain = key.private.decrypt(
                base64.b64decode(value),
                padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),  # noqa: S303
                             label=None))
            return plain.decode("utf-8")
        except ValueError:
            raise _param_error(field, f"{field[1:]} 解密失败，请使用平台公钥加密") from None

    @staticmethod
    def _refund_object(refund: Refund) -> dict[str, Any]:
        total = int(refund.extra["total_fen"])
        data: dict[str, Any] = {
            "refund_id": refund.channel_refund_id, "out_refund_no": refund.channel_refund_no,
            "transaction_id": refund.channel_trade_no,
            "out_trade_no": refund.merchant_order_no, "channel": refund.extra["channel"],
            "user_received_account": refund.extra["user_received_account"]}
        if refund.status == "SUCCESS" and refund.succeeded_at is not None:
            data["success_time"] = _rfc3339(refund.succeeded_at)
        data.update({
            "create_time": _rfc3339(refund.created_at), "status": refund.status,
            "funds_account": refund.extra["funds_account"],
            "amount": {"total": total, "refund": refund.amount_fen, "from": [],
                       "payer_total": total, "payer_refund": refund.amount_fen,
                       "settlement_refund": refund.amount_fen, "settlement_total": total,
                       "discount_refund": 0, "currency": "CNY", "refund_fee": 0},
            "promotion_detail": []})
        return data

    # -- notifications ---------------------------------------------------------------
    def _send_notification(self, refund: Refund) -> None:
        fault = self.state.take_fault(self.route, "notify",
                                      ("bad_signature", "cert_rotated", "serial_switch"))
        merchant = self.merchants[str(refund.extra.get("signer") or MCHID)]
        signer = self._signer(merchant, asked_key=refund.extra.get("verify_by") != "certificate",
                              fault=fault.kind if fault is not None else None)
        with self.state.lock:
            event_type, summary = EVENTS[refund.status]
            owner = str(refund.extra.get("merchant") or MCHID)
            # CH §5.5: a provider's notification names sp_mchid and sub_mchid
            who = {"mchid": owner} if merchant.mchid == owner else \
                {"sp_mchid": merchant.mchid, "sub_mchid": owner}
            resource: dict[str, Any] = {
                **who, "transaction_id": refund.channel_trade_no,
                "out_trade_no": refund.merchant_order_no,
                "refund_id": refund.channel_refund_id,
                "out_refund_no": refund.channel_refund_no, "refund_status": refund.status}
            if refund.status == "SUCCESS" and refund.succeeded_at is not None:
                resource["success_time"] = _rfc3339(refund.succeeded_at)
            total = int(refund.extra["total_fen"])
            resource.update({
                "user_received_account": refund.extra["user_received_account"],
                "amount": {"total": total, "refund": refund.amount_fen,
                           "payer_total": total, "payer_refund": refund.amount_fen}})
            event_id = str(uuid.UUID(int=self.state.rng.getrandbits(128), version=4))
        nonce = "".join(secrets.choice(string.ascii_letters + string.digits)
                        for _ in range(12))
        ciphertext = AESGCM(self.keys.apiv3_key.encode()).encrypt(
            nonce.encode(), _dumps(resource), b"refund")
        body = _dumps({
            "id": event_id, "create_time": _rfc3339(now_utc()),
            "resource_type": "encrypt-resource", "event_type": event_type,
            "summary": summary,
            "resource": {"original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": base64.b64encode(ciphertext).decode(),
                         "associated_data": "refund", "nonce": nonce}})

        def resign(payload: bytes) -> dict[str, str]:
            return {"Content-Type": "application/json", "User-Agent": "Mozilla/4.0",
                    **self._sign_headers(payload, signer)}

        self.notify(refund, resign(body), body, None, resign)

    # -- bills -----------------------------------------------------------------------
    def _bill_url(self, request: Request, merchant: Merchant) -> dict[str, Any]:
        query = request.query
        try:
            day = date.fromisoformat(query.get("bill_date", ""))
        except ValueError:
            raise _param_error("/bill_date", "bill_date 格式须为 YYYY-MM-DD",
                               query.get("bill_date")) from None
        tar_type = query.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise _param_error("/tar_type", "tar_type 仅支持 GZIP", tar_type)
        content: bytes | None = None
        if request.path == TRADEBILL_PATH:
            # addendum §4: a provider names the sub-merchant (optional; without it, all
            # of its sub-merchants: UNCONFIRMED); the direct merchant sends none
            sub = query.get("sub_mchid")
            owners = ({self._sub_merchant(merchant, sub, "")} if sub is not None
                      or not merchant.sub_mchids else set(merchant.sub_mchids))
            bill_type = query.get("bill_type", "ALL")
            if bill_type in TRADE_BILL_HEADERS:
                content = self._trade_bill(day, bill_type, merchant, owners=owners)
            elif bill_type not in OTHER_TRADE_BILL_TYPES:
                raise _param_error("/bill_type", "bill_type 不支持", bill_type)
        else:
            account_type = query.get("account_type", "BASIC")
            if account_type == "BASIC":
                # the merchant's own account: a provider's holds no sub-merchant money
                content = self._fundflow_bill(day, owner=merchant.mchid)
            elif account_type not in ("OPERATION", "FEES"):
                raise _param_error("/account_type", "account_type 不支持", account_type)
        if content is None:
            raise WechatPayError(400, "NO_STATEMENT_EXIST", "账单文件不存在")
        token = secrets.token_urlsafe(48)
        with self._bills_lock:
            now = time.monotonic()
            for stale in [t for t, b in self._bills.items() if b.expires_at < now]:
                del self._bills[stale]
            self._bills[token] = _Bill(content, tar_type == "GZIP", now + BILL_URL_TTL_SECONDS)
        return {"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(),  # noqa: S324
                "download_url": f"{request.base_url}{DOWNLOAD_PATH}?token={token}"}

    def _download(self, request: Request) -> Response:
        with self._bills_lock:
            bill = self._bills.get(request.query.get("token", ""))
        if bill is None or bill.expires_at < time.monotonic():
            raise _invalid("下载链接无效或已过期（有效期30秒），请重新申请账单")
        data = gzip.compress(bill.content, mtime=0) if bill.gzip else bill.content
        return Response(200, data, {"Content-Type": "application/octet-stream",
                                    "Request-ID": _request_id()})

    def _payments_on(self, day: date, owners: set[str]) -> list[Payment]:
        with self.state.lock:
            return sorted((p for p in self.state.payments.values()
                           if p.route == self.route and _owner(p) in owners
                           and p.created_at.astimezone(BEIJING).date() == day),
                          key=lambda p: (p.created_at, p.merchant_order_no))

    def _refunds_on(self, day: date, owners: set[str]) -> list[Refund]:
        return [r for r in self.refunds_on(day)
                if str(r.extra.get("merchant") or MCHID) in owners]

    def _payment_of(self, refund: Refund) -> Payment:
        payment = self.state.find_payment(self.route, trade_no=refund.channel_trade_no)
        if payment is None:          # refunds are only ever executed against a payment
            raise LookupError(refund.channel_trade_no)
        return payment

    def _trade_bill(self, day: date, bill_type: str, merchant: Merchant, *,
                    owners: set[str], allow_empty: bool = False) -> bytes | None:
        """A trade bill (CH §5.7) of ``merchant`` covering the ``owners``' payments and
        refunds (a provider's: 特约商户号 = the sub-merchant); None when the day has
        nothing of this type."""
        payments = self._payments_on(day, owners) if bill_type in ("ALL", "SUCCESS") \
            else []
        refunds = self._refunds_on(day, owners) if bill_type in ("ALL", "REFUND") else []

        def sub(owner: str) -> str:
            return owner if owner != merchant.mchid else "0"

        if not payments and not refunds and not allow_empty:
            return None
        rows: list[tuple[datetime, list[str]]] = []
        settled = fees = ordered = refunded = applied = 0
        for p in payments:
            bank = _payer(p)[0]
            fee = _fee_fen(p.amount_fen)
            head = [_bill_time(p.created_at), APPID, merchant.mchid, sub(_owner(p)), "",
                    p.channel_trade_no,
                    p.merchant_order_no, _openid(p), "JSAPI", "SUCCESS", bank, "CNY",
                    self.fen_to_yuan(p.amount_fen), "0.00"]
            tail = [GOODS_NAME, _attach(p), _fee_cell(fee), "0.60%",
                    self.fen_to_yuan(p.amount_fen)]
            refund_cells = ["0", "0", "0.00", "0.00", "", ""]
            rows.append((p.created_at, head + (refund_cells if bill_type == "ALL" else [])
                         + tail + (["0.00"] if bill_type == "ALL" else []) + [""]))
            settled, ordered, fees = settled + p.amount_fen, ordered + p.amount_fen, \
                fees + fee
        for refund, fen in self.statement_faults(refunds):
            p = self._payment_of(refund)
            fee = _fee_fen(fen)
            when = p.created_at if bill_type == "REFUND" else refund.created_at
            head = [_bill_time(when), APPID, merchant.mchid, sub(_owner(p)), "",
                    p.channel_trade_no,
                    p.merchant_order_no, _openid(p), "JSAPI", "REFUND", _payer(p)[0], "CNY",
                    "0.00", "0.00"]
            times = [_bill_time(refund.created_at), _bill_time(refund.succeeded_at
                                                               if refund.status == "SUCCESS"
                                                               else None)]
            cells = [refund.channel_refund_id, refund.channel_refund_no,
                     self.fen_to_yuan(fen), "0.00", str(refund.extra["channel"]),
                     refund.status, GOODS_NAME, _attach(p), _fee_cell(-fee), "0.60%",
                     "0.00", self.fen_to_yuan(fen), ""]
            rows.append((refund.created_at,
                         head + (times if bill_type == "REFUND" else []) + cells))
            refunded, applied, fees = refunded + fen, applied + fen, fees - fee
        rows.sort(key=lambda row: row[0])
        summary = [str(len(rows)), self.fen_to_yuan(settled), self.fen_to_yuan(refunded),
                   "0.00", _fee_cell(fees), self.fen_to_yuan(ordered),
                   self.fen_to_yuan(applied)]
        return self._csv(TRADE_BILL_HEADERS[bill_type], [cells for _, cells in rows],
                         TRADE_SUMMARY_HEADER, summary)

    def _fundflow_bill(self, day: date, owner: str) -> bytes | None:
        """The BASIC account's fund-flow bill of ``owner``: payments in, refunds out,
        running balance."""
        payments, refunds = self._payments_on(day, {owner}), self._refunds_on(day, {owner})
        if not payments and not refunds:
            return None
        with self.state.lock:
            balance = sum(p.amount_fen for p in self.state.payments.values()
                          if p.route == self.route and _owner(p) == owner
                          and p.created_at.astimezone(BEIJING).date() < day)
            balance -= sum(r.amount_fen for r in self.state.refunds.values()
                           if r.route == self.route and r.status != "CLOSED"
                           and str(r.extra.get("merchant") or MCHID) == owner
                           and r.created_at.astimezone(BEIJING).date() < day)
        # (when, signed fen, cells before the balance, cells after it)
        moves: list[tuple[datetime, int, list[str], list[str]]] = []
        for p in payments:
            moves.append((p.created_at, p.amount_fen,
                          [_bill_time(p.created_at), p.channel_trade_no, p.channel_trade_no,
                           "交易", "交易", "收入", self.fen_to_yuan(p.amount_fen)],
                          ["system", "", p.merchant_order_no]))
        for refund, fen in self.statement_faults(
                [r for r in refunds if r.status != "CLOSED"]):
            moves.append((refund.created_at, -fen,
                          [_bill_time(refund.created_at), refund.channel_refund_id,
                           refund.channel_trade_no, "退款", "退款", "支出",
                           self.fen_to_yuan(fen)],
                          [f"{owner}API", f"退款总金额{self.fen_to_yuan(fen)}元;含手续费0.00元",
                           refund.channel_refund_no]))
        moves.sort(key=lambda move: move[0])
        rows: list[list[str]] = []
        for _, fen, before, after in moves:
            balance += fen
            rows.append([*before, self.fen_to_yuan(balance), *after])
        income = [fen for _, fen, _, _ in moves if fen > 0]
        spent = [-fen for _, fen, _, _ in moves if fen < 0]
        summary = [str(len(moves)), str(len(income)), self.fen_to_yuan(sum(income)),
                   str(len(spent)), self.fen_to_yuan(sum(spent))]
        return self._csv(FUNDFLOW_HEADER, rows, FUNDFLOW_SUMMARY_HEADER, summary)

    @staticmethod
    def _csv(header: str, rows: list[list[str]], summary_header: str,
             summary: list[str]) -> bytes:
        """WeChat's bill layout: BOM, header, backtick cells, summary header and row."""
        lines = ["\ufeff" + header, *(",".join("`" + c for c in row) for row in rows),
                 summary_header, ",".join("`" + c for c in summary)]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")
