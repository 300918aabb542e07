"""WeChat's refund limits (CHANNELS-ADDENDUM §9) through the real WeChat adapter and
RefundGateway against the sandbox, on SQLite and PostgreSQL.

* Refunds of one order < 1 min apart: 429 FREQUENCY_LIMITED is "not accepted" - an
  unknown outcome (the adapter's SUBMIT_CODES), never FAILED; the resolver asks first,
  finds nothing, and sends the SAME out_refund_no again once the interval has passed.
* The 51st refund of an order: 400 INVALID_REQUEST, a verified refusal -> FAILED, nothing
  moved.
* The reason in UTF-8 bytes: ``validate`` refuses more than 80 before anything is stored,
  and the adapter never sends more than 80 (it used to cut at 80 characters: 240 bytes
  of Chinese, which WeChat refuses).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.errors import InvalidRequest, OutcomeUnknown
from gateway.models import ChannelStatus, Refund
from tests.helpers import FakeClock
from tests.integration.wechatpay import test_wechat_sandbox as base
from tests.integration.wechatpay.test_wechat_sandbox import Control

S = RefundStatus
# The WeChat gateway on both stores, the control API, and the business clock it runs on.
gw, control, clock = base.gw, base.control, base.clock


def interval(control: Control, seconds: float) -> None:
    control.call("POST", "/_sandbox/config",
                 {"limits": {"wechatpay": {"refund_interval_seconds": seconds}}})


def truth(control: Control) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]] = control.call("GET", "/_sandbox/refunds")["refunds"]
    return [r for r in rows if r["route"] == "wechatpay"]


def bare_refund(payment: Payment, no: str, fen: int = 1, reason: str = "limits") -> Refund:
    now = datetime.now(UTC)
    return Refund(id=no, idempotency_key=no, route=Route.WECHATPAY, payment=payment,
                  amount=Money(fen), reason=reason, status=S.PENDING, channel_refund_no=no,
                  created_at=now, updated_at=now)


def test_a_refund_too_soon_after_another_is_unknown_then_resent_under_its_number(
        gw: RefundGateway, control: Control, clock: FakeClock) -> None:
    interval(control, 1.0)
    payment = control.payment(10_000)
    first = gw.refund(RefundRequest("k1", payment, Money(2_000), "first"))
    second = gw.refund(RefundRequest("k2", payment, Money(3_000), "second"))
    assert (second.status, second.failure_code) == (S.PROCESSING, None)   # not FAILED
    assert [r["channel_refund_no"] for r in truth(control)] == [first.channel_refund_no]
    with pytest.raises(OutcomeUnknown) as raised:      # the adapter's own verdict
        gw.adapters[Route.WECHATPAY].submit(bare_refund(payment, "RFTOOSOON0001"))
    assert (raised.value.http_status, raised.value.code) == (429, "FREQUENCY_LIMITED")
    time.sleep(1.1)                                     # the order's interval has passed
    for _ in range(4):
        clock.advance(minutes=61)
        gw.resolve_due()
        if gw.get(second.id).status.is_final:
            break
    done = gw.get(second.id)
    assert done.status is S.SUCCEEDED
    assert done.channel_refund_no == second.channel_refund_no       # the same number
    rows = {r["channel_refund_no"]: r for r in truth(control)}
    assert rows[second.channel_refund_no]["executions"] == 1
    assert rows[second.channel_refund_no]["amount_fen"] == 3_000


def test_the_fifty_first_refund_of_an_order_fails(gw: RefundGateway,
                                                  control: Control) -> None:
    payment = control.payment(1_000)
    adapter = gw.adapters[Route.WECHATPAY]
    for n in range(50):   # made outside this gateway: only WeChat knows the count
        assert adapter.submit(bare_refund(payment, f"RF50N{n:08d}")).status in (
            ChannelStatus.PROCESSING, ChannelStatus.SUCCEEDED)
    result = adapter.submit(bare_refund(payment, "RF50N00000050"))
    assert (result.status, result.failure_code) == (ChannelStatus.FAILED, "INVALID_REQUEST")
    refund = gw.refund(RefundRequest("k51", payment, Money(1), "one more"))
    assert (refund.status, refund.failure_code) == (S.FAILED, "INVALID_REQUEST")
    assert len(truth(control)) == 50


def test_a_reason_over_80_utf8_bytes_is_refused_before_anything_is_stored(
        gw: RefundGateway, control: Control) -> None:
    payment = control.payment(10_000)
    with pytest.raises(InvalidRequest):
        gw.refund(RefundRequest("k1", payment, Money(100), "退" * 27))    # 81 bytes
    assert gw.store.find_by_key("k1") is None
    assert truth(control) == []
    fits = gw.refund(RefundRequest("k2", payment, Money(100), "退" * 26 + "ab"))
    assert fits.status in (S.PROCESSING, S.SUCCEEDED)
    assert truth(control)[0]["extra"]["reason"] == "退" * 26 + "ab"


def test_the_adapter_cuts_a_long_reason_in_bytes_not_characters(
        gw: RefundGateway, control: Control) -> None:
    """A refund stored before the rule (or sent by another path) still goes out: cut to
    80 bytes at a character boundary, where 80 characters were 240 bytes (PARAM_ERROR,
    and a FAILED refund)."""
    payment = control.payment(10_000)
    long_reason = "商品已售完请谅解" * 5               # 40 characters, 120 bytes
    result = gw.adapters[Route.WECHATPAY].submit(bare_refund(payment, "RFREASON0001", 100,
                                                             long_reason))
    assert result.status in (ChannelStatus.PROCESSING, ChannelStatus.SUCCEEDED)
    sent = truth(control)[0]["extra"]["reason"]
    assert len(sent.encode("utf-8")) <= 80 and long_reason.startswith(sent)
    assert len(sent) == 26                                 # 78 bytes; a 27th would be 81
