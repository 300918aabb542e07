"""The doctor's offline checks, one account's settings at a time, and the resolver's daily
certificate look (issue 19): no network here; the channel call is tested against the
sandbox in tests/integration/doctor."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, SecretStr
from structlog.testing import capture_logs

from gateway import doctor
from gateway.doctor import Check, DoctorReport, Status
from gateway.resolver import CERTIFICATE_CHECK_SECONDS, run_loop
from gateway.service import RefundGateway, ResolveReport
from gateway.settings import (
    AlipaySettings,
    BalanceSettings,
    GatewaySettings,
    WechatPaySettings,
)

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="module")
def ours() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def theirs() -> rsa.RSAPrivateKey:
    return rsa_key()


def private_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> str:
    encryption: Any = (serialization.BestAvailableEncryption(password) if password
                       else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def certificate(key: rsa.RSAPrivateKey, *, days: float, serial: int = 0x1A2B3C,
                start_days_ago: float = 1, name: str = "Doctor Test") -> str:
    """A self-signed certificate for ``key`` valid from ``start_days_ago`` before NOW
    until ``days`` after NOW (negative: already expired)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW - timedelta(days=start_days_ago))
            .not_valid_after(NOW + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def wechat(ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey, **changes: Any
           ) -> WechatPaySettings:
    fields: dict[str, Any] = dict(
        mchid="1230000109", appid="wx0000000000000001", private_key=private_pem(ours),
        cert_serial_no="1A2B3C", apiv3_key="k" * 32, public_key=public_pem(theirs),
        public_key_id="PUB_KEY_ID_0114232134912410000000000000",
        base_url="https://api.mch.weixin.qq.com",
        notify_url="https://shop.example.com/notify/wechatpay")
    fields.update(changes)
    return WechatPaySettings(**fields)


def alipay(ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey, **changes: Any
           ) -> AlipaySettings:
    fields: dict[str, Any] = dict(app_id="2021000000000001", app_private_key=private_pem(ours),
                                  alipay_public_key=public_pem(theirs))
    fields.update(changes)
    return AlipaySettings(**fields)


def checks(route: str, cfg: BaseModel, name: str | None = None, *, account: str = "default",
           warn_days: int = 30) -> list[Check]:
    found = doctor.account_checks(route, account, cfg, now=NOW, warn_days=warn_days)
    return [c for c in found if name is None or c.check == name]


def only(route: str, cfg: BaseModel, name: str, **kwargs: Any) -> Check:
    found = checks(route, cfg, name, **kwargs)
    assert len(found) == 1, found
    return found[0]


# -- settings and notify URLs ------------------------------------------------------------
def test_a_complete_wechat_account_is_ok_in_every_offline_check(ours: rsa.RSAPrivateKey,
                                                                theirs: rsa.RSAPrivateKey
                                                                ) -> None:
    found = checks("wechatpay", wechat(ours, theirs))
    assert {c.check for c in found} >= {"settings", "notify_url", "private_key",
                                        "platform_key", "apiv3_key", "key_pair"}
    assert [c for c in found if c.status is not Status.OK] == []


def test_a_blank_required_setting_is_a_problem_naming_the_variable(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    found = checks("wechatpay", wechat(ours, theirs, mchid="  "), "settings",
                   account="shop2")
    assert [(c.status, c.setting) for c in found] == [
        (Status.PROBLEM, "REFUND_GATEWAY_WECHATPAY__ACCOUNTS__SHOP2__MCHID")]


@pytest.mark.parametrize(("url", "status", "words"), [
    ("http://127.0.0.1:8765/_sandbox/inbox/wechatpay", Status.WARNING, "sandbox's inbox"),
    ("https://shop.example.com/notify?shop=2", Status.PROBLEM, "query string"),
    ("http://localhost:8000/notify/wechatpay", Status.PROBLEM, "loopback"),
    ("http://shop.example.com/notify/wechatpay", Status.WARNING, "not HTTPS"),
    ("ftp://shop.example.com/notify", Status.PROBLEM, "not an http(s) URL"),
    (None, Status.WARNING, "merchant platform"),
    ("https://shop.example.com/notify/wechatpay", Status.OK, "set"),
])
def test_the_wechat_notify_url(ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey,
                               url: str | None, status: Status, words: str) -> None:
    check = only("wechatpay", wechat(ours, theirs, notify_url=url), "notify_url")
    assert (check.status, check.setting) == (status, "REFUND_GATEWAY_WECHATPAY__NOTIFY_URL")
    assert words in check.en


def test_a_loopback_notify_url_is_fine_when_the_channel_is_local_too(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    cfg = wechat(ours, theirs, base_url="http://127.0.0.1:8765",
                 notify_url="http://127.0.0.1:9000/notify/wechatpay")
    assert only("wechatpay", cfg, "notify_url").status is Status.OK


def test_alipay_without_notify_url_is_ok_and_says_why(ours: rsa.RSAPrivateKey,
                                                      theirs: rsa.RSAPrivateKey) -> None:
    check = only("alipay", alipay(ours, theirs), "notify_url")
    assert check.status is Status.OK
    assert "payment's notify_url" in check.en


def test_unionpay_needs_its_back_url() -> None:
    class Bankcard(BaseModel):
        mer_id: str = "777290058110048"
        back_url: str | None = None
        base_url: str = "https://gateway.95516.com"

    check = only("bankcard", Bankcard(), "notify_url")
    assert (check.status, check.setting) == (Status.PROBLEM,
                                             "REFUND_GATEWAY_BANKCARD__BACK_URL")


# -- keys ---------------------------------------------------------------------------------
def test_a_key_that_does_not_parse_is_a_problem_and_never_shown(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nTUlJRXZnSUJBREFOQmdrcWhraUc5dzBC\n" \
             "-----END PRIVATE KEY-----\n"
    found = checks("wechatpay", wechat(ours, theirs, private_key=broken))
    key = next(c for c in found if c.check == "private_key")
    assert (key.status, key.setting) == (Status.PROBLEM,
                                         "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY")
    assert "does not parse" in key.en
    assert not any("TUlJRXZn" in c.detail or "TUlJRXZn" in str(c.facts) for c in found)


def test_an_encrypted_key_says_so(ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    cfg = alipay(ours, theirs, app_private_key=private_pem(ours, b"secret"))
    check = only("alipay", cfg, "private_key")
    assert check.status is Status.PROBLEM
    assert "encrypted" in check.en


def test_a_short_rsa_key_is_a_problem(theirs: rsa.RSAPrivateKey) -> None:
    check = only("alipay", alipay(rsa_key(1024), theirs), "private_key")
    assert check.status is Status.PROBLEM
    assert check.facts["bits"] == 1024


def test_a_key_given_as_a_path_is_read(tmp_path: Path, ours: rsa.RSAPrivateKey,
                                       theirs: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "app_private_key.pem"
    path.write_text(private_pem(ours))
    assert only("alipay", alipay(ours, theirs, app_private_key=str(path)),
                "private_key").status is Status.OK
    missing = alipay(ours, theirs, app_private_key=str(tmp_path / "nope.pem"))
    assert only("alipay", missing, "private_key").status is Status.PROBLEM


def test_our_own_public_key_in_place_of_the_channels_is_a_problem(
        ours: rsa.RSAPrivateKey) -> None:
    """The Alipay console shows the app's public key beside Alipay's: pasting the wrong
    one makes every answer unverifiable."""
    check = only("alipay", alipay(ours, ours), "platform_key")
    assert (check.status, check.setting) == (Status.PROBLEM,
                                             "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY")
    assert "app's own public key" in check.en


def test_the_wechat_api_v3_key_must_be_32_bytes(ours: rsa.RSAPrivateKey,
                                                theirs: rsa.RSAPrivateKey) -> None:
    assert only("wechatpay", wechat(ours, theirs, apiv3_key="short"),
                "apiv3_key").status is Status.PROBLEM


def test_a_short_hmac_key_is_a_warning() -> None:
    short = BalanceSettings(base_url="https://wallet.internal", hmac_key="x" * 16)
    long = BalanceSettings(base_url="https://wallet.internal", hmac_key="x" * 64)
    assert only("balance", short, "hmac_key").status is Status.WARNING
    assert only("balance", long, "hmac_key").status is Status.OK


class AlipayCertMode(BaseModel):
    """An account in Alipay's public-key-certificate mode (CHANNELS-ADDENDUM §5)."""

    app_id: str = "2021000000000001"
    app_private_key: SecretStr
    app_cert: str | None = None
    alipay_cert: str | None = None
    alipay_root_cert: str | None = None
    alipay_public_key: SecretStr | None = None


def test_the_app_key_is_signed_with_and_verified_against_the_app_certificate(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    good = AlipayCertMode(app_private_key=SecretStr(private_pem(ours)),
                          app_cert=certificate(ours, days=365),
                          alipay_cert=certificate(theirs, days=365))
    check = only("alipay", good, "key_pair")
    assert (check.status, check.setting) == (Status.OK, "REFUND_GATEWAY_ALIPAY__APP_CERT")
    swapped = AlipayCertMode(app_private_key=SecretStr(private_pem(ours)),
                             app_cert=certificate(theirs, days=365),
                             alipay_cert=certificate(theirs, days=365))
    assert only("alipay", swapped, "key_pair").status is Status.PROBLEM


class WechatWithMerchantCert(BaseModel):
    mchid: str = "1230000109"
    private_key: SecretStr
    cert_serial_no: str
    merchant_cert: str


def test_the_serial_setting_names_the_certificate_of_our_key(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    key = SecretStr(private_pem(ours))
    mine = certificate(ours, days=365, serial=0x5E1A1)
    good = WechatWithMerchantCert(private_key=key, cert_serial_no="5E1A1",
                                  merchant_cert=mine)
    assert only("wechatpay", good, "key_pair").status is Status.OK
    wrong_serial = WechatWithMerchantCert(private_key=key, cert_serial_no="ABCDEF",
                                          merchant_cert=mine)
    check = only("wechatpay", wrong_serial, "key_pair")
    assert (check.status, check.facts["serial"]) == (Status.PROBLEM, "5E1A1")
    other_key = WechatWithMerchantCert(private_key=key, cert_serial_no="5E1A1",
                                       merchant_cert=certificate(theirs, days=365,
                                                                 serial=0x5E1A1))
    assert only("wechatpay", other_key, "key_pair").status is Status.PROBLEM


# -- certificates -------------------------------------------------------------------------
@pytest.mark.parametrize(("days", "start", "status", "words"), [
    (5, 1, Status.WARNING, "expires in 5 days"),
    (-2, 400, Status.PROBLEM, "expired on"),
    (400, -3, Status.PROBLEM, "not valid before"),
    (90, 1, Status.OK, "valid until"),
])
def test_certificate_expiry(ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey, days: float,
                            start: float, status: Status, words: str) -> None:
    cfg = wechat(ours, theirs, public_key=certificate(theirs, days=days, start_days_ago=start))
    check = only("wechatpay", cfg, "certificate")
    assert (check.status, check.setting) == (status, "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY")
    assert words in check.en
    assert check.label == "certificate:public_key"


def test_warn_days_moves_the_threshold(ours: rsa.RSAPrivateKey,
                                       theirs: rsa.RSAPrivateKey) -> None:
    cfg = wechat(ours, theirs, public_key=certificate(theirs, days=45))
    assert only("wechatpay", cfg, "certificate").status is Status.OK
    assert only("wechatpay", cfg, "certificate", warn_days=60).status is Status.WARNING


def test_every_certificate_of_a_bundle_is_checked(ours: rsa.RSAPrivateKey,
                                                  theirs: rsa.RSAPrivateKey) -> None:
    bundle = certificate(theirs, days=3000, name="Root") + certificate(ours, days=3,
                                                                       name="Old root")
    cfg = AlipayCertMode(app_private_key=SecretStr(private_pem(ours)),
                         alipay_cert=certificate(theirs, days=365), alipay_root_cert=bundle)
    roots = [c for c in checks("alipay", cfg, "certificate")
             if c.setting == "REFUND_GATEWAY_ALIPAY__ALIPAY_ROOT_CERT"]
    assert sorted((c.facts["subject_cn"], c.status) for c in roots) == [
        ("Old root", Status.WARNING), ("Root", Status.OK)]


def test_the_wechat_certificate_directory(tmp_path: Path, ours: rsa.RSAPrivateKey,
                                          theirs: rsa.RSAPrivateKey) -> None:
    (tmp_path / "OLD.pem").write_text(certificate(theirs, days=-10, start_days_ago=900))
    (tmp_path / "NEW.pem").write_text(certificate(theirs, days=6))
    cfg = wechat(ours, theirs, public_key=None, public_key_id=None, cert_dir=str(tmp_path))
    check = only("wechatpay", cfg, "cert_dir")
    assert check.status is Status.WARNING
    assert (check.facts["certificates"], check.facts["valid"]) == (2, 1)
    (tmp_path / "NEW.pem").unlink()
    assert only("wechatpay", cfg, "cert_dir").status is Status.PROBLEM


def test_certificate_warnings_cover_every_account_and_only_the_unwell(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    soon = wechat(ours, theirs, public_key=certificate(theirs, days=5))
    fine = wechat(ours, theirs, public_key=certificate(theirs, days=300))
    settings = GatewaySettings(wechatpay=fine.model_copy(update={"accounts": {"shop2": soon}}))
    found = doctor.certificate_warnings(settings, NOW)
    assert [(c.account, c.status, c.setting) for c in found] == [
        ("shop2", Status.WARNING, "REFUND_GATEWAY_WECHATPAY__ACCOUNTS__SHOP2__PUBLIC_KEY")]
    assert doctor.certificate_warnings(settings, NOW, warn_days=2) == []


# -- the report ---------------------------------------------------------------------------
def report(*statuses: Status) -> DoctorReport:
    return DoctorReport(NOW, 30, tuple(
        Check("wechatpay", f"a{i}", "settings", s, "中文说明", "english words")
        for i, s in enumerate(statuses)))


def test_exit_codes_and_the_worst_status() -> None:
    assert (report().status, report().exit_code) == (Status.OK, 0)
    assert (report(Status.OK, Status.WARNING).status, report(Status.WARNING).exit_code) == \
        (Status.WARNING, 0)
    assert report(Status.WARNING, Status.PROBLEM, Status.OK).exit_code == 1


def test_the_json_document() -> None:
    doc = report(Status.OK, Status.PROBLEM).as_json()
    assert doc["schema"] == "refund-gateway/cli/doctor/v1"
    assert (doc["status"], doc["exit_code"]) == ("problem", 1)
    assert doc["summary"] == {"ok": 1, "warning": 0, "problem": 1}
    assert doc["accounts"][1] == {"route": "wechatpay", "account": "a1", "status": "problem"}
    assert doc["checks"][0]["detail"] == "中文说明 / english words"


def test_the_table_aligns_chinese_text() -> None:
    table = DoctorReport(NOW, 30, (
        Check("wechatpay", "默认账户", "settings", Status.OK, "齐全", "complete"),
        Check("alipay", "shop2", "notify_url", Status.WARNING, "收件箱", "inbox"),
    )).table().splitlines()
    # the status column starts at the same display column on every row
    starts = [doctor._width(line[:line.index(word)])
              for line, word in zip(table[2:4], ("ok", "warning"), strict=True)]
    assert starts[0] == starts[1]
    assert table[-1] == "2 accounts: 1 ok, 1 warnings, 0 problems -> warning"


# -- the resolver's daily look ------------------------------------------------------------
class IdleGateway:
    """A gateway with nothing due; stops the loop after ``cycles`` cycles."""

    def __init__(self, stop: threading.Event, cycles: int, tick: Callable[[], None]) -> None:
        self.stop, self.left, self.tick = stop, cycles, tick

    def resolve_due(self, limit: int | None = None, *, stop: Any = None) -> ResolveReport:
        self.tick()
        self.left -= 1
        if self.left <= 0:
            self.stop.set()
        return ResolveReport(claimed=0, changed=0, resent=0, errors=0, final=0)


def test_the_resolver_logs_an_expiring_certificate_once_a_day(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    settings = GatewaySettings(wechatpay=wechat(ours, theirs,
                                                public_key=certificate(theirs, days=5)))
    mono = [0.0]

    def hour() -> None:        # every cycle takes an hour of the monotonic clock
        mono[0] += 3600

    stop = threading.Event()
    gw = cast(RefundGateway, IdleGateway(stop, cycles=50, tick=hour))
    with capture_logs() as logs:
        run_loop(gw, interval=0, stop=stop, settings=settings,
                 wall=NOW.timestamp, monotonic=lambda: mono[0])
    expiring = [e for e in logs if e["event"] == "certificate.expiring"]
    # 50 hours: at start, after 24 h and after 48 h
    assert len(expiring) == 3 == 1 + int(50 * 3600 // CERTIFICATE_CHECK_SECONDS)
    assert expiring[0]["log_level"] == "warning"
    assert expiring[0]["setting"] == "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY"
    assert expiring[0]["days_left"] == 5
    assert "BEGIN" not in str(expiring)


def test_the_resolver_without_settings_or_with_healthy_ones_logs_nothing(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey) -> None:
    healthy = GatewaySettings(wechatpay=wechat(ours, theirs,
                                               public_key=certificate(theirs, days=300)))
    for settings in (None, healthy):
        stop = threading.Event()
        gw = cast(RefundGateway, IdleGateway(stop, cycles=3, tick=lambda: None))
        with capture_logs() as logs:
            run_loop(gw, interval=0, stop=stop, settings=settings)
        assert [e for e in logs if e["event"].startswith("certificate.")] == []


def test_a_fault_in_the_certificate_look_does_not_stop_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr("gateway.resolver.log_certificate_warnings", broken)
    stop = threading.Event()
    gw = cast(RefundGateway, IdleGateway(stop, cycles=2, tick=lambda: None))
    with capture_logs() as logs:
        cycles = run_loop(gw, interval=0, stop=stop, settings=GatewaySettings())
    assert cycles == 2
    assert [e["event"] for e in logs if e["event"].startswith("certificate.")] == \
        ["certificate.check_failed"]


# -- UnionPay's chain and the fields a mode does not read ---------------------------------
def issued(key: rsa.RSAPrivateKey, issuer_key: rsa.RSAPrivateKey, name: str, issuer: str,
           *, days: float = 3000, ca: bool = True) -> str:
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class Bankcard(BaseModel):
    """UnionPay settings in either trust mode (``trust``: chain or pin)."""

    mer_id: str = "777290058110048"
    private_key: SecretStr
    cert_id: str = "69629715588"
    back_url: str = "https://shop.example.com/notify/bankcard"
    unionpay_public_key: SecretStr | None = None
    middle_cert: str | None = None
    root_cert: str | None = None
    trust: str = "chain"


@pytest.fixture(scope="module")
def unionpay_ca() -> tuple[str, str, str]:
    """(middle issued by root, root, another root that issued nothing)."""
    root, middle, other = rsa_key(), rsa_key(), rsa_key()
    return (issued(middle, root, "Middle", "Root"), issued(root, root, "Root", "Root"),
            issued(other, other, "Root", "Root"))


def test_the_unionpay_middle_certificate_must_be_issued_by_the_root(
        ours: rsa.RSAPrivateKey, unionpay_ca: tuple[str, str, str]) -> None:
    middle, root, other_root = unionpay_ca
    key = SecretStr(private_pem(ours))
    good = Bankcard(private_key=key, middle_cert=middle, root_cert=root)
    assert only("bankcard", good, "chain").status is Status.OK
    wrong = Bankcard(private_key=key, middle_cert=middle, root_cert=other_root)
    check = only("bankcard", wrong, "chain")
    assert (check.status, check.setting) == (Status.PROBLEM,
                                             "REFUND_GATEWAY_BANKCARD__MIDDLE_CERT")


def test_a_field_the_trust_mode_does_not_read_is_not_checked(
        ours: rsa.RSAPrivateKey, theirs: rsa.RSAPrivateKey,
        unionpay_ca: tuple[str, str, str]) -> None:
    """An old pinned certificate left beside the chain is not an expiry problem."""
    middle, root, _ = unionpay_ca
    old_pin = SecretStr(certificate(theirs, days=-5, start_days_ago=400))
    chain = Bankcard(private_key=SecretStr(private_pem(ours)), middle_cert=middle,
                     root_cert=root, unionpay_public_key=old_pin)
    found = checks("bankcard", chain)
    assert [c for c in found if c.status is not Status.OK] == []
    assert "REFUND_GATEWAY_BANKCARD__UNIONPAY_PUBLIC_KEY" not in {c.setting for c in found}
    pin = chain.model_copy(update={"trust": "pin"})
    assert [(c.check, c.status, c.setting) for c in checks("bankcard", pin)
            if c.status is not Status.OK] == [
        ("certificate", Status.PROBLEM, "REFUND_GATEWAY_BANKCARD__UNIONPAY_PUBLIC_KEY")]
    assert checks("bankcard", pin, "chain") == []
