"""The UnionPay sandbox's ``resp_code_<code>`` faults (CHANNELS-ADDENDUM §2 codes) over HTTP.

Each fault is checked against what the sandbox's docstring promises: which code is
answered, whether the refund was executed (the truth), and what the query and the back
notification say afterwards. The client is the CH §6 one of ``test_unionpay``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from urllib.parse import parse_qsl

import pytest
import requests

from sandbox.server import SandboxServer
from sandbox.state import FAULT_KINDS, RESP_CODE_FAULTS
from tests.sandbox.channel_support import Catcher
from tests.sandbox.test_unionpay import Client, verifies

ORDER = "R20260101C0001"


@pytest.fixture
def client(refund_sandbox: SandboxServer) -> Client:
    return Client(refund_sandbox)


@pytest.fixture
def catcher() -> Iterator[Catcher]:
    """The merchant's backUrl, recording the back notifications."""
    with closing(Catcher()) as back_url:
        yield back_url


def settle_after_queries(client: Client, n: int = 1) -> None:
    r = requests.post(client.base + "/_sandbox/config", timeout=5,
                      json={"settle": {"bankcard": {"mode": "after_queries", "n": n}}})
    assert r.status_code == 200


def note_of(body: bytes, client: Client) -> dict[str, str]:
    note = dict(parse_qsl(body.decode("utf-8")))
    assert verifies(note, client.cert)
    return note


def test_every_addendum_code_is_a_fault_kind() -> None:
    failure_row = ("01", "10", "11", "13", "30", "31", "32", "33", "35", "36", "38", "39",
                   "45", "60", "61", "62", "63", "99")
    assert {f"resp_code_{c}" for c in ("A6", "02", "03", "04", "05", "06", "12", "34",
                                       "37", *failure_row)} == set(RESP_CODE_FAULTS)
    assert set(RESP_CODE_FAULTS) <= set(FAULT_KINDS)


def test_a6_on_the_refund_succeeds_everywhere(client: Client, catcher: Catcher) -> None:
    settle_after_queries(client, 5)       # A6 is final success whatever the Settle rule
    client.fault("refund", "resp_code_A6")
    pay = client.payment(10000)
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 2500, back_url=catcher.url)
    answer = client.refund(fields)
    assert (answer["respCode"], answer["respMsg"]) == ("A6", "有缺陷的成功")
    [truth] = client.truth()
    assert answer["queryId"] == truth["channel_refund_id"]
    assert (truth["status"], truth["executions"]) == ("SUCCESS", 1)
    query = client.query(ORDER, fields["txnTime"])
    assert (query["respCode"], query["origRespCode"]) == ("00", "A6")
    assert query["settleDate"] and query["traceNo"]
    [(_, body)] = catcher.wait(1)
    note = note_of(body, client)
    assert (note["respCode"], note["orderId"], note["txnAmt"]) == ("A6", ORDER, "2500")


def test_a6_on_the_query_of_a_succeeded_refund(client: Client, catcher: Catcher) -> None:
    settle_after_queries(client, 1)
    pay = client.payment()
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 100, back_url=catcher.url)
    assert client.refund(fields)["respCode"] == "00"
    client.fault("query", "resp_code_A6")
    assert client.query(ORDER, fields["txnTime"])["origRespCode"] == "A6"
    assert client.query(ORDER, fields["txnTime"])["origRespCode"] == "A6"   # it stays A6
    [(_, body)] = catcher.wait(1)
    assert note_of(body, client)["respCode"] == "A6"


def test_a6_on_the_notification(client: Client, catcher: Catcher) -> None:
    client.fault("notify", "resp_code_A6")
    pay = client.payment()
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 100, back_url=catcher.url)
    assert client.refund(fields)["respCode"] == "00"
    [(_, body)] = catcher.wait(1)
    assert note_of(body, client)["respCode"] == "A6"
    # only the notice was changed: the query still says 00
    assert client.query(ORDER, fields["txnTime"])["origRespCode"] == "00"


@pytest.mark.parametrize("code", ["03", "04", "05", "12"])
def test_unknown_answers_are_executed_all_the_same(client: Client, code: str) -> None:
    settle_after_queries(client, 1)
    client.fault("refund", f"resp_code_{code}")
    pay = client.payment()
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 100)
    answer = client.refund(fields)
    assert answer["respCode"] == code and "queryId" not in answer
    [truth] = client.truth()
    assert truth["executions"] == 1
    query = client.query(ORDER, fields["txnTime"])
    assert (query["respCode"], query["origRespCode"]) == ("00", "00")
    # the same orderId again executes nothing more: 12 重复交易 (addendum §2)
    assert client.refund(fields)["respCode"] == "12"
    assert [t["executions"] for t in client.truth()] == [1]


@pytest.mark.parametrize("code", ["02", "06", "37", "34"])
def test_not_accepted_answers_execute_nothing(client: Client, code: str) -> None:
    client.fault("refund", f"resp_code_{code}")
    pay = client.payment()
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 100)
    assert client.refund(fields)["respCode"] == code
    assert client.truth() == []
    assert client.query(ORDER, fields["txnTime"])["respCode"] == "34"
    assert client.refund(fields)["respCode"] == "00"        # a resend executes once
    assert [t["executions"] for t in client.truth()] == [1]


@pytest.mark.parametrize("code", ["03", "04", "05", "02", "06", "37", "34", "12"])
def test_query_own_code_faults(client: Client, code: str) -> None:
    settle_after_queries(client, 1)
    pay = client.payment()
    fields = client.refund_fields(ORDER, pay["channel_trade_no"], 100)
    client.refund(fields)
    client.fault("query", f"resp_code_{code}")
    query = client.query(ORDER, fields["txnTime"])
    assert query["respCode"] == code and "origRespCode" not in query
    assert client.truth()[0]["status"] == "PROCESSING"      # that query did not count
    assert client.query(ORDER, fields["txnTime"])["origRespCode"] == "00"
