"""The sandbox's Alipay gateway driven by Alipay's OFFICIAL Python SDK (``alipay-sdk-python``
3.7.1411, ``alipay.aop.api``), not python-alipay-sdk that our adapter wraps.

Refund, refund query, the bill URL plus the bill ZIP, and the ``trade_status_sync``
notification, each answer's signature checked by the SDK itself (``DefaultAlipayClient
.__parse_response`` -> ``SignatureUtils.verify_with_rsa``); a wrongly signed answer and a
wrongly signed notification must be refused by the same code.

Client bugs (theirs, not the sandbox's), each pinned by a test so an SDK upgrade that fixes
it shows up:
* it reads only PKCS#1 private keys: ``fill_private_key_marker`` prepends ``BEGIN RSA
  PRIVATE KEY`` to anything lacking it and ``rsa.PrivateKey.load_pkcs1`` parses it, so the
  PKCS#8 PEM Alipay's key tool writes "for Java" (and the sandbox's env file holds) fails
  to sign; merchants convert the key (as ``pkcs1`` below does).
* it ignores the port of the gateway URL: ``WebUtils.get_http_connection`` always connects
  to 80/443 and then concatenates ``str + int`` for a URL with a port (TypeError before
  anything is sent); the runner patches that one function (``runners/alipay_official_py.py``).
"""

from __future__ import annotations

import base64
import io
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import SandboxServer
from sandbox.state import BEIJING
from tests.conformance.conftest import RUNNERS, fault, pay, run_client, truth
from tests.sandbox.channel_support import Catcher

PREFIX = "REFUND_GATEWAY_ALIPAY__"
RUNNER = RUNNERS / "alipay_official_py.py"


def pkcs1(pem: str) -> str:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def sdk(alipay_official: Path, client_env: dict[str, str]) -> Any:
    """``sdk(command, **args)`` -> the official SDK's answer (see the runner)."""
    base = {"gateway": client_env[PREFIX + "GATEWAY_URL"],
            "app_id": client_env[PREFIX + "APP_ID"],
            "app_private_key": pkcs1(client_env[PREFIX + "APP_PRIVATE_KEY"]),
            "alipay_public_key": client_env[PREFIX + "ALIPAY_PUBLIC_KEY"]}

    def run(command: str, **args: Any) -> dict[str, Any]:
        return run_client([sys.executable, str(RUNNER), command], {**base, **args},
                          {"PYTHONPATH": str(alipay_official)})
    return run


def refund(sdk: Any, payment: dict[str, Any], amount: str = "25.00", no: str = "R1",
           **args: Any) -> dict[str, Any]:
    answer: dict[str, Any] = sdk("refund", out_trade_no=payment["merchant_order_no"],
                                 refund_amount=amount, out_request_no=no,
                                 refund_reason="沙箱退款", **args)
    return answer


