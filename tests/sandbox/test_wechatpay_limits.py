"""WeChat Pay's refund limits (CHANNELS-ADDENDUM §9) in the sandbox, with the real
wechatpayv3 SDK: the reason counted in UTF-8 bytes, the 50 refunds of one order, and the
one-minute spacing between refunds of one order (429 FREQUENCY_LIMITED, the v3 error
object, nothing executed; the same out_refund_no goes through once the time has passed).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from wechatpayv3 import WeChatPay  # noqa: TID251 - the real SDK is the point

from sandbox.server import SandboxServer
from sandbox.state import Payment
from tests.sandbox import test_wechatpay
from tests.sandbox.test_wechatpay import CNY, pay, query, refund, truth

# The plugin's sandbox, reset per test, and the real SDK configured for it.
sandbox, wx = test_wechatpay.sandbox, test_wechatpay.wx


def limits(sandbox: SandboxServer, seconds: float) -> None:
    r = requests.post(sandbox.url + "/_sandbox/config", timeout=5,
                      json={"limits": {"wechatpay": {"refund_interval_seconds": seconds}}})
    assert r.status_code == 200


def with_reason(wx: WeChatPay, payment: Payment, no: str, reason: str
                ) -> tuple[int, dict[str, object]]:
    code, body = wx.refund(out_refund_no=no, amount={"refund": 100,
                                                     "total": payment.amount_fen,
                                                     "currency": CNY},
                           transaction_id=payment.channel_trade_no, reason=reason)
    return code, json.loads(body)


# -- reason: 80 bytes of UTF-8 ------------------------------------------------------------
def test_the_reason_is_counted_in_utf8_bytes(sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox)
    fits = "退" * 26 + "ab"                       # 78 + 2 = 80 bytes
    assert len(fits.encode()) == 80
    assert with_reason(wx, payment, "R-80", fits)[0] == 200
    too_long = "退" * 27                          # 27 characters, 81 bytes
    code, body = with_reason(wx, payment, "R-81", too_long)
    assert (code, body["code"]) == (400, "PARAM_ERROR")
    detail = body["detail"]
    assert isinstance(detail, dict) and detail["field"] == "/reason"
    assert with_reason(wx, payment, "R-81a", "a" * 81)[1]["code"] == "PARAM_ERROR"
    assert [r["channel_refund_no"] for r in truth(sandbox)] == ["R-80"]
    [row] = truth(sandbox)
    assert row["extra"]["reason"] == fits


# -- 50 refunds of one order ----------------------------------------------------------------
def test_a_fifty_first_refund_is_refused_but_resends_still_answer(
        sandbox: SandboxServer, wx: WeChatPay) -> None:
    payment = pay(sandbox, 1000)
    for n in range(50):
        assert refund(wx, payment, f"R50-{n}", 1)[0] == 200
    code, body = refund(wx, payment, "R50-50", 1)
    assert (code, body["code"]) == (400, "INVALID_REQUEST")
    assert "50" in str(body["message"])
    code, again = refund(wx, payment, "R50-7", 1)          # a resend is not a new refund
    assert code == 200 and again["out_refund_no"] == "R50-7"
    assert len(truth(sandbox)) == 50
    assert all(r["executions"] == 1 for r in truth(sandbox))


# -- refunds of one order >= 1 minute apart ---------------------------------------------------
def test_the_spacing_rule_is_off_unless_configured(sandbox: SandboxServer,
                                                   wx: WeChatPay) -> None:
    payment = pay(sandbox)
    assert refund(wx, payment, "R-a", 100)[0] == 200
    assert refund(wx, payment, "R-b", 100)[0] == 200


def test_a_second_refund_within_the_interval_is_frequency_limited(
        sandbox: SandboxServer, wx: WeChatPay) -> None:
    limits(sandbox, 60)
    payment, other = pay(sandbox), pay(sandbox)
    code, first = refund(wx, payment, "R-1", 100)
    assert code == 200
    r = requests.post(sandbox.url + "/v3/refund/domestic/refunds", timeout=5,
                      data=b"{}")                    # unsigned: a 401 comes first
    assert r.status_code == 401
    code, body = refund(wx, payment, "R-2", 100)
    assert code == 429 and set(body) == {"code", "message"}
    assert body["code"] == "FREQUENCY_LIMITED"
    assert query(wx, "R-2")[0] == 404                      # nothing executed
    code, again = refund(wx, payment, "R-1", 100)          # a resend is answered as ever
    assert code == 200 and again["refund_id"] == first["refund_id"]
    assert refund(wx, other, "R-other", 100)[0] == 200     # another order is not held
    assert sorted(r["channel_refund_no"] for r in truth(sandbox)) == ["R-1", "R-other"]


def test_the_refused_number_goes_through_once_the_interval_passed(
        sandbox: SandboxServer, wx: WeChatPay) -> None:
    limits(sandbox, 0.5)
    payment = pay(sandbox)
    assert refund(wx, payment, "R-1", 100)[0] == 200
    assert refund(wx, payment, "R-2", 100)[0] == 429
    time.sleep(0.6)
    code, body = refund(wx, payment, "R-2", 100)           # the same out_refund_no
    assert code == 200 and body["out_refund_no"] == "R-2"
    assert [r["executions"] for r in truth(sandbox)] == [1, 1]


def test_reset_turns_the_rule_off(sandbox: SandboxServer, wx: WeChatPay) -> None:
    limits(sandbox, 60)
    sandbox.state.reset()
    payment = pay(sandbox)
    assert refund(wx, payment, "R-1", 100)[0] == 200
    assert refund(wx, payment, "R-2", 100)[0] == 200


@pytest.mark.parametrize("rules", [{"refund_interval_seconds": -1},
                                   {"refund_interval_seconds": "60"}, []])
def test_bad_limits_are_refused(sandbox: SandboxServer, rules: object) -> None:
    r = requests.post(sandbox.url + "/_sandbox/config", timeout=5,
                      json={"limits": {"wechatpay": rules}})
    assert r.status_code == 400
