"""UnionPay protocol edges (CHANNELS-ADDENDUM §2) through the real bank-card adapter and
RefundGateway against the sandbox, on SQLite and PostgreSQL.

* ``encoding=utf-8`` as UnionPay's PHP demo spells it: the answers, queries and the back
  notification come back signed over ``utf-8`` and the adapter verifies every one.
* A taken orderId, 12 重复交易[2010002]: never a failure (it proves nothing about the first
  request), always "ask": the query finds the refund when there is one; when the orderId
  was the consume's own (lokielse/omnipay-unionpay#19) it finds nothing and nothing moved.
* The final-failure codes as the synchronous answer: FAILED with nothing executed, except
  11 验签失败, our signature: ChannelAuthError, the refund waits (PENDING).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.bankcard import adapter as bankcard_adapter
from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.errors import ChannelAuthError, OutcomeUnknown
from gateway.models import ChannelStatus, Refund
from sandbox.state import UNIONPAY_FAILURE_CODES
from tests.integration.bankcard.conftest import Receiver, fault, paid, settle, truth
from tests.integration.bankcard.test_sandbox_codes import wait_for

S = RefundStatus
BANK = Route.BANKCARD


def bare_refund(payment: Payment, no: str) -> Refund:
    now = datetime.now(UTC)
    return Refund(id=no, idempotency_key=no, route=BANK, payment=payment,
                  amount=Money(1_200), reason="edge", status=S.PENDING,
                  channel_refund_no=no, created_at=now, updated_at=now)


def test_lower_case_encoding_is_verified_on_every_answer(
        gw: RefundGateway, sandbox_url: str, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    common = bankcard_adapter._common()
    monkeypatch.setattr(bankcard_adapter, "_common",
                        lambda: {**common, "encoding": "utf-8"})   # the PHP demo's spelling
    settle(sandbox_url, BANK, "after_queries", 1)
    adapter = gw.adapters[BANK]
    alone = bare_refund(paid(sandbox_url, BANK), "RF20260101ENC00001")
    submitted = adapter.submit(alone)                    # verified over encoding=utf-8
    assert (submitted.status, submitted.raw["encoding"]) == (ChannelStatus.PROCESSING,
                                                             "utf-8")
    queried = adapter.query(alone)
    assert (queried.status, queried.raw["encoding"]) == (ChannelStatus.SUCCEEDED, "utf-8")
    refund = gw.refund(RefundRequest("k1", paid(sandbox_url, BANK), Money(2_500), "edge"))
    assert refund.status is S.PROCESSING and refund.channel_refund_id
    assert gw.sync(refund.id).status is S.SUCCEEDED
    assert wait_for(lambda: 200 in receiver.answers)     # its notice verified and applied
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1, 1]


def test_a_resent_order_id_is_a_duplicate_the_query_resolves(
        gw: RefundGateway, sandbox_url: str) -> None:
    adapter = gw.adapters[BANK]
    refund = bare_refund(paid(sandbox_url, BANK), "RF20260101DUP00001")
    assert adapter.submit(refund).status is ChannelStatus.PROCESSING
    with pytest.raises(OutcomeUnknown) as raised:          # 12: not a failure
        adapter.submit(refund)
    assert raised.value.code == "12"
    assert adapter.query(refund).status is ChannelStatus.SUCCEEDED
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1]


def test_the_consumes_order_id_is_a_duplicate_and_nothing_moves(
        gw: RefundGateway, sandbox_url: str) -> None:
    adapter = gw.adapters[BANK]
    payment = paid(sandbox_url, BANK)
    refund = bare_refund(payment, payment.merchant_order_no)
    with pytest.raises(OutcomeUnknown) as raised:
        adapter.submit(refund)
    assert raised.value.code == "12"
    assert adapter.query(refund).status is ChannelStatus.NOT_FOUND
    assert truth(sandbox_url, BANK) == []


@pytest.mark.parametrize("code", UNIONPAY_FAILURE_CODES)
def test_final_failure_codes_on_the_refund_answer(gw: RefundGateway, sandbox_url: str,
                                                  code: str) -> None:
    fault(sandbox_url, BANK, "refund", f"resp_code_{code}")
    refund = gw.refund(RefundRequest("k1", paid(sandbox_url, BANK), Money(2_500), "edge"))
    if code == "11":     # our signature rejected: fix the key, the same orderId goes out
        assert (refund.status, refund.failure_code) == (S.PENDING, None)
        fault(sandbox_url, BANK, "refund", "resp_code_11")
        with pytest.raises(ChannelAuthError):
            gw.adapters[BANK].submit(refund)
    else:
        assert (refund.status, refund.failure_code) == (S.FAILED, code)
    assert truth(sandbox_url, BANK) == []
