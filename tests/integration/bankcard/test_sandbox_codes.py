"""UnionPay answer codes of CHANNELS-ADDENDUM §2 through the real bank-card adapter and
RefundGateway, against the sandbox's ``resp_code_<code>`` faults, on SQLite and PostgreSQL.

A6 (有缺陷的成功) is final success on the synchronous answer, the query and the back
notification: before issue 15 item 6 the gateway made it FAILED / ABNORMAL, so a reroute
paid the customer a second time. The unknown answers (03/04/05/12, the refund executed
all the same) and the not-accepted ones (02/37, nothing executed) end in one execution.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from gateway import Money, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.errors import GatewayError
from gateway.models import ChannelStatus, Refund
from tests.integration.bankcard.conftest import Receiver, fault, paid, settle, truth

S = RefundStatus
BANK = Route.BANKCARD


def ask(sandbox_url: str, fen: int = 2_500) -> RefundRequest:
    return RefundRequest(idempotency_key="k1", payment=paid(sandbox_url, BANK),
                         amount=Money(fen), reason="test")


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a6_on_the_refund_answer_is_success(gw: RefundGateway, sandbox_url: str,
                                            receiver: Receiver) -> None:
    settle(sandbox_url, BANK, "after_queries", 5)      # only the A6 answer can settle it
    fault(sandbox_url, BANK, "refund", "resp_code_A6")
    refund = gw.refund(ask(sandbox_url))
    assert (refund.status, refund.failure_code) == (S.SUCCEEDED, None)
    assert refund.channel_refund_id and \
        refund.bank_ack.get("queryId") == refund.channel_refund_id
    # the A6 back notification is accepted and changes nothing
    assert wait_for(lambda: 200 in receiver.answers)
    assert gw.sync(refund.id).status is S.SUCCEEDED      # query: origRespCode A6
    [row] = truth(sandbox_url, BANK)
    assert (row["status"], row["executions"]) == ("SUCCESS", 1)


def test_a6_in_the_query_is_success(gw: RefundGateway, sandbox_url: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    refund = gw.refund(ask(sandbox_url))
    assert refund.status is S.PROCESSING
    fault(sandbox_url, BANK, "query", "resp_code_A6")
    done = gw.sync(refund.id)
    assert (done.status, done.failure_code) == (S.SUCCEEDED, None)
    assert done.bank_ack.get("queryId") == refund.channel_refund_id


def test_a6_is_never_rerouted_so_never_paid_twice(gw: RefundGateway,
                                                  sandbox_url: str) -> None:
    """Issue 15's reproduction: A6 in the query made the refund ABNORMAL, and reroute()
    then credited the wallet too. Now the refund succeeds and reroute() refuses."""
    settle(sandbox_url, BANK, "after_queries", 1)
    refund = gw.refund(ask(sandbox_url))
    fault(sandbox_url, BANK, "query", "resp_code_A6", count=5)   # every query says A6
    assert gw.sync(refund.id).status is S.SUCCEEDED
    with pytest.raises(GatewayError):
        gw.reroute(refund.id, Route.BALANCE)
    assert gw.get(refund.id).status is S.SUCCEEDED
    assert truth(sandbox_url, Route.BALANCE) == []


def test_a6_in_the_back_notification_is_success(gw: RefundGateway, sandbox_url: str,
                                                receiver: Receiver) -> None:
    fault(sandbox_url, BANK, "notify", "resp_code_A6")
    refund = gw.refund(ask(sandbox_url))    # settles at once: an A6 notice follows
    assert wait_for(lambda: 200 in receiver.answers)     # answered after it is applied
    assert (gw.get(refund.id).status, gw.get(refund.id).failure_code) == (S.SUCCEEDED, None)


def test_the_adapter_reads_a6_on_all_three_answers(gw: RefundGateway,
                                                   sandbox_url: str) -> None:
    """The adapter alone (no service): submit, query, and the notification it is sent."""
    settle(sandbox_url, BANK, "after_queries", 5)
    fault(sandbox_url, BANK, "refund", "resp_code_A6")
    payment = paid(sandbox_url, BANK)
    now = datetime.now(UTC)
    refund = Refund(id="RFA6", idempotency_key="kA6", route=BANK, payment=payment,
                    amount=Money(1_200), reason="A6", status=S.PENDING,
                    channel_refund_no="RF20260101A6000001", created_at=now, updated_at=now)
    adapter = gw.adapters[BANK]
    submitted = adapter.submit(refund)
    assert (submitted.status, submitted.amount) == (ChannelStatus.SUCCEEDED, Money(1_200))
    assert adapter.query(refund).status is ChannelStatus.SUCCEEDED


@pytest.mark.parametrize("code", ["03", "04", "05", "12"])
def test_unknown_answers_are_resolved_by_the_query(gw: RefundGateway, sandbox_url: str,
                                                   code: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    fault(sandbox_url, BANK, "refund", f"resp_code_{code}")
    refund = gw.refund(ask(sandbox_url))              # executed; the answer says `code`
    assert (refund.status, refund.failure_code) == (S.PROCESSING, None)
    assert gw.sync(refund.id).status is S.SUCCEEDED
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1]


@pytest.mark.parametrize("code", ["02", "37"])
def test_not_accepted_answers_are_sent_again_once(gw: RefundGateway, sandbox_url: str,
                                                  code: str) -> None:
    settle(sandbox_url, BANK, "after_queries", 1)
    fault(sandbox_url, BANK, "refund", f"resp_code_{code}")
    refund = gw.refund(ask(sandbox_url))              # nothing executed by that answer
    assert (refund.status, refund.failure_code) == (S.PROCESSING, None)
    after = gw.sync(refund.id)       # 02: resent inline already; 37: 34 -> resend
    if after.status is not S.SUCCEEDED:
        after = gw.sync(refund.id)
    assert after.status is S.SUCCEEDED
    assert [r["executions"] for r in truth(sandbox_url, BANK)] == [1]
