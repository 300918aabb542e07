"""The sandbox as a newcomer meets it: ``sandbox serve --env-file``, then both real SDKs
configured from that file alone complete a refund with verified signatures, and the
truth lists it once. Plus isolation: two sandboxes share nothing; reset empties one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from alipay import AliPay, AliPayConfig  # noqa: TID251 - the test drives the real SDK
from dotenv import dotenv_values
from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: TID251 - the real SDK

from sandbox.server import SandboxServer
from tests.reliability.harness import free_port


def _pem(value: str | None) -> str:
    assert value
    return value.replace("\\n", "\n")


def test_serve_env_file_configures_both_sdks(tmp_path: Path) -> None:
    port, env_file = free_port(), tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "sandbox", "serve",
         "--port", str(port), "--env-file", str(env_file)],
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if env_file.exists() and requests.get(f"{base}/_sandbox/refunds", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        cfg = dotenv_values(env_file)
        pay = requests.post(f"{base}/_sandbox/payments",
                            json={"route": "wechatpay", "amount_fen": 1000}, timeout=5).json()
        wx = WeChatPay(wechatpay_type=WeChatPayType.NATIVE,
                       mchid=cfg["REFUND_GATEWAY_WECHATPAY__MCHID"],
                       private_key=_pem(cfg["REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"]),
                       cert_serial_no=cfg["REFUND_GATEWAY_WECHATPAY__CERT_SERIAL_NO"],
                       appid=cfg["REFUND_GATEWAY_WECHATPAY__APPID"],
                       apiv3_key=cfg["REFUND_GATEWAY_WECHATPAY__APIV3_KEY"],
                       public_key=_pem(cfg["REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY"]),
                       public_key_id=cfg["REFUND_GATEWAY_WECHATPAY__PUBLIC_KEY_ID"],
                       timeout=(2, 5))
        wx._core._gate_way = cfg["REFUND_GATEWAY_WECHATPAY__BASE_URL"]   # CH §0 #2
        status, _ = wx.refund(out_refund_no="RFENV0001", transaction_id=pay["channel_trade_no"],
                              amount={"refund": 400, "total": 1000, "currency": "CNY"})
        assert status == 200     # the SDK verified the answer's signature

        ali_pay = requests.post(f"{base}/_sandbox/payments",
                                json={"route": "alipay", "amount_fen": 1000}, timeout=5).json()
        ali = AliPay(appid=cfg["REFUND_GATEWAY_ALIPAY__APP_ID"], app_notify_url=None,
                     app_private_key_string=_pem(cfg["REFUND_GATEWAY_ALIPAY__APP_PRIVATE_KEY"]),
                     alipay_public_key_string=_pem(cfg["REFUND_GATEWAY_ALIPAY__ALIPAY_PUBLIC_KEY"]),
                     sign_type="RSA2", config=AliPayConfig(timeout=5))
        ali._gateway = cfg["REFUND_GATEWAY_ALIPAY__GATEWAY_URL"]
        answer = ali.api_alipay_trade_refund(refund_amount="4.00",
                                             trade_no=ali_pay["channel_trade_no"],
                                             out_request_no="RFENV0002")
        assert answer["code"] == "10000"

        truth = requests.get(f"{base}/_sandbox/refunds", timeout=5).json()["refunds"]
        assert sorted(r["channel_refund_no"] for r in truth) == ["RFENV0001", "RFENV0002"]
        assert all(r["executions"] == 1 for r in truth)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_two_sandboxes_share_nothing_and_reset_empties() -> None:
    with SandboxServer() as one, SandboxServer() as two:
        assert one.port != two.port
        assert one.settings()["REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"] != \
            two.settings()["REFUND_GATEWAY_WECHATPAY__PRIVATE_KEY"]
        requests.post(f"{one.url}/_sandbox/payments",
                      json={"route": "balance", "amount_fen": 100}, timeout=5).raise_for_status()
        requests.post(f"{one.url}/_sandbox/faults", json={
            "route": "wechatpay", "operation": "refund", "kind": "http_500", "count": 1},
            timeout=5).raise_for_status()
        assert one.state.payments and not two.state.payments
        assert one.state.faults and not two.state.faults
        requests.post(f"{one.url}/_sandbox/reset", json={}, timeout=5).raise_for_status()
        assert not one.state.payments and not one.state.faults
        assert requests.get(f"{one.url}/_sandbox/refunds", timeout=5).json() == {"refunds": []}


def test_control_api_rejects_bad_input() -> None:
    with SandboxServer() as sandbox:
        for body in ({"route": "paypal", "amount_fen": 1}, {"route": "alipay", "amount_fen": 1.5},
                     {"route": "alipay", "amount_fen": -3}, {"route": "alipay"}):
            r = requests.post(f"{sandbox.url}/_sandbox/payments", json=body, timeout=5)
            assert r.status_code == 400 and "error" in r.json()
        r = requests.post(f"{sandbox.url}/_sandbox/faults", json={
            "route": "alipay", "operation": "refund", "kind": "meteor"}, timeout=5)
        assert r.status_code == 400
