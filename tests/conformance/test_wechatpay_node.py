"""The sandbox's WeChat Pay API v3 driven by wechatpay-axios-plugin 0.9.6 (``js/wechatpay_node.js``)
in public-key mode: refund, refund query, trade bill + download with the client's SHA1
check, the REFUND.SUCCESS callback verified (``Rsa.verify`` over ``Formatter.response``)
and decrypted (``AesGcm.decrypt``) by the library. Every 2xx answer passes the plugin's own
``responseVerifier`` before the script sees it; a wrongly signed answer and a wrongly
signed callback must be refused by the same code.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from sandbox.server import SandboxServer
from sandbox.state import BEIJING
from tests.conformance.conftest import control, fault, pay, truth
from tests.sandbox.channel_support import Catcher

PREFIX = "REFUND_GATEWAY_WECHATPAY__"
SCRIPT = "wechatpay_node.js"


@pytest.fixture
def wx(node: Any, client_env: dict[str, str]) -> Any:
    base = {"mchid": client_env[PREFIX + "MCHID"],
            "serial": client_env[PREFIX + "CERT_SERIAL_NO"],
            "privateKey": client_env[PREFIX + "PRIVATE_KEY"],
            "publicKeyId": client_env[PREFIX + "PUBLIC_KEY_ID"],
            "publicKey": client_env[PREFIX + "PUBLIC_KEY"],
            "apiv3Key": client_env[PREFIX + "APIV3_KEY"],
            "baseURL": client_env[PREFIX + "BASE_URL"] + "/"}

    def run(command: str, **args: Any) -> dict[str, Any]:
        answer: dict[str, Any] = node(SCRIPT, command, {**base, **args})
        return answer
    return run


def refund(wx: Any, payment: dict[str, Any], no: str, fen: int = 2_500,
           notify_url: str = "https://merchant.example/wx/refund-notify") -> dict[str, Any]:
    answer: dict[str, Any] = wx("refund", outTradeNo=payment["merchant_order_no"],
                                outRefundNo=no, reason="商品已售完", refund=fen,
                                total=payment["amount_fen"], notifyUrl=notify_url)
    return answer


def test_refund_then_query(sandbox: SandboxServer, wx: Any,
                           client_env: dict[str, str]) -> None:
    control(sandbox, "/_sandbox/config",
            {"settle": {"wechatpay": {"mode": "after_queries", "n": 1}}})
    payment = pay(sandbox, "wechatpay")
    answer = refund(wx, payment, "R1")
    assert "error" not in answer, answer
    data = answer["data"]
    assert answer["status"] == 200 and data["status"] == "PROCESSING"
    assert (data["out_refund_no"], data["out_trade_no"]) == ("R1", payment["merchant_order_no"])
    assert data["amount"]["refund"] == 2_500 and data["amount"]["currency"] == "CNY"
    assert answer["headers"]["wechatpay-serial"] == client_env[PREFIX + "PUBLIC_KEY_ID"]
    [row] = truth(sandbox, "wechatpay")
    assert (row["channel_refund_no"], row["status"]) == ("R1", "PROCESSING")

    found = wx("query", outRefundNo="R1")             # the first query settles it
    [row] = truth(sandbox, "wechatpay")
    assert (row["executions"], row["status"]) == (1, "SUCCESS")
    assert found["data"]["status"] == "SUCCESS" and found["data"]["success_time"]
    assert found["data"]["refund_id"] == data["refund_id"]

    missing = wx("query", outRefundNo="R404")
    assert (missing["status"], missing["data"]["code"]) == (404, "RESOURCE_NOT_EXISTS")


def test_wrongly_signed_answer_is_refused_by_the_client(sandbox: SandboxServer, wx: Any) -> None:
    payment = pay(sandbox, "wechatpay")
    fault(sandbox, "wechatpay", "refund", "bad_signature")
    answer = refund(wx, payment, "RF1")
    assert answer.get("code") == "EV3_RES_HEADER_SIGNATURE_DIGEST", answer
    assert truth(sandbox, "wechatpay")[0]["executions"] == 1


def test_trade_bill_download(sandbox: SandboxServer, wx: Any) -> None:
    payment = pay(sandbox, "wechatpay")
    assert "error" not in refund(wx, payment, "RB1")
    bill = wx("bill", billDate=datetime.now(BEIJING).date().isoformat())
    assert "error" not in bill, bill
    assert bill["status"] == 200 and bill["downloadStatus"] == 200
    assert bill["data"]["hash_type"] == "SHA1" and bill["hashMatches"] is True
    lines = bill["text"].lstrip("\ufeff").splitlines()
    assert lines[0].startswith("交易时间,公众账号ID,商户号")
    [row] = [line for line in lines if "`RB1," in line]
    cells = [c.lstrip("`") for c in row.split(",`")]
    assert cells[9] == "REFUND" and cells[15] == "RB1" and cells[16] == "25.00"


def test_callback_verified_and_decrypted_by_the_library(sandbox: SandboxServer, wx: Any,
                                                        catcher: Catcher) -> None:
    payment = pay(sandbox, "wechatpay")
    assert "error" not in refund(wx, payment, "RN1", notify_url=catcher.url)
    [(headers, body)] = catcher.wait(1)
    good = wx("verify_notify", headers=headers, body=body.decode("utf-8"))
    assert good["verified"] is True, good
    assert good["event"]["event_type"] == "REFUND.SUCCESS"
    resource = good["resource"]
    assert (resource["out_refund_no"], resource["refund_status"]) == ("RN1", "SUCCESS")
    assert resource["amount"]["refund"] == 2_500

    fault(sandbox, "wechatpay", "notify", "bad_signature")
    assert "error" not in refund(wx, payment, "RN2", notify_url=catcher.url)
    received = catcher.wait(2)
    assert len(received) == 2, received
    headers, body = received[1]
    assert json.loads(body)["event_type"] == "REFUND.SUCCESS"
    forged = wx("verify_notify", headers=headers, body=body.decode("utf-8"))
    assert forged["verified"] is False and forged["serialKnown"] is True, forged
