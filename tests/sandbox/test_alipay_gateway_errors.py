"""Alipay gateway-level errors (CHANNELS-ADDENDUM §6) from the sandbox, over HTTP.

Each answer is checked for what a client sees on the wire: the key it sits under
(``<method>_response`` or ``error_response``), whether it carries ``sign`` and whether
that sign verifies with the Alipay platform key over the exact inner text, and the
code/sub_code. First the real triggers (a request signed with another key, an unknown
app_id, a request missing a common parameter), then the fault kinds that answer the same
to a sound request. The client is the real python-alipay-sdk 3.4.0 (``test_alipay``).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import requests
from alipay import AliPay  # noqa: TID251 - the real SDK is the point
from alipay.exceptions import AliPayException  # noqa: TID251
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.server import SandboxServer
from sandbox.state import ALIPAY_GATEWAY_FAULTS, FAULT_KINDS
from tests.sandbox import test_alipay
from tests.sandbox.test_alipay import PREFIX, client, fault, payment, query, refund, truth

# The plugin's sandbox, reset per test, and the real SDK configured for it.
sandbox, alipay = test_alipay.sandbox, test_alipay.alipay

REFUND = "alipay.trade.refund"
REFUND_KEY = "alipay_trade_refund_response"
BAD_SIGNATURE = "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为："


def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def refund_params(alipay: AliPay, pay: dict[str, Any], no: str = "R1") -> dict[str, str]:
    """A refund request's parameters as the SDK would send them, ``sign`` included."""
    data = alipay.build_body(REFUND, {"out_trade_no": pay["merchant_order_no"],
                                      "refund_amount": "3.00", "out_request_no": no,
                                      "refund_reason": "退款"})
    return dict(parse_qsl(alipay.sign_data(data), keep_blank_values=True))


def send(alipay: AliPay, params: dict[str, str]) -> requests.Response:
    return requests.get(alipay._gateway + "?" + urlencode(params), timeout=5)


def envelope(r: requests.Response, sandbox: SandboxServer
             ) -> tuple[str, dict[str, Any], str | None]:
    """(key, inner object, sign or None) of an answer; a sign must verify with the Alipay
    platform key over the exact inner text as it appears in the body (CH §1.4)."""
    doc = json.loads(r.text)
    [key] = [k for k in doc if k.endswith("_response")]
    sign = doc.get("sign")
    if sign is not None:
        text = r.text[len(f'{{"{key}":'):r.text.rindex(',"sign":')]
        assert json.loads(text) == doc[key]
        pem = sandbox.settings()[PREFIX + "ALIPAY_PUBLIC_KEY"]
        public = serialization.load_pem_public_key(pem.encode())
        assert isinstance(public, rsa.RSAPublicKey)
        try:
            public.verify(base64.b64decode(sign), text.encode("utf-8"), padding.PKCS1v15(),
                          hashes.SHA256())
        except InvalidSignature:
            pytest.fail(f"{key} carries a sign that does not verify")
    return key, doc[key], sign


def codes(inner: dict[str, Any]) -> tuple[str, str, str]:
    return inner["code"], inner["msg"], inner["sub_code"]


# -- the real triggers -----------------------------------------------------------------------
def test_a_bad_signature_is_answered_signed_with_the_gateways_string(
        sandbox: SandboxServer) -> None:
    wrong = client(sandbox, private_key=other_key())
    params = refund_params(wrong, payment(sandbox))
    r = send(wrong, params)
    key, inner, sign = envelope(r, sandbox)
    assert (key, sign is not None) == (REFUND_KEY, True)
    assert codes(inner) == ("40002", "Invalid Arguments", "isv.invalid-signature")
    string = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign")
    escaped = string.replace("&", "&amp;").replace('"', "&quot;")
    assert inner["sub_msg"] == BAD_SIGNATURE + escaped
    assert "&amp;sign_type=RSA2&amp;" in inner["sub_msg"]         # sign_type is signed
    assert "biz_content={&quot;" in inner["sub_msg"]
    # the SDK finds the signed text despite the braces in the echo, and returns it
    answer = wrong._verify_and_return_sync_response(r.text, REFUND_KEY)
    assert answer["sub_code"] == "isv.invalid-signature"
    assert truth(sandbox) == []


def test_an_unknown_app_id_is_answered_unsigned_under_the_methods_key(
        sandbox: SandboxServer) -> None:
    settings = sandbox.settings()
    stranger = AliPay(appid="2021009999999999",
                      app_private_key_string=settings[PREFIX + "APP_PRIVATE_KEY"],
                      alipay_public_key_string=settings[PREFIX + "ALIPAY_PUBLIC_KEY"],
                      sign_type="RSA2")
    stranger._gateway = settings[PREFIX + "GATEWAY_URL"]
    r = send(stranger, refund_params(stranger, payment(sandbox)))
    key, inner, sign = envelope(r, sandbox)
    assert (key, sign) == (REFUND_KEY, None)
    assert "error_response" not in r.json()
    assert codes(inner) == ("40002", "Invalid Arguments", "isv.invalid-app-id")
    assert inner["sub_msg"].startswith(
        "无效的AppID参数，解决方案：https://open.alipay.com/api/errCheck?traceId=")
    assert inner["sub_msg"].endswith("&source=openapi")
    assert r.headers["Content-Type"].startswith("text/html")
    with pytest.raises(AliPayException):                 # unsigned: the SDK raises
        refund(stranger, payment(sandbox))
    assert truth(sandbox) == []


