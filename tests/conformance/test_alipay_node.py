"""The sandbox's Alipay gateway driven by Alipay's official Node SDK (``alipay-sdk`` 4.14.0,
``js/alipay_node.js``): refund, refund query, the bill URL and the bill ZIP, the
``trade_status_sync`` notification. Answers are checked with ``exec(..., {validateSign:
true})`` (``AlipaySdk.checkResponseSign``), notifications with ``checkNotifySignV2``; a
wrongly signed answer and notification must be refused by the same code.

The SDK returns answers camelCased (``fundChange``), deep, as documented (``camelcase:
true`` by default); that is the SDK's presentation, not the wire.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dotenv import dotenv_values

from sandbox.alipay import AUTH_APP_ID, CERT_APP_ID, AlipayChannel
from sandbox.server import SandboxServer
from sandbox.state import BEIJING
from tests.conformance.conftest import fault, pay, truth
from tests.sandbox.channel_support import Catcher

PREFIX = "REFUND_GATEWAY_ALIPAY__"
SCRIPT = "alipay_node.js"


@pytest.fixture
def sdk(node: Any, client_env: dict[str, str]) -> Any:
    base = {"gateway": client_env[PREFIX + "GATEWAY_URL"],
            "appId": client_env[PREFIX + "APP_ID"],
            "privateKey": client_env[PREFIX + "APP_PRIVATE_KEY"],     # PKCS#8, as written
            "alipayPublicKey": client_env[PREFIX + "ALIPAY_PUBLIC_KEY"]}

    def run(command: str, **args: Any) -> dict[str, Any]:
        answer: dict[str, Any] = node(SCRIPT, command, {**base, **args})
        return answer
    return run


def refund(sdk: Any, payment: dict[str, Any], amount: str = "25.00", no: str = "R1",
           **args: Any) -> dict[str, Any]:
    answer: dict[str, Any] = sdk("refund", outTradeNo=payment["merchant_order_no"],
                                 refundAmount=amount, outRequestNo=no,
                                 refundReason="沙箱退款", **args)
    return answer


def test_refund_then_query(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    answer = refund(sdk, payment)
    assert "error" not in answer, answer
    assert (answer["code"], answer["msg"], answer["fundChange"]) == ("10000", "Success", "Y")
    assert answer["refundFee"] == "25.00" and answer["tradeNo"] == payment["channel_trade_no"]
    assert answer["refundDetailItemList"] == [
        {"fundChannel": "ALIPAYACCOUNT", "amount": "25.00", "realAmount": "25.00"}]
    [row] = truth(sandbox, "alipay")
    assert (row["channel_refund_no"], row["amount_fen"], row["executions"],
            row["status"]) == ("R1", 2_500, 1, "SUCCESS")

    again = refund(sdk, payment)                      # same out_request_no: no second run
    assert (again["code"], again["fundChange"]) == ("10000", "N")
    assert truth(sandbox, "alipay")[0]["executions"] == 1

    found = sdk("query", tradeNo=payment["channel_trade_no"], outRequestNo="R1")
    assert "error" not in found, found
    assert (found["code"], found["refundStatus"], found["refundAmount"]) == (
        "10000", "REFUND_SUCCESS", "25.00")
    assert found["gmtRefundPay"] == answer["gmtRefundPay"]
    assert found["depositBackInfo"] == {"hasDepositBack": "false"}


def test_business_refusal_is_returned(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay", fen=1_000)
    answer = refund(sdk, payment, amount="20.00")
    assert (answer["code"], answer["subCode"]) == ("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")


def test_wrongly_signed_answer_is_refused_by_the_sdk(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    fault(sandbox, "alipay", "refund", "bad_signature")
    answer = refund(sdk, payment)
    assert answer.get("error") == "AlipayRequestError", answer
    assert "验签失败" in answer["message"]


def test_client_bug_unsigned_gateway_error_crashes_validate_sign(sandbox: SandboxServer,
                                                                 sdk: Any) -> None:
    """Theirs: Alipay answers some gateway errors UNSIGNED (unknown app_id, addendum §6),
    and ``checkResponseSign`` hands the missing ``sign`` straight to
    ``crypto.Verify.verify`` -> a raw ``TypeError`` (ERR_INVALID_ARG_TYPE) instead of an
    ``AlipayRequestError`` carrying the answer; the Java SDK checks failures only when
    ``sign`` is non-empty (addendum §6)."""
    payment = pay(sandbox, "alipay")
    answer = refund(sdk, payment, appId="2021000000009999")
    assert (answer.get("error"), answer.get("code")) == ("TypeError", "ERR_INVALID_ARG_TYPE")
    assert "signature" in answer["message"]
    assert truth(sandbox, "alipay") == []


def test_bad_request_signature_is_a_signed_refusal(sandbox: SandboxServer, sdk: Any) -> None:
    """Addendum §6: answered signed under the method's key; the SDK verifies and returns it."""
    payment = pay(sandbox, "alipay")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_key = other.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    answer = refund(sdk, payment, privateKey=wrong_key)
    assert "error" not in answer, answer
    assert (answer["code"], answer["subCode"]) == ("40002", "isv.invalid-signature")
    assert "网关生成的验签字符串为" in answer["subMsg"]
    assert truth(sandbox, "alipay") == []


