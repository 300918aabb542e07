"""``refund-gateway doctor`` against the project sandbox, from the env file it writes
(issue 19): every route answers a query of an unknown refund and verifies; a key the
channel does not know, a key that does not parse, a wrong channel key, a wrong notify
URL and a certificate about to expire each give the right warning or problem, exit code
and JSON; no secret is ever printed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from dotenv import dotenv_values

from gateway.cli import main
from sandbox.keys import KeyPair
from sandbox.server import SandboxServer

ROUTES = ("alipay", "wechatpay", "bankcard", "balance")
# Real endpoints instead of the sandbox's inbox: what a deployment sets.
REAL_NOTIFY = {"REFUND_GATEWAY_ALIPAY__NOTIFY_URL": "https://shop.example.com/notify/alipay",
               "REFUND_GATEWAY_WECHATPAY__NOTIFY_URL":
                   "https://shop.example.com/notify/wechatpay",
               "REFUND_GATEWAY_BANKCARD__BACK_URL": "https://shop.example.com/notify/bankcard"}


@pytest.fixture(scope="module")
def stranger() -> KeyPair:
    """A valid RSA key no channel of the sandbox knows."""
    return KeyPair.generate()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REFUND_GATEWAY_* from the environment of the test run."""
    for key in list(os.environ):
        if key.startswith("REFUND_GATEWAY_"):
            monkeypatch.delenv(key)


@pytest.fixture
def env_file(refund_sandbox: SandboxServer, tmp_path: Path, clean_env: None) -> Path:
    """The settings file ``sandbox serve --env-file`` writes; nothing else configured."""
    return refund_sandbox.write_env_file(tmp_path / "sandbox.env")


def doctor(env_file: Path, *args: str, env: Mapping[str, str] | None = None
           ) -> tuple[int, dict[str, Any], str]:
    """Run ``refund-gateway --env-file F doctor --json ARGS``; (exit code, document, all
    output). The environment wins over the file, as it does for a deployment."""
    result = CliRunner().invoke(main, ["--env-file", str(env_file), "doctor", "--json",
                                       *args], env=dict(env or {}))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, json.loads(result.stdout), result.output + result.stderr


def rows(doc: Mapping[str, Any], route: str | None = None, check: str | None = None,
         account: str = "default") -> list[dict[str, Any]]:
    return [c for c in doc["checks"] if (route is None or c["route"] == route)
            and (check is None or c["check"] == check) and c["account"] == account]


def one(doc: Mapping[str, Any], route: str, check: str) -> dict[str, Any]:
    found = rows(doc, route, check)
    assert len(found) == 1, found
    return found[0]


def not_ok(doc: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(c["route"], c["account"], c["check"], c["status"]) for c in doc["checks"]
            if c["status"] != "ok"]