@pytest.mark.parametrize(("missing", "where", "signed", "sub_code"), [
    ("sign", "error_response", False, "isv.missing-signature"),
    ("method", "error_response", False, "isv.missing-method"),
    ("app_id", REFUND_KEY, False, "isv.missing-app-id"),
    ("sign_type", REFUND_KEY, False, "isv.missing-signature-type"),
    ("timestamp", REFUND_KEY, True, "isv.missing-timestamp"),
    ("version", REFUND_KEY, True, "isv.missing-version"),
])
def test_a_missing_common_parameter(sandbox: SandboxServer, alipay: AliPay, missing: str,
                                    where: str, signed: bool, sub_code: str) -> None:
    pay = payment(sandbox)
    data = alipay.build_body(REFUND, {"out_trade_no": pay["merchant_order_no"],
                                      "refund_amount": "3.00", "out_request_no": "R1"})
    if missing != "sign":
        data.pop(missing)                  # left out before signing: the rest verifies
    params = dict(parse_qsl(alipay.sign_data(data)))
    if missing == "sign":
        params.pop("sign")
    key, inner, sign = envelope(send(alipay, params), sandbox)
    assert (key, sign is not None) == (where, signed)
    assert codes(inner) == ("40001", "Missing Required Arguments", sub_code)
    assert truth(sandbox) == []


def test_an_unknown_method_and_a_wrong_sign_type(sandbox: SandboxServer,
                                                 alipay: AliPay) -> None:
    data = alipay.build_body("alipay.trade.nothing", {})
    params = dict(parse_qsl(alipay.sign_data(data)))
    key, inner, sign = envelope(send(alipay, params), sandbox)
    assert (key, sign, inner["sub_code"]) == ("error_response", None, "isv.invalid-method")
    params = refund_params(alipay, payment(sandbox))
    params["sign_type"] = "RSA"
    key, inner, sign = envelope(send(alipay, params), sandbox)
    assert (key, sign, inner["sub_code"]) == (REFUND_KEY, None, "isv.invalid-signature-type")


# -- the same answers as faults ------------------------------------------------------------
def test_every_gateway_error_is_a_fault_kind() -> None:
    assert set(ALIPAY_GATEWAY_FAULTS) == {
        "invalid_signature", "invalid_app_id", "missing_parameter", "invalid_auth_token",
        "insufficient_permissions", "service_unavailable"}
    assert set(ALIPAY_GATEWAY_FAULTS) <= set(FAULT_KINDS)


@pytest.mark.parametrize(("kind", "params", "where", "signed", "expected"), [
    ("invalid_signature", {}, REFUND_KEY, True,
     ("40002", "Invalid Arguments", "isv.invalid-signature")),
    ("invalid_app_id", {}, REFUND_KEY, False,
     ("40002", "Invalid Arguments", "isv.invalid-app-id")),
    ("missing_parameter", {}, "error_response", False,
     ("40001", "Missing Required Arguments", "isv.missing-signature")),
    ("missing_parameter", {"parameter": "app_id"}, REFUND_KEY, False,
     ("40001", "Missing Required Arguments", "isv.missing-app-id")),
    ("missing_parameter", {"parameter": "timestamp"}, REFUND_KEY, True,
     ("40001", "Missing Required Arguments", "isv.missing-timestamp")),
    ("invalid_auth_token", {}, "error_response", True,
     ("20001", "Insufficient Token Permissions", "aop.invalid-app-auth-token")),
    ("insufficient_permissions", {}, REFUND_KEY, True,
     ("40006", "Insufficient Permissions", "isv.insufficient-isv-permissions")),
    ("service_unavailable", {}, REFUND_KEY, True,
     ("20000", "Service Currently Unavailable", "isp.unknow-error")),
])
def test_gateway_error_faults(sandbox: SandboxServer, alipay: AliPay, kind: str,
                              params: dict[str, Any], where: str, signed: bool,
                              expected: tuple[str, str, str]) -> None:
    pay = payment(sandbox)
    fault(sandbox, "refund", kind, **params)
    key, inner, sign = envelope(send(alipay, refund_params(alipay, pay)), sandbox)
    assert (key, sign is not None, codes(inner)) == (where, signed, expected)
    assert truth(sandbox) == []                          # nothing executed
    assert refund(alipay, pay)["code"] == "10000"        # the fault was used up
    assert [r["executions"] for r in truth(sandbox)] == [1]


def test_service_unavailable_after_executing(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    fault(sandbox, "refund", "service_unavailable", executed=True)
    answer = refund(alipay, pay)
    assert (answer["code"], answer["sub_code"]) == ("20000", "isp.unknow-error")
    assert [r["executions"] for r in truth(sandbox)] == [1]     # it ran all the same
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"


def test_gateway_error_on_a_query(sandbox: SandboxServer, alipay: AliPay) -> None:
    pay = payment(sandbox)
    refund(alipay, pay)
    fault(sandbox, "query", "insufficient_permissions")
    assert query(alipay, pay)["code"] == "40006"
    assert query(alipay, pay)["refund_status"] == "REFUND_SUCCESS"