def test_refund_then_query(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    answer = refund(sdk, payment)
    assert "error" not in answer, answer
    assert (answer["code"], answer["msg"], answer["is_success"]) == ("10000", "Success", True)
    assert answer["fund_change"] == "Y" and answer["refund_fee"] == "25.00"
    assert answer["trade_no"] == payment["channel_trade_no"]
    assert answer["refund_detail_item_list"] == [
        {"fund_channel": "ALIPAYACCOUNT", "amount": "25.00", "real_amount": "25.00"}]
    [row] = truth(sandbox, "alipay")
    assert (row["channel_refund_no"], row["amount_fen"], row["executions"],
            row["status"]) == ("R1", 2_500, 1, "SUCCESS")

    found = sdk("query", trade_no=payment["channel_trade_no"], out_request_no="R1")
    assert "error" not in found, found
    assert (found["code"], found["refund_status"]) == ("10000", "REFUND_SUCCESS")
    assert found["refund_amount"] == "25.00" and found["total_amount"] == "100.00"
    assert found["gmt_refund_pay"] == answer["gmt_refund_pay"]
    assert found["deposit_back_info"] == {"has_deposit_back": "false"}

    unknown = sdk("query", trade_no=payment["channel_trade_no"], out_request_no="R9")
    assert unknown["code"] == "10000" and "refund_status" not in unknown   # not received


def test_business_refusal_is_signed_and_returned(sandbox: SandboxServer, sdk: Any) -> None:
    """A 40004 passes the SDK's signature check and comes back as data (is_success False)."""
    payment = pay(sandbox, "alipay", fen=1_000)
    answer = refund(sdk, payment, amount="20.00")
    assert (answer["code"], answer["sub_code"], answer["is_success"]) == (
        "40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", False)
    assert truth(sandbox, "alipay") == []


def test_wrongly_signed_answer_is_refused_by_the_sdk(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    fault(sandbox, "alipay", "refund", "bad_signature")
    answer = refund(sdk, payment)
    assert answer.get("error") == "ResponseException", answer
    assert "response sign verify failed" in answer["message"]
    assert truth(sandbox, "alipay")[0]["executions"] == 1     # executed, answer forged


def test_gateway_errors(sandbox: SandboxServer, sdk: Any) -> None:
    """Addendum §6: a bad request signature is answered SIGNED under the method's key (the
    SDK verifies it and returns it as data); an unknown app_id UNSIGNED (the SDK cannot
    verify it and raises: "response shape maybe illegal"). Neither executes anything."""
    payment = pay(sandbox, "alipay")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_key = other.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    forged = refund(sdk, payment, app_private_key=wrong_key)
    assert "error" not in forged, forged
    assert (forged["code"], forged["sub_code"]) == ("40002", "isv.invalid-signature")
    unknown = refund(sdk, payment, app_id="2021000000009999")
    assert unknown.get("error") == "ResponseException", unknown
    assert "response shape maybe illegal" in unknown["message"]
    assert "isv.invalid-app-id" in unknown["message"]
    assert truth(sandbox, "alipay") == []


def test_bill_download(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    assert "error" not in refund(sdk, payment, no="RB1")
    today = datetime.now(BEIJING).date()
    bill = sdk("bill", bill_date=today.isoformat())
    assert "error" not in bill, bill
    assert bill["code"] == "10000" and bill["bill_download_url"].startswith(sandbox.url)
    # GBK entry names without the UTF-8 flag (CH §4.6): zipfile shows them as cp437.
    names = [n.encode("cp437").decode("gbk") for n in bill["entries"]]
    assert sorted(n.rsplit("_", 1)[1] for n in names) == ["业务明细(汇总).csv", "业务明细.csv"]
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(bill["zip_b64"]))) as archive:
        detail = next(i for i in archive.infolist()
                      if i.filename.encode("cp437").decode("gbk").endswith("_业务明细.csv"))
        text = archive.read(detail).decode("gbk")
    [row] = [line for line in text.splitlines() if "RB1" in line]
    cells = [c.strip() for c in row.split(",")]
    assert cells[1] == payment["merchant_order_no"] and cells[2] == "退款"
    assert cells[11] == "-25.00"

    empty = sdk("bill", bill_date="2016-01-04")
    assert (empty["code"], empty["sub_code"]) == ("40004", "isp.bill_not_exist")


def test_notification_verified_by_the_sdks_verifier(sandbox: SandboxServer, sdk: Any,
                                                    catcher: Catcher) -> None:
    payment = pay(sandbox, "alipay")
    assert "error" not in refund(sdk, payment, no="RN1", notify_url=catcher.url)
    fault(sandbox, "alipay", "notify", "bad_signature")
    assert "error" not in refund(sdk, payment, no="RN2", notify_url=catcher.url)
    received = catcher.wait(2)
    assert len(received) == 2, received
    by_no = {dict(parse_qsl(body.decode()))["out_biz_no"]: body.decode()
             for _, body in received}
    good = sdk("verify_notify", body=by_no["RN1"])
    assert good["verified"] is True, good
    assert good["params"]["notify_type"] == "trade_status_sync"
    assert (good["params"]["trade_status"], good["params"]["refund_fee"]) == (
        "TRADE_SUCCESS", "25.00")
    forged = sdk("verify_notify", body=by_no["RN2"])
    assert forged["verified"] is False and forged["error"] == "VerificationError", forged


# -- the SDK's own bugs, pinned -----------------------------------------------------------
def test_client_bug_pkcs8_private_key_cannot_sign(sandbox: SandboxServer, sdk: Any,
                                                  client_env: dict[str, str]) -> None:
    payment = pay(sandbox, "alipay")
    answer = refund(sdk, payment, app_private_key=client_env[PREFIX + "APP_PRIVATE_KEY"])
    assert answer.get("error") == "RequestException", answer
    assert "request sign failed" in answer["message"]
    assert truth(sandbox, "alipay") == []                      # nothing was sent


def test_client_bug_gateway_port_ignored(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    answer = refund(sdk, payment, patch_port=False)
    assert answer.get("error") == "TypeError", answer
    assert "get_http_connection" in answer["trace"]
    assert truth(sandbox, "alipay") == []
