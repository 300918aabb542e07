"""The Alipay sandbox's certificate app and ISV token ("Certificates", CHANNELS-ADDENDUM
§5), driven by python-alipay-sdk 3.4.0's own ``DCAliPay`` over HTTP: the SNs it computes
are the ones the sandbox expects, its answers name the Alipay certificate and verify with
its key, ``alipay.open.app.alipaycert.download`` hands out every certificate issued, and
``cert_rotated`` changes the certificate until reset.

The SDK computes SNs with pyOpenSSL's deprecated ``X509.get_issuer``: that warning is
ignored here (the project's tests make warnings errors).
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from alipay import AliPay, DCAliPay  # noqa: TID251 - the real SDK is the point
from alipay.exceptions import AliPayException, AliPayValidationError  # noqa: TID251
from cryptography import x509
from dotenv import dotenv_values

from gateway import Money, Payment, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_adapters, build_gateway
from gateway.settings import load_settings
from sandbox.alipay import AUTH_APP_ID, CERT_APP_ID, CERT_DOWNLOAD, AlipayChannel
from sandbox.server import SandboxServer
from tests.reliability.harness import free_port

pytestmark = pytest.mark.filterwarnings("ignore:X509.*deprecated:DeprecationWarning")
PREFIX = "REFUND_GATEWAY_ALIPAY__"
QUERY = "alipay.trade.fastpay.refund.query"


@pytest.fixture
def sandbox(refund_sandbox: SandboxServer) -> SandboxServer:
    return refund_sandbox


def channel(sandbox: SandboxServer) -> AlipayChannel:
    found = sandbox.channel("alipay")
    assert isinstance(found, AlipayChannel)
    return found


def settings(sandbox: SandboxServer, **kw: Any) -> dict[str, str]:
    return channel(sandbox).app_settings(sandbox.url, mode="cert", **kw)


def dc(sandbox: SandboxServer, **kw: Any) -> DCAliPay:
    cfg = settings(sandbox, **kw)
    sdk = DCAliPay(appid=cfg[PREFIX + "APP_ID"],
                   app_private_key_string=cfg[PREFIX + "APP_PRIVATE_KEY"],
                   app_public_key_cert_string=cfg[PREFIX + "APP_CERT"],
                   alipay_public_key_cert_string=cfg[PREFIX + "ALIPAY_CERT"],
                   alipay_root_cert_string=cfg[PREFIX + "ALIPAY_ROOT_CERT"])
    sdk._gateway = cfg[PREFIX + "GATEWAY_URL"]
    return sdk


def pay(sandbox: SandboxServer) -> dict[str, Any]:
    r = requests.post(sandbox.url + "/_sandbox/payments",
                      json={"route": "alipay", "amount_fen": 10_000}, timeout=5)
    return dict(r.json())


def raw(sdk: AliPay, method: str, biz: dict[str, Any], **kw: str) -> dict[str, Any]:
    url = sdk._gateway + "?" + sdk.sign_data(sdk.build_body(method, biz, **kw))
    return dict(requests.get(url, timeout=5).json())


def test_the_sdks_own_certificate_mode_refunds_and_queries(sandbox: SandboxServer) -> None:
    sdk = dc(sandbox)
    assert (sdk.app_cert_sn, sdk.alipay_root_cert_sn) == (channel(sandbox).app_cert_sn,
                                                          channel(sandbox).root_cert_sn)
    assert "_" not in sdk.alipay_root_cert_sn             # the ECDSA root is skipped
    p = pay(sandbox)
    done = sdk.api_alipay_trade_refund("25.00", out_trade_no=p["merchant_order_no"],
                                       out_request_no="R1")   # verified by the SDK
    assert (done["code"], done["fund_change"]) == ("10000", "Y")
    found = sdk.server_api(QUERY, {"out_trade_no": p["merchant_order_no"],
                                   "out_request_no": "R1"})
    assert found["refund_status"] == "REFUND_SUCCESS"
    answer = raw(sdk, QUERY, {"out_trade_no": p["merchant_order_no"], "out_request_no": "R1"})
    cert = settings(sandbox)[PREFIX + "ALIPAY_CERT"]
    assert answer["alipay_cert_sn"] == DCAliPay.get_cert_sn(cert)


@pytest.mark.parametrize(("drop", "value", "sub_code"), [
    ("app_cert_sn", None, "isv.missing-app-cert-sn"),
    ("app_cert_sn", "0" * 32, "isv.app-cert-not-exist"),
    ("alipay_root_cert_sn", None, "isv.missing-alipay-root-cert-sn"),
    ("alipay_root_cert_sn", "0" * 32, "isv.invalid-alipay-root-cert-sn"),
])
def test_the_certificate_app_needs_both_sns(sandbox: SandboxServer, drop: str,
                                            value: str | None, sub_code: str) -> None:
    sdk = dc(sandbox)
    data = sdk.build_body(QUERY, {"out_trade_no": "x", "out_request_no": "y"})
    if value is None:
        data.pop(drop)
    else:
        data[drop] = value
    answer = requests.get(sdk._gateway + "?" + sdk.sign_data(data), timeout=5).json()
    inner = answer["alipay_trade_fastpay_refund_query_response"]
    assert (inner["code"], inner["sub_code"]) == ("40002", sub_code)
    assert answer["alipay_cert_sn"] and answer["sign"]       # signed: the app is known


def test_download_hands_out_every_certificate_issued(sandbox: SandboxServer) -> None:
    sdk = dc(sandbox)
    first = channel(sandbox).alipay_cert
    requests.post(sandbox.url + "/_sandbox/faults", json={
        "route": "alipay", "operation": "query", "kind": "cert_rotated"}, timeout=5)
    after = raw(sdk, QUERY, {"out_trade_no": "x", "out_request_no": "y"})
    second = channel(sandbox).alipay_cert
    assert after["alipay_cert_sn"] == second.sn != first.sn
    for cert in (first, second):
        got = raw(sdk, CERT_DOWNLOAD, {"alipay_cert_sn": cert.sn})
        inner = got["alipay_open_app_alipaycert_download_response"]
        content = base64.b64decode(inner["alipay_cert_content"]).decode()
        assert content == cert.pem and DCAliPay.get_cert_sn(content) == cert.sn
        assert len(x509.load_pem_x509_certificates(content.encode())) == 2   # + issuer
    missing = raw(sdk, CERT_DOWNLOAD, {"alipay_cert_sn": "0" * 32})
    assert missing["alipay_open_app_alipaycert_download_response"]["sub_code"] == \
        "isv.alipay-cert-not-exist"
    requests.post(sandbox.url + "/_sandbox/reset", json={}, timeout=5)
    assert channel(sandbox).alipay_cert == first


def test_the_rotated_key_signs_and_the_old_sdk_object_no_longer_verifies(
        sandbox: SandboxServer) -> None:
    """python-alipay-sdk ignores alipay_cert_sn (CH §1.1): after a rotation its DCAliPay
    fails to verify, which is why the adapter picks the certificate by SN."""
    sdk = dc(sandbox)
    requests.post(sandbox.url + "/_sandbox/faults", json={
        "route": "alipay", "kind": "cert_rotated"}, timeout=5)
    with pytest.raises(AliPayValidationError):
        sdk.server_api(QUERY, {"out_trade_no": "x", "out_request_no": "y"})
    assert dc(sandbox).server_api(QUERY, {"out_trade_no": "x", "out_request_no": "y"})


def test_the_public_key_app_is_unchanged(sandbox: SandboxServer) -> None:
    cfg = sandbox.settings()
    assert PREFIX + "ALIPAY_PUBLIC_KEY" in cfg and PREFIX + "APP_CERT" not in cfg
    sdk = AliPay(appid=cfg[PREFIX + "APP_ID"],
                 app_private_key_string=cfg[PREFIX + "APP_PRIVATE_KEY"],
                 alipay_public_key_string=cfg[PREFIX + "ALIPAY_PUBLIC_KEY"])
    sdk._gateway = cfg[PREFIX + "GATEWAY_URL"]
    answer = raw(sdk, QUERY, {"out_trade_no": "x", "out_request_no": "y"})
    assert "alipay_cert_sn" not in answer


def test_app_auth_token(sandbox: SandboxServer) -> None:
    sdk = dc(sandbox)
    token = settings(sandbox, isv=True)[PREFIX + "APP_AUTH_TOKEN"]
    p = pay(sandbox)
    done = sdk.server_api("alipay.trade.refund", {
        "out_trade_no": p["merchant_order_no"], "refund_amount": "1.00",
        "out_request_no": "R1"}, app_auth_token=token)      # addendum §5: probed form
    assert done["code"] == "10000"
    truth = requests.get(sandbox.url + "/_sandbox/refunds", timeout=5).json()["refunds"]
    assert [(r["extra"]["app_id"], r["extra"]["auth_app_id"]) for r in truth] == [
        (CERT_APP_ID, AUTH_APP_ID)]
    with pytest.raises(AliPayException) as info:
        sdk.server_api("alipay.trade.refund", {
            "out_trade_no": p["merchant_order_no"], "refund_amount": "1.00",
            "out_request_no": "R2"}, app_auth_token=token[:-1] + "9")
    assert "aop.invalid-app-auth-token" in str(info.value)     # 20001, error_response
    assert len(requests.get(sandbox.url + "/_sandbox/refunds",
                            timeout=5).json()["refunds"]) == 1


def test_serve_writes_a_certificate_mode_isv_env_file(tmp_path: Path) -> None:
    """``sandbox serve --alipay-mode cert --alipay-isv --env-file``: a gateway built from
    that file alone refunds in certificate mode for the authorised merchant."""
    port, env_file = free_port(), tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "sandbox", "serve",
         "--port", str(port), "--env-file", str(env_file), "--alipay-mode", "cert",
         "--alipay-isv"], env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(requests.RequestException):
                if env_file.exists() and requests.get(f"{base}/_sandbox/refunds",
                                                      timeout=1).ok:
                    break
            time.sleep(0.1)
        written = dotenv_values(env_file)
        assert written[PREFIX + "APP_ID"] == CERT_APP_ID
        assert PREFIX + "ALIPAY_PUBLIC_KEY" not in written
        assert written[PREFIX + "APP_AUTH_TOKEN"]
        settings = load_settings(env_file=env_file,
                                 database_url=f"sqlite:///{tmp_path / 'gw.db'}")
        gw = build_gateway(settings, adapters=build_adapters(settings, routes=[Route.ALIPAY]),
                           sleep=lambda _: None, configure_logs=False)
        try:
            doc = requests.post(f"{base}/_sandbox/payments",
                                json={"route": "alipay", "amount_fen": 1000}, timeout=5).json()
            refund = gw.refund(RefundRequest("k1", Payment(
                Route.ALIPAY, doc["merchant_order_no"], doc["channel_trade_no"], Money(1000)),
                Money(400), "env file"))
            assert refund.status is RefundStatus.SUCCEEDED
        finally:
            gw.close()
        [row] = requests.get(f"{base}/_sandbox/refunds", timeout=5).json()["refunds"]
        assert (row["extra"]["app_id"], row["extra"]["auth_app_id"]) == (CERT_APP_ID,
                                                                         AUTH_APP_ID)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