def certificate_pem(key: KeyPair, days: float, start_days_ago: float = 1) -> str:
    """A certificate for ``key`` (self-signed) valid until ``days`` from now."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sandbox WeChat Pay platform")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public).serial_number(0x5EED)
            .not_valid_before(now - timedelta(days=start_days_ago))
            .not_valid_after(now + timedelta(days=days))
            .sign(key.private, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def secrets_of(env_file: Path) -> list[str]:
    """Every secret value of the env file, as pieces long enough to be unmistakable: each
    line of key material, the API v3 key, the HMAC key."""
    found: list[str] = []
    for key, value in dotenv_values(env_file).items():
        if not value or not any(w in key for w in ("KEY", "SECRET")) or "PUBLIC" in key:
            continue
        lines = [line for line in value.replace("\\n", "\n").splitlines()
                 if line and not line.startswith("-----")]
        found += [line for line in lines if len(line) >= 16] or [value]
    return found


# -- healthy ------------------------------------------------------------------------------
def test_every_route_is_ok_against_the_sandbox(env_file: Path) -> None:
    code, doc, _ = doctor(env_file, env=REAL_NOTIFY)
    assert (code, doc["status"], not_ok(doc)) == (0, "ok", [])
    assert [(a["route"], a["account"], a["status"]) for a in doc["accounts"]] == [
        (route, "default", "ok") for route in ROUTES]
    for route in ROUTES:
        channel = one(doc, route, "channel")
        assert channel["facts"]["answer"] == "not_found"
        assert channel["facts"]["elapsed_ms"] >= 0
    assert "verified" in one(doc, "alipay", "channel")["detail_en"]
    assert "verified" in one(doc, "bankcard", "channel")["detail_en"]
    assert "request signature accepted" in one(doc, "wechatpay", "channel")["detail_en"]


def test_the_env_file_as_written_warns_that_notifications_go_to_the_sandbox(
        env_file: Path) -> None:
    """Run as a user would: the console script, the table on stdout, exit 0 with the
    warnings listed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_GATEWAY_")}
    out = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()",
                          "--env-file", str(env_file), "doctor"], capture_output=True,
                         text=True, env=clean, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    table = out.stdout.splitlines()
    assert table[0].split() == ["route", "account", "check", "status", "detail"]
    warned = [line.split()[:4] for line in table if " warning " in line]
    assert warned == [["alipay", "default", "notify_url", "warning"],
                      ["wechatpay", "default", "notify_url", "warning"],
                      ["bankcard", "default", "notify_url", "warning"]]
    assert all("仍指向沙箱收件箱 / still the sandbox's inbox" in line for line in table
               if " warning " in line)
    rows_printed = len(table) - 4           # header, rule, blank line, summary
    assert table[-1] == f"4 accounts: {rows_printed - 3} ok, 3 warnings, 0 problems -> warning"
    for secret in secrets_of(env_file):
        assert secret not in out.stdout + out.stderr


# -- keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "variable", "code"), [
    ("alipay", "REFUND_GATEWAY_ALIPAY__APP_PRIVATE_KEY", "isv.invalid-signature"),
    ("wechatpay", "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY", "SIGN_ERROR"),
    ("bankcard", "REFUND_GATEWAY_BANKCARD__PRIVATE_KEY", "11"),
    ("balance", "REFUND_GATEWAY_BALANCE__HMAC_KEY", "SIGN_ERROR"),
])
def test_a_key_the_channel_does_not_know_is_a_problem_of_that_account_only(
        env_file: Path, stranger: KeyPair, route: str, variable: str, code: str) -> None:
    value = "z" * 64 if route == "balance" else stranger.private_pem()
    status, doc, output = doctor(env_file, env={**REAL_NOTIFY, variable: value})
    assert status == 1
    assert doc["status"] == "problem"
    channel = one(doc, route, "channel")
    assert (channel["status"], channel["facts"]["error"], channel["facts"]["code"]) == (
        "problem", "ChannelAuthError", code)
    assert "refused our signature" in channel["detail_en"]
    assert not_ok(doc) == [(route, "default", "channel", "problem")]
    assert not any(line in output for line in value.splitlines() if "-----" not in line)


def test_a_key_that_does_not_parse_is_named_and_the_channel_not_called(
        env_file: Path) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\\nTUlJRXZnSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NC" \
             "\\n-----END PRIVATE KEY-----"
    code, doc, output = doctor(env_file, env={
        **REAL_NOTIFY, "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY": broken})
    assert code == 1
    key = one(doc, "wechatpay", "private_key")
    assert (key["status"], key["setting"]) == ("problem",
                                               "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY")
    channel = one(doc, "wechatpay", "channel")
    assert channel["status"] == "problem"
    assert channel["detail_en"].startswith("not checked: adapter refused the settings")
    assert channel["setting"] == "REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"
    assert "TUlJRXZn" not in output


def test_a_channel_key_that_is_not_the_channels_fails_the_answer_signature(
        env_file: Path, stranger: KeyPair) -> None:
    code, doc, _ = doctor(env_file, env={
        **REAL_NOTIFY, "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY": stranger.public_pem()})
    assert code == 1
    channel = one(doc, "alipay", "channel")
    assert (channel["status"], channel["facts"]["code"], channel["setting"]) == (
        "problem", "SIGNATURE_INVALID", "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY")
    assert "answer signature does not verify" in channel["detail_en"]


