"""Configuration: one ``GatewaySettings`` read from the environment, ``.env`` and TOML.

Env prefix ``REFUND_GATEWAY_``, nested with ``__`` (``REFUND_GATEWAY_WECHATPAY__MCHID``).
Keys are ``SecretStr`` holding PEM text or a path to a PEM file (``pem_text`` resolves
them). Every network timeout is explicit (wechatpayv3's default is none, CH §0 #12).
Nothing here runs at import time; ``load_settings`` is called by the composition root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigurationError
from gateway.models import Route

DEFAULT_ACCOUNT = "default"
ACCOUNT_NAME = re.compile(r"[a-z0-9_-]{1,32}")


class Timeouts(BaseModel):
    """Seconds. ``connect`` failing proves a request was not sent; ``read`` does not.

    ``read`` bounds each socket read, not the answer; ``deadline`` bounds a whole call
    however slowly its answer trickles (issue 16 #5), past it the outcome is unknown.
    ``download_deadline`` bounds one statement/bill file download. None: the defaults of
    ``gateway.transport`` (connect + read + 2; 600).

    Attributes:
        connect: seconds to make the connection; failing it proves nothing was sent
            (``ChannelUnavailable``, resent at once).
        read: seconds any one socket read may wait (not the whole answer).
        deadline: seconds one channel call may take in all, however slowly the answer
            trickles; past it the call is abandoned as ``OutcomeUnknown``
            (``DEADLINE_EXCEEDED``): queried before any resend. Unset: connect + read + 2.
        download_deadline: the same for one statement or bill file download. Unset: 600.
    """

    connect: float = Field(3.0, gt=0, le=60)
    read: float = Field(10.0, gt=0, le=120)
    deadline: float | None = Field(None, gt=0, le=600)
    download_deadline: float | None = Field(None, gt=0, le=86_400)


class AlipaySettings(BaseModel):
    """Alipay OpenAPI (RSA2, CH §1): the app and the keys.

    Attributes:
        app_id: the Alipay app's id.
        app_private_key: the app's RSA private key (PEM, PKCS#1 or PKCS#8), signs requests.
        alipay_public_key: Alipay's public key (PEM): verifies answers and notifications
            (public-key mode).
        app_cert: the app's public-key certificate (PEM text or a path;
            ``appCertPublicKey_<app_id>.crt``): public-key-certificate mode, with the two
            below instead of ``alipay_public_key`` (CHANNELS-ADDENDUM §5).
        alipay_cert: Alipay's public-key certificate (``alipayCertPublicKey_RSA2.crt``);
            answers naming another ``alipay_cert_sn`` are verified with the certificate
            downloaded for it, trusted through ``alipay_root_cert``.
        alipay_root_cert: Alipay's root certificates (``alipayRootCert.crt``).
        app_auth_token: service-provider (ISV) mode: the authorised merchant's
            ``app_auth_token``, sent with every request.
        gateway_url: the gateway's URL (Alipay's own by default; the sandbox's in its env
            file).
        notify_url: where Alipay sends refund notifications (your endpoint). The sandbox
            points it at its own inbox until you set it.
        sign_type: the signature type: RSA2 only.
        timeouts: this route's timeouts.
        accounts: more merchant accounts of this route, by lower-case name (these
            settings are the account ``default``):
            ``REFUND_GATEWAY_ALIPAY__ACCOUNTS__<NAME>__<FIELD>``.
    """

    app_id: str
    app_private_key: SecretStr
    alipay_public_key: SecretStr | None = None     # public-key mode
    app_cert: str | None = None                    # certificate mode: these three
    alipay_cert: str | None = None
    alipay_root_cert: str | None = None
    app_auth_token: SecretStr | None = None        # ISV: the authorised merchant
    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    notify_url: str | None = None
    sign_type: Literal["RSA2"] = "RSA2"
    timeouts: Timeouts = Timeouts()
    # More merchant accounts of this route, by name (the settings above are the account
    # ``default``): REFUND_GATEWAY_ALIPAY__ACCOUNTS__<NAME>__<FIELD>. Names are lower case.
    accounts: dict[str, AlipaySettings] = Field(default_factory=dict)


class WechatPaySettings(BaseModel):
    """WeChat Pay API v3 (CH §5), public-key mode by default.

    Attributes:
        mchid: the merchant id.
        appid: the app id the payments were made under.
        private_key: the merchant API private key (PEM): signs requests.
        cert_serial_no: the serial number of the merchant API certificate.
        apiv3_key: the API v3 key (32 bytes): decrypts notifications and certificates.
        public_key: WeChat Pay's public key (PEM), public-key mode (CH §0 #3).
        public_key_id: its id (``PUB_KEY_ID_...``), sent as ``Wechatpay-Serial``.
        cert_dir: certificate mode: a directory that keeps the downloaded platform
            certificates (``<SERIAL>.pem``, the SDK's layout) and seeds them at start;
            optional (they are downloaded from ``/v3/certificates`` on first use).
        verification: ``public_key``, ``certificate`` (platform certificates, downloaded
            and refreshed) or ``both`` (a migration: ``Wechatpay-Serial`` picks the key
            or a certificate); unset: ``public_key`` when PUBLIC_KEY is set, else
            ``certificate``.
        certificate_refresh_seconds: how long a certificate download is trusted before
            the next (WeChat: refresh at least every 12 h).
        certificate_retry_seconds: the least time between two downloads after a failed
            one, or for a serial not held (a forged serial cannot force a download per
            request).
        sub_mchid: service-provider mode (服务商): these settings are the provider's
            (``mchid`` = sp_mchid) acting for this sub-merchant: refunds, queries and
            trade bills carry it; notifications must name it.
        base_url: the API's base URL (WeChat's own by default).
        notify_url: where WeChat sends refund notifications (your endpoint). The sandbox
            points it at its own inbox until you set it.
        notification_max_skew_seconds: how far a notification's timestamp may be from
            now before it is refused as stale.
        timeouts: this route's timeouts.
        accounts: more merchant accounts of this route, by lower-case name (these
            settings are the account ``default``):
            ``REFUND_GATEWAY_WECHATPAY__ACCOUNTS__<NAME>__<FIELD>``.
    """

    mchid: str
    appid: str
    private_key: SecretStr
    cert_serial_no: str
    apiv3_key: SecretStr
    public_key: SecretStr | None = None       # public-key mode (default, CH §0 #3)
    public_key_id: str | None = None
    cert_dir: str | None = None               # certificate mode: kept certificates
    verification: Literal["public_key", "certificate", "both"] | None = None
    certificate_refresh_seconds: int = Field(43_200, ge=60, le=172_800)   # addendum §3
    certificate_retry_seconds: float = Field(60.0, ge=0, le=3600)
    sub_mchid: str | None = Field(None, pattern=r"^[0-9]{6,32}$")    # partner mode
    base_url: str = "https://api.mch.weixin.qq.com"
    notify_url: str | None = None
    notification_max_skew_seconds: int = Field(300, gt=0, le=3600)
    timeouts: Timeouts = Timeouts()
    # More merchant accounts of this route, by name (the settings above are the account
    # ``default``): REFUND_GATEWAY_WECHATPAY__ACCOUNTS__<NAME>__<FIELD>. Names are lower case.
    accounts: dict[str, WechatPaySettings] = Field(default_factory=dict)


class BankcardSettings(BaseModel):
    """UnionPay online gateway 5.1.0 (CH §6): the merchant and the keys.

    Attributes:
        mer_id: the UnionPay merchant id (``merId``).
        private_key: the merchant's signing key (PEM), from its PFX certificate.
        cert_id: the serial number of the merchant's signing certificate (``certId``).
        unionpay_public_key: UnionPay's signing certificate or public key (PEM): the
            pin, read only with ``trust = "pin"``.
        middle_cert: UnionPay's middle certificate (PEM text or a path;
            acpsdk.middleCert): answers and back notifications are trusted by their
            ``signPubKeyCert`` chaining to it and ``root_cert`` (CH §6).
        root_cert: UnionPay's root certificate (PEM text or a path; acpsdk.rootCert).
        trust: ``chain`` (default): trust any signing certificate UnionPay issues from
            ``middle_cert`` under ``root_cert`` whose CN names UnionPay, so its rotation
            needs no change here; ``pin``: only the key of ``unionpay_public_key``.
        validate_cn_name: the CN rule of ``chain``: true (production) accepts only
            中国银联股份有限公司; false (UnionPay's test environment, the sandbox) also
            ``00040000:SIGN`` (acpsdk.ifValidateCNName).
        base_url: the gateway's base URL (UnionPay's own by default).
        file_trans_url: the settlement-file host; unset: UnionPay's, derived from
            ``base_url`` (CHANNELS-ADDENDUM §1).
        back_url: where UnionPay sends back notifications (``backUrl``, mandatory on a
            refund). The sandbox points it at its own inbox until you set it.
        channel_type: UnionPay's ``channelType`` (07 internet, 08 mobile).
        timeouts: this route's timeouts.
        accounts: more merchant accounts of this route, by lower-case name (these
            settings are the account ``default``):
            ``REFUND_GATEWAY_BANKCARD__ACCOUNTS__<NAME>__<FIELD>``.
    """

    mer_id: str
    private_key: SecretStr
    cert_id: str
    unionpay_public_key: SecretStr | None = None   # PEM public key or certificate (pin)
    middle_cert: str | None = None
    root_cert: str | None = None
    trust: Literal["chain", "pin"] = "chain"
    validate_cn_name: bool = True
    base_url: str = "https://gateway.95516.com"
    # The file transfer's own host (CHANNELS-ADDENDUM §1); None: UnionPay's, derived from
    # base_url for gateway(.test).95516.com (adapters/bankcard/files.py).
    file_trans_url: str | None = None
    back_url: str | None = None
    channel_type: str = "07"
    timeouts: Timeouts = Timeouts()
    # More merchant accounts of this route, by name (the settings above are the account
    # ``default``): REFUND_GATEWAY_BANKCARD__ACCOUNTS__<NAME>__<FIELD>. Names are lower case.
    accounts: dict[str, BankcardSettings] = Field(default_factory=dict)


class BalanceSettings(BaseModel):
    """The platform wallet service (the balance route); it credits ``Payment.user_id``.

    Attributes:
        base_url: the wallet service's base URL.
        hmac_key: the HMAC-SHA256 key requests are signed with.
        timeouts: this route's timeouts (shorter: the wallet is in-house).
        accounts: more merchant accounts of this route, by lower-case name (these
            settings are the account ``default``):
            ``REFUND_GATEWAY_BALANCE__ACCOUNTS__<NAME>__<FIELD>``.
    """

    base_url: str
    hmac_key: SecretStr
    timeouts: Timeouts = Timeouts(connect=1.0, read=5.0)
    # More merchant accounts of this route, by name (the settings above are the account
    # ``default``): REFUND_GATEWAY_BALANCE__ACCOUNTS__<NAME>__<FIELD>. Names are lower case.
    accounts: dict[str, BalanceSettings] = Field(default_factory=dict)


class RetrySettings(BaseModel):
    """Inline retries of a submit for provably-unsent calls (ChannelUnavailable).

    Attributes:
        max_attempts: tries of one submit in all (1: no inline resend).
        initial_backoff: seconds before the first resend (then doubling, jittered).
        max_backoff: the longest wait between two tries.
        max_total_seconds: the most time spent on one submit's tries.
    """

    max_attempts: int = Field(3, ge=1, le=10)
    initial_backoff: float = Field(0.2, ge=0, le=10)
    max_backoff: float = Field(2.0, ge=0, le=60)
    max_total_seconds: float = Field(15.0, gt=0, le=300)


class AccountLimits(BaseModel):
    """How hard the resolver drives one merchant account of a route.

    Attributes:
        calls_per_second: channel calls per second at most (queries and resends
            together); unset: no limit until the channel answers "too many requests",
            then the rate it was sending at, cut and grown back.
        max_in_flight: the account's refunds checked at once; unset: the resolver's
            ``concurrency``.
    """

    calls_per_second: float | None = Field(None, gt=0, le=100_000)
    max_in_flight: int | None = Field(None, ge=1, le=1024)


class ChannelLimits(AccountLimits):
    """A route's resolver limits; each merchant account of the route gets them on its own
    (a channel limits each merchant: WeChat per mchid).

    Attributes:
        calls_per_second: channel calls per second at most, per account (queries and
            resends together); unset: no limit until the channel answers "too many
            requests", then the rate it was sending at, cut and grown back.
        max_in_flight: an account's refunds checked at once; unset: the resolver's
            ``concurrency``.
        accounts: one account's own limits, by account name
            (``REFUND_GATEWAY_RESOLVER__LIMITS__<ROUTE>__ACCOUNTS__<NAME>__<FIELD>``);
            what is unset there is the route's.
    """

    accounts: dict[str, AccountLimits] = Field(default_factory=dict)


class WechatPayLimits(ChannelLimits):
    """WeChat Pay's resolver limits: 150 calls/s per merchant by default.

    Attributes:
        calls_per_second: channel calls per second at most, per merchant account
            (default 150: about what WeChat lets one merchant send).
        max_in_flight: an account's refunds checked at once; unset: the resolver's
            ``concurrency``.
        accounts: one account's own limits, by account name; what is unset there is
            the route's.
    """

    calls_per_second: float | None = Field(150.0, gt=0, le=100_000)


class RouteLimits(BaseModel):
    """The resolver's limits per route (``REFUND_GATEWAY_RESOLVER__LIMITS__<ROUTE>__...``).

    Attributes:
        alipay: Alipay's (no rate by default: cut when Alipay says isv.app-call-limited).
        wechatpay: WeChat Pay's (150 calls/s per merchant account).
        bankcard: UnionPay's (no rate by default: cut on 37 过于频繁).
        balance: the wallet service's (no rate by default: cut on 429).
    """

    alipay: ChannelLimits = Field(default_factory=ChannelLimits)
    wechatpay: WechatPayLimits = Field(default_factory=WechatPayLimits)
    bankcard: ChannelLimits = Field(default_factory=ChannelLimits)
    balance: ChannelLimits = Field(default_factory=ChannelLimits)


class ResolverSettings(BaseModel):
    """The resolver (``refund-gateway resolve``, ``RefundGateway.resolve_due``).

    Attributes:
        first_check_seconds: seconds after an unknown outcome before the first query
            (Alipay: at least 10 s after the refund call).
        lease_seconds: how long refunds claimed by one resolver are hidden from others.
        batch_size: refunds claimed per cycle (enough for a few seconds of calls at the
            rate limit, so the end of a batch, waiting on its slowest call, is a small
            share of the cycle).
        concurrency: refunds one resolver process checks at once, over all routes and
            accounts (``refund-gateway resolve --concurrency N``); 1: one at a time.
        limits: calls per second and refunds in flight, per route and merchant account.
    """

    first_check_seconds: int = Field(10, ge=0, le=60)   # Alipay: query >= 10 s after refund
    lease_seconds: int = Field(120, ge=5, le=3600)      # claimed refunds hidden from peers
    batch_size: int = Field(500, ge=1, le=10_000)
    concurrency: int = Field(64, ge=1, le=1024)
    limits: RouteLimits = Field(default_factory=RouteLimits)

    def limits_for(self, route: str, account: str) -> AccountLimits:
        """The limits of one route's merchant account: the account's own fields where
        set, else the route's."""
        base: ChannelLimits = getattr(self.limits, route)
        merged = AccountLimits(calls_per_second=base.calls_per_second,
                               max_in_flight=base.max_in_flight)
        own = base.accounts.get(account)
        if own is not None:
            merged = merged.model_copy(update=own.model_dump(include=own.model_fields_set))
        return merged


