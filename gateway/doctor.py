"""``refund-gateway doctor``: is every merchant account of every route ready to refund?

Owns the checks of one account's settings - required fields, the notify/back URL, keys
that load, our key against our certificate, the channel's key not being our own,
certificate expiry - and the orchestration that adds, per account, one harmless signed
call: a query of a refund number nobody ever used, which a healthy channel answers
"not found" with a verified answer. Also ``certificate_warnings``, which the resolver
loop calls once a day. Must not move money, touch the store, or print or log any key
material (details name settings and certificate serials, never values).
"""

from __future__ import annotations

import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, SecretStr

from gateway.clock import Clock, utcnow
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
)
from gateway.models import Payment, Refund, RefundStatus, Route
from gateway.money import Money
from gateway.ports import ChannelAdapter
from gateway.settings import DEFAULT_ACCOUNT, GatewaySettings, pem_text, select_accounts

log = structlog.get_logger("gateway.doctor")

SCHEMA: Final = "refund-gateway/cli/doctor/v1"
WARN_DAYS: Final = 30
# Where the sandbox points notifications until a real endpoint is set (sandbox.server).
SANDBOX_INBOX: Final = "/_sandbox/inbox/"
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_HMAC_BYTES: Final = 32
SKIPPED_FIELDS: Final = frozenset({"accounts", "timeouts"})
PEM_SUFFIXES: Final = (".pem", ".crt", ".cer")
# Checks an account can have several of: the table names the field each is about.
REPEATED: Final = frozenset({"certificate", "platform_key"})


class Status(StrEnum):
    """One check's verdict; a report's is its worst."""

    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