def test_an_answer_signed_with_another_key_is_a_problem(
        env_file: Path, refund_sandbox: SandboxServer) -> None:
    fault = json.dumps({"route": "bankcard", "operation": "query", "kind": "bad_signature",
                        "count": 1}).encode()
    urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - the local sandbox
        refund_sandbox.url + "/_sandbox/faults", data=fault, method="POST",
        headers={"Content-Type": "application/json"}), timeout=10).close()
    code, doc, _ = doctor(env_file, "--route", "bankcard", env=REAL_NOTIFY)
    assert code == 1
    channel = one(doc, "bankcard", "channel")
    assert (channel["status"], channel["facts"]["code"]) == ("problem", "SIGNATURE_INVALID")
    assert channel["setting"].startswith("REFUND_GATEWAY_BANKCARD__")
    assert [a["route"] for a in doc["accounts"]] == ["bankcard"]


def test_our_own_public_key_given_as_the_channels_is_caught_before_any_call(
        env_file: Path, refund_sandbox: SandboxServer) -> None:
    own = refund_sandbox.keys.alipay_app.public_pem()
    code, doc, _ = doctor(env_file, "--offline", env={
        **REAL_NOTIFY, "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY": own})
    assert code == 1
    key = rows(doc, "alipay", "platform_key")
    assert [(k["status"], k["setting"]) for k in key] == [
        ("problem", "REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY")]
    assert rows(doc, check="channel") == []          # --offline: no channel call


# -- URLs ---------------------------------------------------------------------------------
def test_wrong_notify_urls(env_file: Path) -> None:
    code, doc, _ = doctor(env_file, env={
        **REAL_NOTIFY,
        "REFUND_GATEWAY_WECHATPAY__NOTIFY_URL": "https://shop.example.com/notify?shop=2",
        "REFUND_GATEWAY_BANKCARD__BACK_URL": ""})
    assert code == 1
    wechat = one(doc, "wechatpay", "notify_url")
    assert (wechat["status"], wechat["detail_en"]) == ("problem",
                                                       "must not carry a query string")
    back = one(doc, "bankcard", "notify_url")
    assert (back["status"], back["setting"]) == ("problem",
                                                 "REFUND_GATEWAY_BANKCARD__BACK_URL")
    assert one(doc, "bankcard", "channel")["status"] == "problem"   # the adapter refuses
    assert one(doc, "alipay", "notify_url")["status"] == "ok"


def test_an_unreachable_channel(env_file: Path) -> None:
    with socket.socket() as probe:          # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, doc, _ = doctor(env_file, "--route", "balance", env={
        "REFUND_GATEWAY_BALANCE__BASE_URL": f"http://127.0.0.1:{port}/wallet"})
    assert code == 1
    channel = one(doc, "balance", "channel")
    assert (channel["status"], channel["facts"]["error"], channel["detail_en"]) == (
        "problem", "ChannelUnavailable", "channel unreachable")


# -- certificates -------------------------------------------------------------------------
def test_a_certificate_expiring_in_five_days_is_a_warning(
        env_file: Path, refund_sandbox: SandboxServer) -> None:
    """WeChat's platform key given as a certificate (accepted and unwrapped) valid for 5
    more days: the channel still verifies, the certificate warns; exit 0."""
    cert = certificate_pem(refund_sandbox.keys.wechat_platform, days=5)
    code, doc, _ = doctor(env_file, env={**REAL_NOTIFY,
                                         "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY": cert})
    assert (code, doc["status"]) == (0, "warning")
    assert not_ok(doc) == [("wechatpay", "default", "certificate", "warning")]
    check = one(doc, "wechatpay", "certificate")
    assert check["setting"] == "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY"
    assert check["facts"]["days_left"] == 4          # 5 days less the seconds since
    assert check["detail"].startswith("证书将于 4 天后")
    assert one(doc, "wechatpay", "channel")["status"] == "ok"
    _, later, _ = doctor(env_file, "--warn-days", "3",
                         env={**REAL_NOTIFY, "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY": cert})
    assert later["status"] == "ok"