def test_bill_download(sandbox: SandboxServer, sdk: Any) -> None:
    payment = pay(sandbox, "alipay")
    assert "error" not in refund(sdk, payment, no="RB1")
    bill = sdk("bill", billDate=datetime.now(BEIJING).date().isoformat())
    assert "error" not in bill, bill
    assert bill["code"] == "10000" and bill["downloadStatus"] == 200
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(bill["zipB64"]))) as archive:
        names = {i.filename.encode("cp437").decode("gbk"): i for i in archive.infolist()}
        [detail] = [i for n, i in names.items() if n.endswith("_业务明细.csv")]
        text = archive.read(detail).decode("gbk")
    assert any(n.endswith("_业务明细(汇总).csv") for n in names)
    [row] = [line for line in text.splitlines() if "RB1" in line]
    assert [c.strip() for c in row.split(",")][2] == "退款"


def test_notification_verified_by_the_sdk(sandbox: SandboxServer, sdk: Any,
                                          catcher: Catcher) -> None:
    payment = pay(sandbox, "alipay")
    assert "error" not in refund(sdk, payment, no="RN1", notifyUrl=catcher.url)
    fault(sandbox, "alipay", "notify", "bad_signature")
    assert "error" not in refund(sdk, payment, no="RN2", notifyUrl=catcher.url)
    received = catcher.wait(2)
    assert len(received) == 2, received
    by_no = {dict(parse_qsl(body.decode()))["out_biz_no"]: body.decode()
             for _, body in received}
    good = sdk("verify_notify", body=by_no["RN1"])
    assert good["verified"] is True and good["verifiedV1"] is True, good
    assert good["params"]["trade_status"] == "TRADE_SUCCESS"
    forged = sdk("verify_notify", body=by_no["RN2"])
    assert forged["verified"] is False and forged["verifiedV1"] is False, forged


@pytest.fixture
def cert_env(sandbox: SandboxServer, tmp_path: Any) -> Iterator[dict[str, str]]:
    """The env file ``refund-gateway sandbox serve --alipay-mode cert --alipay-isv``
    writes: the certificate app, read back as an outside client reads it."""
    channel = sandbox.channel("alipay")
    assert isinstance(channel, AlipayChannel)
    channel.client_mode, channel.client_isv = "cert", True
    try:
        path = sandbox.write_env_file(tmp_path / "cert.env")
    finally:
        channel.client_mode, channel.client_isv = "key", False
    yield {k: v for k, v in dotenv_values(path).items() if v is not None}


@pytest.fixture
def cert_sdk(node: Any, cert_env: dict[str, str]) -> Any:
    assert PREFIX + "ALIPAY_PUBLIC_KEY" not in cert_env
    base = {"gateway": cert_env[PREFIX + "GATEWAY_URL"], "appId": cert_env[PREFIX + "APP_ID"],
            "privateKey": cert_env[PREFIX + "APP_PRIVATE_KEY"],
            "appCertContent": cert_env[PREFIX + "APP_CERT"],
            "alipayPublicCertContent": cert_env[PREFIX + "ALIPAY_CERT"],
            "alipayRootCertContent": cert_env[PREFIX + "ALIPAY_ROOT_CERT"],
            "appAuthToken": cert_env[PREFIX + "APP_AUTH_TOKEN"]}

    def run(command: str, **args: Any) -> dict[str, Any]:
        answer: dict[str, Any] = node(SCRIPT, command, {**base, **args})
        return answer
    return run


def test_certificate_mode_and_isv_with_the_official_sdk(sandbox: SandboxServer,
                                                        cert_sdk: Any) -> None:
    """Alipay's Node SDK computes app_cert_sn and alipay_root_cert_sn its own way
    (antcertutil.getSN: the issuer's attributes reversed, the RSA roots only): the
    sandbox accepts them, and its answers verify with the Alipay certificate's key."""
    payment = pay(sandbox, "alipay")
    answer = refund(cert_sdk, payment, no="RC1")
    assert "error" not in answer, answer
    assert (answer["code"], answer["fundChange"]) == ("10000", "Y")
    found = cert_sdk("query", tradeNo=payment["channel_trade_no"], outRequestNo="RC1")
    assert "error" not in found and found["refundStatus"] == "REFUND_SUCCESS", found
    [row] = truth(sandbox, "alipay")
    assert (row["extra"]["app_id"], row["extra"]["auth_app_id"]) == (CERT_APP_ID,
                                                                     AUTH_APP_ID)


def test_certificate_mode_refuses_a_rotated_answer_it_cannot_verify(
        sandbox: SandboxServer, cert_sdk: Any) -> None:
    """The Node SDK verifies with the configured certificate only: after cert_rotated its
    check fails (a client that follows alipay_cert_sn is what the gateway does)."""
    payment = pay(sandbox, "alipay")
    fault(sandbox, "alipay", "refund", "cert_rotated")
    answer = refund(cert_sdk, payment, no="RC2")
    assert answer.get("error") == "AlipayRequestError" and "验签失败" in answer["message"]