_RANK: Final = {Status.OK: 0, Status.WARNING: 1, Status.PROBLEM: 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked for which account, and the verdict.

    Attributes:
        route: the route (``alipay``, ``wechatpay``, ...).
        account: the merchant account (``default`` or a name from ``..._ACCOUNTS__``).
        check: what was checked (``settings``, ``notify_url``, ``private_key``,
            ``platform_key``, ``key_pair``, ``chain``, ``certificate``, ``cert_dir``,
            ``apiv3_key``, ``hmac_key``, ``channel``).
        status: ``ok``, ``warning`` or ``problem``.
        zh: the detail in Chinese.
        en: the detail in English (short words).
        setting: the ``REFUND_GATEWAY_...`` variable concerned, when there is one.
        facts: machine-readable facts (``expires_at``, ``days_left``, ``serial``,
            ``code``, ``http_status``, ``elapsed_ms``...); never a secret.
    """

    route: str
    account: str
    check: str
    status: Status
    zh: str
    en: str
    setting: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The check as the table names it: a certificate with the field it is in."""
        where = self.facts.get("field")
        return f"{self.check}:{where}" if where and self.check in REPEATED else self.check

    @property
    def detail(self) -> str:
        """Both languages on one line, as the table prints it."""
        return f"{self.zh} / {self.en}"

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "account": self.account, "check": self.check,
                "status": self.status.value, "detail": self.detail, "detail_zh": self.zh,
                "detail_en": self.en, "setting": self.setting, "facts": dict(self.facts)}


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check of one run, in route, account, check order."""

    checked_at: datetime
    warn_days: int
    checks: tuple[Check, ...]
    offline: bool = False

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    @property
    def exit_code(self) -> int:
        """1 when any check found a problem; 0 otherwise (warnings are listed, not fatal)."""
        return 1 if self.status is Status.PROBLEM else 0

    def accounts(self) -> list[tuple[str, str, Status]]:
        seen: dict[tuple[str, str], Status] = {}
        for c in self.checks:
            key = (c.route, c.account)
            seen[key] = worst((seen.get(key, Status.OK), c.status))
        return [(route, account, status) for (route, account), status in seen.items()]

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document (README, "Doctor")."""
        counts = {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}
        return {
            "schema": SCHEMA,
            "checked_at": self.checked_at.isoformat(),
            "warn_days": self.warn_days,
            "offline": self.offline,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "summary": counts,
            "accounts": [{"route": r, "account": a, "status": s.value}
                         for r, a, s in self.accounts()],
            "checks": [c.as_json() for c in self.checks],
        }

    def table(self) -> str:
        """A fixed-column table (CJK counted double) and a closing summary line."""
        rows = [("route", "account", "check", "status", "detail")]
        rows += [(c.route, c.account, c.label, c.status.value, c.detail) for c in self.checks]
        widths = [max(_width(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join([*(_pad(cell, widths[i]) for i, cell in enumerate(r[:4])), r[4]])
                 .rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in [*widths, 6]))
        counts = {s: sum(1 for c in self.checks if c.status is s) for s in Status}
        lines.append("")
        lines.append(f"{len(self.accounts())} accounts: {counts[Status.OK]} ok, "
                     f"{counts[Status.WARNING]} warnings, {counts[Status.PROBLEM]} problems "
                     f"-> {self.status.value}")
        return "\n".join(lines)


def worst(statuses: Iterable[Status]) -> Status:
    """The most serious of ``statuses`` (ok when there are none)."""
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


def error_document(message: str, exit_code: int) -> dict[str, Any]:
    """The ``--json`` document when the doctor cannot run (settings unreadable)."""
    return {"schema": SCHEMA, "error": message, "exit_code": exit_code}


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


# -- what each route's settings hold ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteKeys:
    """Which fields of a route's settings hold what (``gateway.settings``)."""

    private_key: str | None            # our signing key
    platform_keys: tuple[str, ...]     # the channel's public key or certificate(s)
    serial: str | None = None          # our certificate's serial as the channel knows it
    serial_base: int = 16              # WeChat: hex; UnionPay certId: decimal
    notify: str | None = None          # where the channel sends notifications
    notify_required: bool = False
    own_label: tuple[str, str] = ("我方", "our")


ROUTE_KEYS: Final[Mapping[str, RouteKeys]] = {
    # Alipay notifies a refund to the payment's notify_url (CH §4.4): the setting is
    # informative only.
    "alipay": RouteKeys("app_private_key", ("alipay_cert", "alipay_public_key"),
                        notify="notify_url", own_label=("应用", "app")),
    "wechatpay": RouteKeys("private_key", ("public_key",), serial="cert_serial_no",
                           serial_base=16, notify="notify_url",
                           own_label=("商户", "merchant")),
    # UnionPay's backUrl is mandatory on a refund (CH §6).
    "bankcard": RouteKeys("private_key", ("middle_cert", "unionpay_public_key"),
                          serial="cert_id", serial_base=10, notify="back_url",
                          notify_required=True, own_label=("商户", "merchant")),
    "balance": RouteKeys(None, ()),
}
BASE_URL_FIELDS: Final = ("base_url", "gateway_url")
# A field holding our own certificate (certificate modes): the key must match it.
OWN_CERT_WORDS: Final = ("app", "merchant", "sign", "client")


def setting_name(route: str, account: str, name: str) -> str:
    """The environment variable of one field of one account's settings."""
    middle = "" if account == DEFAULT_ACCOUNT else f"ACCOUNTS__{account.upper()}__"
    return f"REFUND_GATEWAY_{route.upper()}__{middle}{name.upper()}"


def _text(value: Any) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else None


def _pem(cfg: BaseModel, name: str, setting: str) -> str | None:
    """The PEM text of a field holding PEM or a path to a PEM file; None otherwise."""
    value = getattr(cfg, name, None)
    if _text(value) is None or not str(_text(value)).strip():
        return None
    secret = value if isinstance(value, SecretStr) else SecretStr(str(value))
    try:
        return pem_text(secret, setting)
    except ConfigurationError:
        return None


def _fields(cfg: BaseModel) -> list[str]:
    return [n for n in type(cfg).model_fields if n not in SKIPPED_FIELDS]


# -- settings and URLs --------------------------------------------------------------------
class _Account:
    """One account's settings and the helpers every check needs."""

    def __init__(self, route: str, account: str, cfg: BaseModel) -> None:
        self.route, self.account, self.cfg = route, account, cfg
        self.keys = ROUTE_KEYS.get(route, RouteKeys(None, ()))
        self.unused = unused_fields(route, cfg)

    def configured(self, name: str) -> bool:
        """The field is set and the adapter reads it in the account's mode."""
        return name not in self.unused and getattr(self.cfg, name, None) is not None

    def setting(self, name: str) -> str:
        return setting_name(self.route, self.account, name)

    def check(self, check: str, status: Status, zh: str, en: str, name: str | None = None,
              **facts: Any) -> Check:
        return Check(self.route, self.account, check, status, zh, en,
                     self.setting(name) if name else None, facts)

    def base_url(self) -> str | None:
        for name in BASE_URL_FIELDS:
            value = _text(getattr(self.cfg, name, None))
            if value:
                return value
        return None


def unused_fields(route: str, cfg: BaseModel) -> frozenset[str]:
    """Fields the adapter does not read in the account's mode, left unchecked: UnionPay's
    pin under ``trust=chain`` (or the chain under ``pin``), WeChat's certificate directory
    in public-key verification (or the public key in certificate verification)."""
    fields = type(cfg).model_fields
    if route == "bankcard" and "trust" in fields:
        return frozenset({"middle_cert", "root_cert"} if getattr(cfg, "trust", None) == "pin"
                         else {"unionpay_public_key"})
    if route == "wechatpay" and "verification" in fields:
        mode = getattr(cfg, "verification", None) or (
            "public_key" if getattr(cfg, "public_key", None) is not None else "certificate")
        return frozenset(() if mode == "both" else
                         {"cert_dir"} if mode == "public_key" else {"public_key"})
    return frozenset()


def _is_loopback(url: str | None) -> bool:
    return bool(url) and (urlsplit(str(url)).hostname or "") in LOOPBACK


def settings_checks(acct: _Account) -> list[Check]:
    """Required fields present and not blank; channel URLs http(s)."""
    out: list[Check] = []
    for name, info in type(acct.cfg).model_fields.items():
        if info.is_required():
            value = _text(getattr(acct.cfg, name, None))
            if value is not None and not value.strip():
                out.append(acct.check("settings", Status.PROBLEM, "必填项为空",
                                      "required setting is blank", name))
    for name in BASE_URL_FIELDS:
        url = _text(getattr(acct.cfg, name, None))
        if url is None:
            continue
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            out.append(acct.check("settings", Status.PROBLEM, "渠道地址不是 http(s) URL",
                                  "channel URL is not http(s)", name))
        elif scheme == "http" and not _is_loopback(url):
            out.append(acct.check("settings", Status.WARNING, "渠道地址未加密 (http)",
                                  "channel URL is plain http", name))
    if not out:
        out.append(acct.check("settings", Status.OK, "必填项齐全",
                              "required settings present"))
    return out


def notify_checks(acct: _Account) -> list[Check]:
    """The URL the channel notifies: set where the channel needs one, not the sandbox's
    inbox, reachable by the channel (not loopback unless the channel is), https,
    and for WeChat without a query string (CH §5.1)."""
    name = acct.keys.notify
    if name is None or name not in type(acct.cfg).model_fields:
        return []
    url = _text(getattr(acct.cfg, name, None))
    if not url:
        if acct.keys.notify_required:
            return [acct.check("notify_url", Status.PROBLEM, "未设置通知地址（退款必填）",
                               "not set: required on every refund", name)]
        if acct.route == "alipay":
            return [acct.check("notify_url", Status.OK, "未设置：支付宝通知支付时的地址",
                               "not set: Alipay notifies the payment's notify_url", name)]
        return [acct.check("notify_url", Status.WARNING, "未设置：仅商户平台配置的地址收到通知",
                           "not set: only the merchant platform's URL is notified", name)]
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if SANDBOX_INBOX in parts.path:
        return [acct.check("notify_url", Status.WARNING, "仍指向沙箱收件箱",
                           "still the sandbox's inbox", name, url=shown)]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [acct.check("notify_url", Status.PROBLEM, "不是 http(s) URL",
                           "not an http(s) URL", name)]
    if acct.route == "wechatpay" and parts.query:
        return [acct.check("notify_url", Status.PROBLEM, "不能带查询参数",
                           "must not carry a query string", name, url=shown)]
    channel_local = _is_loopback(acct.base_url())
    if _is_loopback(url) and not channel_local:
        return [acct.check("notify_url", Status.PROBLEM, "渠道无法访问本机地址",
                           "channel cannot reach a loopback URL", name, url=shown)]
    if parts.scheme == "http" and not channel_local:
        return [acct.check("notify_url", Status.WARNING, "未使用 HTTPS",
                           "not HTTPS", name, url=shown)]
    return [acct.check("notify_url", Status.OK, "已设置", "set", name, url=shown)]


# -- keys -----------------------------------------------------------------------------------
def _load_private(pem: str) -> rsa.RSAPrivateKey | str:
    """The RSA key, or why not (a short English reason)."""
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except TypeError:
        return "encrypted"
    except (ValueError, UnicodeEncodeError):
        return "unparseable"
    if not isinstance(key, rsa.RSAPrivateKey):
        return "not RSA"
    return key


def _load_public(pem: str) -> rsa.RSAPublicKey | str:
    """The RSA public key of a PEM public key or certificate, or why not."""
    data = pem.encode("utf-8")
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeEncodeError):
        return "unparseable"
    if not isinstance(key, rsa.RSAPublicKey):
        return "not RSA"
    return key