def test_an_expired_certificate_is_a_problem(env_file: Path,
                                             refund_sandbox: SandboxServer) -> None:
    cert = certificate_pem(refund_sandbox.keys.wechat_platform, days=-1, start_days_ago=400)
    code, doc, _ = doctor(env_file, env={**REAL_NOTIFY,
                                         "REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY": cert})
    assert code == 1
    assert not_ok(doc) == [("wechatpay", "default", "certificate", "problem")]
    assert "expired on" in one(doc, "wechatpay", "certificate")["detail_en"]


# -- accounts, the document, usage errors -------------------------------------------------
def test_every_named_account_is_checked_with_its_own_settings(
        env_file: Path, refund_sandbox: SandboxServer) -> None:
    wallet = refund_sandbox.settings()
    shop = {"REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP2__BASE_URL":
            wallet["REFUND_GATEWAY_BALANCE__BASE_URL"],
            "REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP2__HMAC_KEY":
            wallet["REFUND_GATEWAY_BALANCE__HMAC_KEY"],
            "REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP3__BASE_URL":
            wallet["REFUND_GATEWAY_BALANCE__BASE_URL"],
            "REFUND_GATEWAY_BALANCE__ACCOUNTS__SHOP3__HMAC_KEY": "y" * 64}
    code, doc, _ = doctor(env_file, "--route", "balance", env=shop)
    assert code == 1
    assert [(a["account"], a["status"]) for a in doc["accounts"]] == [
        ("default", "ok"), ("shop2", "ok"), ("shop3", "problem")]
    assert rows(doc, "balance", "channel", account="shop3")[0]["facts"]["code"] == \
        "SIGN_ERROR"
    code, only_shop2, _ = doctor(env_file, "--route", "balance", "--account", "shop2",
                                 env=shop)
    assert (code, [a["account"] for a in only_shop2["accounts"]]) == (0, ["shop2"])


def test_the_json_document_follows_its_schema(env_file: Path) -> None:
    """The shape README "Doctor" documents, key for key."""
    _, doc, _ = doctor(env_file)
    assert set(doc) == {"schema", "checked_at", "warn_days", "offline", "status",
                        "exit_code", "summary", "accounts", "checks"}
    assert doc["schema"] == "refund-gateway/cli/doctor/v1"
    assert datetime.fromisoformat(doc["checked_at"]).tzinfo is not None
    assert (doc["warn_days"], doc["offline"], doc["exit_code"]) == (30, False, 0)
    assert doc["status"] in ("ok", "warning", "problem")
    assert set(doc["summary"]) == {"ok", "warning", "problem"}
    assert sum(doc["summary"].values()) == len(doc["checks"])
    for account in doc["accounts"]:
        assert set(account) == {"route", "account", "status"}
    for check in doc["checks"]:
        assert set(check) == {"route", "account", "check", "status", "detail", "detail_zh",
                              "detail_en", "setting", "facts"}
        assert check["route"] in ROUTES
        assert check["status"] in ("ok", "warning", "problem")
        assert check["detail"] == f"{check['detail_zh']} / {check['detail_en']}"
        assert check["setting"] is None or check["setting"].startswith("REFUND_GATEWAY_")
        assert isinstance(check["facts"], dict)
    secrets = secrets_of(env_file)
    assert len(secrets) > 40            # the key lines of 4 private keys, API v3, HMAC
    for secret in secrets:
        assert secret not in json.dumps(doc, ensure_ascii=False)


def test_a_route_or_account_that_is_not_configured_is_a_usage_error(env_file: Path) -> None:
    code, doc, _ = doctor(env_file, "--account", "nope")
    assert (code, doc["exit_code"], doc["schema"]) == (2, 2, "refund-gateway/cli/doctor/v1")
    assert "no merchant account nope" in doc["error"]


@pytest.fixture
def no_settings(tmp_path: Path, clean_env: None) -> Path:
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing configured\n")
    return empty


def test_nothing_configured_is_a_usage_error(no_settings: Path) -> None:
    result = CliRunner().invoke(main, ["--env-file", str(no_settings), "doctor"])
    assert result.exit_code == 2
    assert "no route is configured" in result.stderr