class ReceiptSettings(BaseModel):
    """Transfer receipts (``reconciliation.receipts``). New receipts are signed with
    ``signing_key`` (Ed25519, PEM PKCS#8 text or a path to one) under ``key_id`` (default:
    derived from its public key). Keys rotate: ``public_keys`` maps the ids of earlier
    signing keys to their public keys (PEM, or the 32 raw bytes in base64, as
    ``receipt keys`` publishes them), so what they signed keeps verifying. ``hmac_key``
    only verifies receipts issued before Ed25519 (HMAC-SHA256); it signs nothing new.

    Attributes:
        signing_key: the Ed25519 private key new receipts are signed with.
        key_id: the id printed with the signature (default: derived from the key).
        public_keys: earlier keys' ids -> public keys, so their receipts keep verifying.
        hmac_key: verifies receipts issued before Ed25519 (signs nothing new).
        platform_name: the issuer's name printed on receipts.
    """

    signing_key: SecretStr | None = None
    key_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    public_keys: dict[str, str] = Field(default_factory=dict)
    hmac_key: SecretStr | None = None
    platform_name: str = "refund-gateway"


class GatewaySettings(BaseSettings):
    """All settings: environment ``REFUND_GATEWAY_...`` (nested with ``__``), ``.env``
    (or the file given to ``load_settings``), then TOML at ``REFUND_GATEWAY_CONFIG_FILE``.

    Attributes:
        database_url: the store: ``sqlite:///refund-gateway.db`` (a file in the working
            directory) or ``postgresql+psycopg://user@host/db`` (several processes;
            ``pip install 'refund-gateway[postgres]'``).
        auto_migrate: create or migrate the schema on first use; false: a schema that
            is not current is a ``ConfigurationError`` (run ``refund-gateway db upgrade``).
        sync_every_outcome: commit every outcome record with a full sync, not only
            reservations and final outcomes (README "Durability").
        database_lock_timeout: SQLite: seconds a write waits for the file's write lock
            before ``StoreUnavailable``.
        database_pool_size: database connections one process keeps open (as many
            again may be opened under load): about the threads that call the gateway at
            once, e.g. the refund service's workers or ``resolve --concurrency``.
        notification_group_max: at most this many concurrent notifications share one
            commit (group commit of a web worker's threads); 1: a commit each.
        holiday_schedule: a TOML file of the State Council's holiday notice for years the
            package lacks (``[YYYY]`` with ``holidays`` and ``workdays``); years covered
            by neither count Monday to Friday, flagged approximate.
        log_format: ``json``, ``console``, or ``auto`` (console on a terminal).
        log_level: the log level (``INFO``, ``WARNING``, ...).
        retry: inline resends of provably-unsent submits.
        resolver: the resolver's cadence, concurrency and rate limits.
        events_retention_days: how long outbox events are kept; ``refund-gateway events
            prune`` deletes older ones that every consumer has read.
        receipts: transfer receipts' keys.
        alipay: the Alipay route; unset: disabled.
        wechatpay: the WeChat Pay route; unset: disabled.
        bankcard: the bank-card (UnionPay) route; unset: disabled.
        balance: the platform-balance route; unset: disabled.
    """

    model_config = SettingsConfigDict(
        env_prefix="REFUND_GATEWAY_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = "sqlite:///refund-gateway.db"
    auto_migrate: bool = True
    # Commit every outcome record with a full sync, not only reservations and refusals
    # (README, "Durability"); costs one more fsync per refund and per notification.
    sync_every_outcome: bool = False
    # The State Council's holiday notice for years the chinese-calendar package does not
    # have yet (or to override it): a TOML file, one [YYYY] table of ``holidays`` and
    # ``workdays`` (gateway.calendar.load_schedule). Years covered by neither are counted
    # Monday to Friday, with a warning, and estimates are flagged approximate.
    holiday_schedule: str | None = None
    # SQLite: the longest a write waits for the file's write lock (queue and BEGIN
    # IMMEDIATE together) before StoreUnavailable; also the busy timeout of reads.
    database_lock_timeout: float = Field(30.0, gt=0, le=600)
    # Connections a process keeps (and as many again under load): too few and threads
    # wait for one, or open and close a new connection per refund.
    database_pool_size: int = Field(5, ge=1, le=500)
    # Concurrent handle_notification calls share a commit, up to this many (no waiting
    # for a timer: a lone notification commits at once).
    notification_group_max: int = Field(256, ge=1, le=10_000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    retry: RetrySettings = RetrySettings()
    resolver: ResolverSettings = ResolverSettings()
    # Outbox events older than this are pruned by `refund-gateway events prune`, never
    # before every consumer has read them.
    events_retention_days: int = Field(30, ge=1, le=3650)
    receipts: ReceiptSettings = ReceiptSettings()
    alipay: AlipaySettings | None = None
    wechatpay: WechatPaySettings | None = None
    bankcard: BankcardSettings | None = None
    balance: BalanceSettings | None = None

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql", "mysql", "mariadb")):
            raise ValueError("database_url must be sqlite:///PATH, "
                             "postgresql+psycopg://... or mysql+pymysql://...")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The order settings are read in (pydantic-settings hook): keyword arguments,
        the environment, the env file, then ``REFUND_GATEWAY_CONFIG_FILE``'s TOML."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings,
                                                     dotenv_settings]
        toml_path = os.environ.get("REFUND_GATEWAY_CONFIG_FILE")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        sources.append(file_secret_settings)
        return tuple(sources)

    def route_settings(self, route: str) -> BaseModel | None:
        """The settings of ``route`` (a ``Route`` value); None when it is not enabled."""
        value = getattr(self, route, None)
        return value if isinstance(value, BaseModel) else None

    def route_accounts(self, route: str) -> dict[str, BaseModel]:
        """Every merchant account of ``route`` by name: ``default`` (the route's own
        settings) and its named ``accounts``; empty when the route is not enabled."""
        top = self.route_settings(route)
        if top is None:
            return {}
        named: dict[str, BaseModel] = getattr(top, "accounts", {}) or {}
        accounts: dict[str, BaseModel] = {DEFAULT_ACCOUNT: top.model_copy(update={"accounts": {}})}
        for name, account in named.items():
            key = name.lower()
            if key == DEFAULT_ACCOUNT or not ACCOUNT_NAME.fullmatch(key):
                raise ConfigurationError(
                    f"merchant account name {name!r} of {route}: 1-32 of [a-z0-9_-], not "
                    f"{DEFAULT_ACCOUNT!r}", setting=f"REFUND_GATEWAY_{route.upper()}__ACCOUNTS")
            accounts[key] = account
        return accounts


def select_accounts(settings: GatewaySettings, routes: Sequence[str] = (),
                    accounts: Sequence[str] = ()) -> list[tuple[Route, str, BaseModel]]:
    """The merchant accounts (route, name, the account's route settings) of ``routes``
    (every configured route when empty) named in ``accounts`` (all when empty), in route
    order, ``default`` first. ``ConfigurationError`` when a route asked for has no
    settings, or an account asked for is configured on none of them (the message lists
    the configured ones). Empty when nothing is configured: the caller says what that
    means for it."""
    configured: dict[Route, dict[str, BaseModel]] = {}
    for route in Route:
        if routes and route.value not in routes:
            continue
        found = settings.route_accounts(route.value)
        if routes and not found:
            raise ConfigurationError(f"route {route.value} has no settings",
                                     setting=f"REFUND_GATEWAY_{route.value.upper()}")
        if found:
            configured[route] = found
    missing = sorted(set(accounts) - {n for names in configured.values() for n in names})
    if missing:
        listed = "; ".join(f"{r.value}: {', '.join(names)}" for r, names in configured.items())
        raise ConfigurationError(
            f"no merchant account {', '.join(missing)} is configured on "
            f"{', '.join(routes) if routes else 'any route'} (configured: {listed or 'none'})")
    return [(route, name, cfg) for route, names in configured.items()
            for name, cfg in names.items() if not accounts or name in accounts]


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> GatewaySettings:
    """Read settings; a ``ConfigurationError`` names each bad setting (never its value)."""
    try:
        if env_file is not None:
            if not Path(env_file).is_file():
                raise ConfigurationError(f"settings file not found: {env_file}",
                                         setting="env_file")
            return GatewaySettings(_env_file=str(env_file), **overrides)
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "__".join(str(p) for p in err["loc"]).upper()
            problems.append(f"REFUND_GATEWAY_{loc}: {err['msg']}")
        first = problems[0].split(":")[0] if problems else None
        raise ConfigurationError("invalid settings: " + "; ".join(problems),
                                 setting=first) from None


def pem_text(secret: SecretStr, setting: str) -> str:
    """PEM text from a setting holding either the PEM itself or a path to a PEM file.

    Accepts ``\\n``-escaped PEM as written into env files by the sandbox.
    """
    value = secret.get_secret_value().strip()
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n") + ("\n" if not value.endswith("\n") else "")
    path = Path(value).expanduser()
    if value and len(value) < 4096 and path.is_file():
        text = path.read_text(encoding="utf-8")
        if "-----BEGIN" not in text:
            raise ConfigurationError(f"{setting}: file does not hold a PEM block",
                                     setting=setting)
        return text
    raise ConfigurationError(f"{setting}: neither PEM text nor a readable PEM file",
                             setting=setting)