_WHY_ZH: Final = {"encrypted": "私钥已加密（请提供未加密的 PEM）", "unparseable": "无法解析",
                  "not RSA": "不是 RSA 密钥", "missing": "不是 PEM 文本或可读的 PEM 文件"}
_WHY_EN: Final = {"encrypted": "encrypted key: give it unencrypted",
                  "unparseable": "does not parse", "not RSA": "not an RSA key",
                  "missing": "neither PEM text nor a readable PEM file"}


def _same(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


def _signs_for(private: rsa.RSAPrivateKey, public: rsa.RSAPublicKey) -> bool:
    """Sign a random message with ``private`` and verify it with ``public``."""
    message = secrets.token_bytes(32)
    signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
    try:
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def key_checks(acct: _Account) -> tuple[list[Check], rsa.RSAPrivateKey | None]:
    """Our signing key loads (RSA, 2048+ bits); the channel's key loads and is not ours;
    route extras (WeChat: the API v3 key and the public key id; balance: the HMAC key)."""
    out: list[Check] = []
    private: rsa.RSAPrivateKey | None = None
    spec = acct.keys
    if spec.private_key and spec.private_key in type(acct.cfg).model_fields:
        name = spec.private_key
        pem = _pem(acct.cfg, name, acct.setting(name))
        loaded = _load_private(pem) if pem else "missing"
        if isinstance(loaded, str):
            out.append(acct.check("private_key", Status.PROBLEM, f"私钥{_WHY_ZH[loaded]}",
                                  f"private key: {_WHY_EN[loaded]}", name))
        elif loaded.key_size < 2048:
            out.append(acct.check("private_key", Status.PROBLEM,
                                  f"RSA 私钥仅 {loaded.key_size} 位（至少 2048）",
                                  f"RSA key of {loaded.key_size} bits: 2048+ needed", name,
                                  bits=loaded.key_size))
        else:
            private = loaded
            out.append(acct.check("private_key", Status.OK,
                                  f"RSA {loaded.key_size} 位私钥可用",
                                  f"RSA {loaded.key_size}-bit key loads", name,
                                  bits=loaded.key_size))
    for name in spec.platform_keys:
        if acct.configured(name):
            out.extend(_platform_key_check(acct, name, private))
    if spec.platform_keys and acct.route != "wechatpay" and not any(
            acct.configured(n) for n in spec.platform_keys):
        out.append(acct.check("platform_key", Status.PROBLEM, "未配置渠道公钥或证书",
                              "no channel public key or certificate",
                              spec.platform_keys[-1]))
    if acct.route == "wechatpay":
        out.extend(_wechat_key_checks(acct))
    if acct.route == "balance":
        out.extend(_hmac_check(acct))
    return out, private


def _platform_key_check(acct: _Account, name: str, private: rsa.RSAPrivateKey | None
                        ) -> list[Check]:
    pem = _pem(acct.cfg, name, acct.setting(name))
    loaded = _load_public(pem) if pem else "missing"
    if isinstance(loaded, str):
        why = {"unparseable": "无法解析", "not RSA": "不是 RSA 公钥"}.get(loaded, _WHY_ZH[loaded])
        return [acct.check("platform_key", Status.PROBLEM, f"渠道公钥{why}",
                           f"channel public key: {_WHY_EN[loaded]}", name, field=name)]
    if private is not None and _same(loaded, private.public_key()):
        zh, en = acct.keys.own_label
        return [acct.check("platform_key", Status.PROBLEM, f"这是{zh}自己的公钥，不是渠道的",
                           f"this is the {en}'s own public key, not the channel's", name,
                           field=name)]
    return [acct.check("platform_key", Status.OK, "渠道公钥或证书可用",
                       "channel key or certificate loads", name, field=name,
                       bits=loaded.key_size)]


def _wechat_key_checks(acct: _Account) -> list[Check]:
    out: list[Check] = []
    apiv3 = _text(getattr(acct.cfg, "apiv3_key", None)) or ""
    if len(apiv3.encode("utf-8")) == 32:
        out.append(acct.check("apiv3_key", Status.OK, "APIv3 密钥为 32 字节",
                              "API v3 key is 32 bytes", "apiv3_key"))
    else:
        out.append(acct.check("apiv3_key", Status.PROBLEM, "APIv3 密钥必须为 32 字节",
                              "API v3 key must be 32 bytes", "apiv3_key"))
    key_set = getattr(acct.cfg, "public_key", None) is not None
    key_id = _text(getattr(acct.cfg, "public_key_id", None))
    if key_set != bool(key_id):
        out.append(acct.check("platform_key", Status.PROBLEM,
                              "公钥与公钥 ID 必须同时设置",
                              "public key and its id go together", "public_key_id"))
    elif key_id and not key_id.startswith("PUB_KEY_ID_"):
        out.append(acct.check("platform_key", Status.WARNING, "公钥 ID 不是 PUB_KEY_ID_ 开头",
                              "public key id does not start PUB_KEY_ID_", "public_key_id"))
    # Certificate mode downloads the platform certificates where the settings have the
    # ``verification`` field; before that, it needed a pre-seeded cert_dir.
    if not key_set and not getattr(acct.cfg, "cert_dir", None) \
            and "verification" not in type(acct.cfg).model_fields:
        out.append(acct.check("platform_key", Status.PROBLEM,
                              "未配置微信支付公钥或平台证书目录",
                              "neither public key nor platform certificate dir",
                              "public_key"))
    return out


def _hmac_check(acct: _Account) -> list[Check]:
    key = _text(getattr(acct.cfg, "hmac_key", None)) or ""
    if not key.strip():
        return []          # blank: already a settings problem
    if len(key.encode("utf-8")) < MIN_HMAC_BYTES:
        return [acct.check("hmac_key", Status.WARNING, f"HMAC 密钥短于 {MIN_HMAC_BYTES} 字节",
                           f"HMAC key shorter than {MIN_HMAC_BYTES} bytes", "hmac_key")]
    return [acct.check("hmac_key", Status.OK, "HMAC 密钥长度足够", "HMAC key long enough",
                       "hmac_key")]


# -- certificates ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Cert:
    field: str
    cert: x509.Certificate


def _split_pem_certificates(pem: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    blocks, rest = [], pem
    while "-----BEGIN CERTIFICATE-----" in rest and end in rest:
        start = rest.index("-----BEGIN CERTIFICATE-----")
        stop = rest.index(end, start) + len(end)
        blocks.append(rest[start:stop])
        rest = rest[stop:]
    return blocks


def _certificates(acct: _Account) -> tuple[list[_Cert], list[Check]]:
    """Every certificate any field of the account holds (PEM text or a PEM file), so the
    certificate modes' fields (app, Alipay, root, middle certificates...) are covered as
    they are added; and a problem per block that does not parse."""
    found: list[_Cert] = []
    bad: list[Check] = []
    for name in _fields(acct.cfg):
        if name in acct.unused:
            continue
        raw = _text(getattr(acct.cfg, name, None)) or ""
        if "-----BEGIN" not in raw and not raw.strip().lower().endswith(PEM_SUFFIXES):
            continue
        pem = _pem(acct.cfg, name, acct.setting(name))
        if not pem or "BEGIN CERTIFICATE" not in pem:
            continue
        for block in _split_pem_certificates(pem):
            try:
                found.append(_Cert(name, x509.load_pem_x509_certificate(block.encode())))
            except ValueError:
                bad.append(acct.check("certificate", Status.WARNING,
                                      "文件中有一张证书无法解析",
                                      "a certificate in it does not parse", name))
    return found, bad


def _common_name(cert: x509.Certificate) -> str:
    try:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return ""
    return str(names[0].value) if names else ""


def expiry_check(acct: _Account, name: str, cert: x509.Certificate, now: datetime,
                 warn_days: int, check: str = "certificate") -> Check:
    """Expired or not yet valid: problem; expiring within ``warn_days``: warning."""
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    days = (after - now) // timedelta(days=1)
    facts = {"field": name, "serial": format(cert.serial_number, "X"),
             "subject_cn": _common_name(cert),
             "not_before": before.isoformat(), "expires_at": after.isoformat(),
             "days_left": days}
    day = after.date().isoformat()
    if now > after:
        return acct.check(check, Status.PROBLEM, f"证书已于 {day} 过期",
                          f"certificate expired on {day}", name, **facts)
    if now < before:
        return acct.check(check, Status.PROBLEM, f"证书尚未生效（{before.date()} 起）",
                          f"certificate not valid before {before.date()}", name, **facts)
    if after - now <= timedelta(days=warn_days):
        return acct.check(check, Status.WARNING, f"证书将于 {days} 天后（{day}）过期",
                          f"certificate expires in {days} days ({day})", name, **facts)
    return acct.check(check, Status.OK, f"证书有效至 {day}（{days} 天）",
                      f"certificate valid until {day} ({days} days)", name, **facts)


def certificate_checks(acct: _Account, now: datetime, warn_days: int) -> list[Check]:
    """The expiry of every certificate in the settings and, for WeChat's certificate
    mode, of the platform certificates in ``cert_dir``."""
    certs, out = _certificates(acct)
    out += [expiry_check(acct, c.field, c.cert, now, warn_days) for c in certs]
    cert_dir = _text(getattr(acct.cfg, "cert_dir", None))
    if acct.route == "wechatpay" and cert_dir and "cert_dir" not in acct.unused:
        out.append(_cert_dir_check(acct, Path(cert_dir), now, warn_days))
    return out


def _cert_dir_check(acct: _Account, path: Path, now: datetime, warn_days: int) -> Check:
    """WeChat keeps the currently valid ``*.pem`` of the directory (CH §2.5): the latest to
    expire is the one that matters; expired old ones are history."""
    needed = getattr(acct.cfg, "public_key", None) is None   # certificate mode
    certs: list[x509.Certificate] = []
    if path.is_dir():
        for item in sorted(path.glob("*.pem")):
            try:
                certs.append(x509.load_pem_x509_certificate(item.read_bytes()))
            except (ValueError, OSError):
                continue
    valid = [c for c in certs if c.not_valid_before_utc <= now <= c.not_valid_after_utc]
    if not valid:
        zh = "目录不存在" if not path.is_dir() else "目录中没有当前有效的平台证书"
        en = "no such directory" if not path.is_dir() else "no currently valid certificate"
        return acct.check("cert_dir", Status.PROBLEM if needed else Status.WARNING, zh, en,
                          "cert_dir", certificates=len(certs), valid=0)
    latest = max(valid, key=lambda c: c.not_valid_after_utc)
    check = expiry_check(acct, "cert_dir", latest, now, warn_days, check="cert_dir")
    facts = {**check.facts, "certificates": len(certs), "valid": len(valid)}
    return Check(check.route, check.account, "cert_dir", check.status,
                 f"{len(valid)}/{len(certs)} 张有效；最晚的{check.zh}",
                 f"{len(valid)}/{len(certs)} valid; latest {check.en}", check.setting, facts)


def key_pair_checks(acct: _Account, private: rsa.RSAPrivateKey | None) -> list[Check]:
    """Our key against our certificate where one is configured: the certificate the
    serial setting names (WeChat ``cert_serial_no`` hex, UnionPay ``cert_id`` decimal), or
    a field named as our own certificate (an Alipay app certificate); sign, then verify
    with the certificate's key. With none configured the channel call checks the pair."""
    if private is None or acct.keys.private_key is None:
        return []
    certs, _ = _certificates(acct)
    serial_name = acct.keys.serial
    serial_text = _text(getattr(acct.cfg, serial_name, None)) if serial_name else None
    wanted: int | None = None
    if serial_name and serial_text:
        try:
            wanted = int(serial_text.strip(), acct.keys.serial_base)
        except ValueError:
            return [acct.check("key_pair", Status.PROBLEM, "证书序列号格式不对",
                               "certificate serial is malformed", serial_name)]
    own_public = private.public_key()
    ours = [c for c in certs if _carries(c.cert, own_public)]
    named = [c for c in certs if wanted is not None and c.cert.serial_number == wanted]
    if not named and ours and wanted is not None:
        serial = format(ours[0].cert.serial_number, "X")
        return [acct.check("key_pair", Status.PROBLEM,
                           f"私钥的证书序列号是 {serial}，与设置不符",
                           f"the key's certificate has serial {serial}, not the setting's",
                           serial_name, serial=serial)]
    own_field = [c for c in certs if c.field.endswith(("cert", "certificate"))
                 and any(w in c.field for w in OWN_CERT_WORDS)]
    for candidate in named or own_field or ours:
        public = candidate.cert.public_key()
        serial = format(candidate.cert.serial_number, "X")
        if isinstance(public, rsa.RSAPublicKey) and _signs_for(private, public):
            return [acct.check("key_pair", Status.OK, f"私钥与证书（序列号 {serial}）匹配",
                               f"key matches certificate {serial}", candidate.field,
                               serial=serial)]
        return [acct.check("key_pair", Status.PROBLEM, f"私钥与证书（序列号 {serial}）不匹配",
                           f"key does not match certificate {serial}", candidate.field,
                           serial=serial)]
    return [acct.check("key_pair", Status.OK, "未配置我方证书：由渠道调用验证",
                       "no own certificate configured: checked by the channel call",
                       serial_name)]


def _carries(cert: x509.Certificate, public: rsa.RSAPublicKey) -> bool:
    try:
        key = cert.public_key()
    except ValueError:          # an algorithm cryptography does not know (SM2 roots)
        return False
    return isinstance(key, rsa.RSAPublicKey) and _same(key, public)


def chain_checks(acct: _Account) -> list[Check]:
    """UnionPay's trust by chain (CH §6): the middle certificate is issued by the root.
    (The answer's signing certificate under the middle is checked by the channel call.)"""
    if acct.route != "bankcard" or not (acct.configured("middle_cert")
                                        and acct.configured("root_cert")):
        return []
    certs, _ = _certificates(acct)
    middles = [c.cert for c in certs if c.field == "middle_cert"]
    roots = [c.cert for c in certs if c.field == "root_cert"]
    for middle in middles:
        for root in roots:
            try:
                middle.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return [acct.check("chain", Status.OK, "中级证书由根证书签发",
                               "middle certificate issued by the root", "middle_cert")]
    if not middles or not roots:
        return []      # unreadable: the certificate rows say so
    return [acct.check("chain", Status.PROBLEM, "中级证书不是由所配置的根证书签发",
                       "middle certificate not issued by the configured root",
                       "middle_cert")]


def account_checks(route: str, account: str, cfg: BaseModel, *, now: datetime,
                   warn_days: int = WARN_DAYS) -> list[Check]:
    """Every offline check of one account (no network; reads PEM files and cert_dir)."""
    acct = _Account(route, account, cfg)
    keys, private = key_checks(acct)
    return [*settings_checks(acct), *notify_checks(acct), *keys,
            *key_pair_checks(acct, private), *chain_checks(acct),
            *certificate_checks(acct, now, warn_days)]


def certificate_warnings(settings: GatewaySettings, now: datetime,
                         warn_days: int = WARN_DAYS) -> list[Check]:
    """The certificates of every account that expire within ``warn_days`` or are not
    valid now (the resolver logs these once a day). Never raises on bad settings: the
    doctor and the adapters say what is wrong with those."""
    found: list[Check] = []
    for route in Route:
        try:
            accounts = settings.route_accounts(route.value)
        except ConfigurationError:
            continue
        for name, cfg in accounts.items():
            acct = _Account(route.value, name, cfg)
            found += [c for c in certificate_checks(acct, now, warn_days)
                      if c.status is not Status.OK]
    return found


def log_certificate_warnings(settings: GatewaySettings, now: datetime,
                             warn_days: int = WARN_DAYS) -> int:
    """Log each of ``certificate_warnings`` (``certificate.expiring`` as a warning, a
    certificate not valid now as ``certificate.invalid``, an error); returns how many.
    The fields name the setting, serial and dates, never the certificate itself."""
    found = certificate_warnings(settings, now, warn_days)
    for c in found:
        fields = {"route": c.route, "account": c.account, "setting": c.setting,
                  "detail": c.en, **{k: c.facts[k] for k in ("serial", "expires_at",
                                                            "days_left") if k in c.facts}}
        if c.status is Status.PROBLEM:
            log.error("certificate.invalid", **fields)
        else:
            log.warning("certificate.expiring", **fields)
    return len(found)


# -- the channel call -----------------------------------------------------------------------
_HINTS: Final[Mapping[str, tuple[str, str]]] = {
    "alipay": ("检查 app_id 与应用私钥", "check app_id and the app private key"),
    "wechatpay": ("检查商户号、私钥与证书序列号", "check mchid, key and cert serial"),
    "bankcard": ("检查商户号、签名私钥与 certId", "check merId, signing key and certId"),
    "balance": ("检查 HMAC 密钥", "check the HMAC key"),
}
# Routes whose adapter verifies the channel's signature on the query's answer (WeChat only
# on 2xx answers, CH §0 #4; the wallet signs none).
SIGNED_ANSWERS: Final = frozenset({"alipay", "bankcard"})


def answer_key_setting(route: str, account: str, cfg: BaseModel) -> str | None:
    """The setting that verifies the channel's answers: the first configured of the
    route's channel keys (WeChat: its public key, else the certificate directory)."""
    acct = _Account(route, account, cfg)
    for name in (*acct.keys.platform_keys, "cert_dir"):
        if acct.configured(name):
            return setting_name(route, account, name)
    return None


def probe_refund(route: Route, now: datetime) -> Refund:
    """A refund nobody made: fresh random numbers in every route's formats (UnionPay's
    orderId 8-32 alphanumerics, an Alipay-shaped 28-digit trade_no), created now."""
    tag = secrets.token_hex(10)
    digits = "".join(secrets.choice("0123456789") for _ in range(20))
    payment = Payment(route, f"doctor{tag}", f"{now:%Y%m%d}{digits}", Money(1),
                      user_id="doctor")
    return Refund(id=f"RFDOCTOR{tag.upper()}", idempotency_key=f"doctor-{tag}", route=route,
                  payment=payment, amount=Money(1), reason="", status=RefundStatus.PROCESSING,
                  channel_refund_no=f"doctor{tag}", created_at=now, updated_at=now)


def channel_check(route: Route, account: str, adapter: ChannelAdapter,
                  now: datetime, answer_key: str | None = None) -> Check:
    """Query a refund number nobody used. A verified answer - "not found" - proves the
    channel answers, accepted our signed request and (where it signs the answer) that
    the answer verified with the configured key."""
    def row(status: Status, zh: str, en: str, facts: dict[str, Any],
            setting: str | None = None) -> Check:
        return Check(route.value, account, "channel", status, zh, en, setting, facts)

    started = time.monotonic()
    hint_zh, hint_en = _HINTS.get(route.value, ("检查设置", "check the settings"))
    try:
        result = adapter.query(probe_refund(route, now))
    except ChannelAuthError as exc:
        return row(Status.PROBLEM, f"渠道拒绝了我们的签名或凭据：{hint_zh}",
                   f"channel refused our signature/credentials: {hint_en}",
                   _error_facts(exc, started))
    except OutcomeUnknown as exc:
        if exc.code == "SIGNATURE_INVALID":
            return row(Status.PROBLEM, "渠道应答验签失败：检查渠道公钥或证书",
                       "answer signature does not verify: check the channel key",
                       _error_facts(exc, started), answer_key)
        return row(Status.PROBLEM, "渠道没有给出明确应答",
                   f"no clear answer ({exc.code or type(exc).__name__})",
                   _error_facts(exc, started))
    except ChannelUnavailable as exc:
        return row(Status.PROBLEM, "无法连接渠道", "channel unreachable",
                   _error_facts(exc, started))
    except GatewayError as exc:
        return row(Status.PROBLEM, "查询失败", f"query failed: {type(exc).__name__}",
                   _error_facts(exc, started))
    facts = {"elapsed_ms": _elapsed(started), "answer": result.status.value}
    if route is Route.WECHATPAY:
        # CH §0 #4: WeChat signs 2xx answers only; its 404 proves the request signature.
        return row(Status.OK, "渠道已应答，接受了请求签名（404 应答不签名）",
                   "channel answers, request signature accepted (404 unsigned)", facts)
    if route.value not in SIGNED_ANSWERS:
        return row(Status.OK, "渠道已应答，接受了请求签名",
                   "channel answers, request signature accepted", facts)
    return row(Status.OK, "渠道已应答，应答验签通过",
               "channel answers, answer signature verified", facts)


def _elapsed(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _error_facts(exc: GatewayError, started: float) -> dict[str, Any]:
    facts: dict[str, Any] = {"error": type(exc).__name__, "elapsed_ms": _elapsed(started)}
    for name in ("code", "http_status", "request_id"):
        value = getattr(exc, name, None)
        if value is not None:
            facts[name] = value
    return facts


def _probe_account(route: Route, account: str, settings: GatewaySettings, cfg: BaseModel,
                   clock: Clock, now: datetime) -> Check:
    """Build the account's adapter as the gateway does, and call the channel with it."""
    from gateway.bootstrap import build_account  # noqa: PLC0415 - bootstrap imports service

    try:
        adapter = build_account(settings, route, cfg, clock)
    except ConfigurationError as exc:
        return Check(route.value, account, "channel", Status.PROBLEM, "未检查：适配器无法创建",
                     f"not checked: adapter refused the settings ({exc.message})",
                     exc.setting)
    try:
        return channel_check(route, account, adapter, now,
                             answer_key_setting(route.value, account, cfg))
    finally:
        adapter.close()


# -- the whole run --------------------------------------------------------------------------
def run(settings: GatewaySettings, *, warn_days: int = WARN_DAYS,
        routes: Sequence[str] = (), accounts: Sequence[str] = (), offline: bool = False,
        now: datetime | None = None, clock: Clock = utcnow,
        probe: Callable[[Route, str, GatewaySettings, BaseModel, Clock, datetime], Check]
        | None = None) -> DoctorReport:
    """Check every selected account: offline checks, then (unless ``offline``) one
    channel call per account, run side by side so a dead channel costs one timeout."""
    moment = now or datetime.now(UTC)
    chosen = select_accounts(settings, routes, accounts)
    if not chosen:
        raise ConfigurationError("no route is configured (REFUND_GATEWAY_<ROUTE>__...)")
    offline_checks = {(r, a): account_checks(r.value, a, cfg, now=moment, warn_days=warn_days)
                      for r, a, cfg in chosen}
    calls: dict[tuple[Route, str], Check] = {}
    if not offline:
        call = probe or _probe_account
        with ThreadPoolExecutor(max_workers=min(8, len(chosen))) as pool:
            futures = {(r, a): pool.submit(call, r, a, settings, cfg, clock, moment)
                       for r, a, cfg in chosen}
            calls = {key: f.result() for key, f in futures.items()}
    checks: list[Check] = []
    for route, account, _ in chosen:
        checks += offline_checks[(route, account)]
        if (route, account) in calls:
            checks.append(calls[(route, account)])
    return DoctorReport(moment, warn_days, tuple(checks), offline)
