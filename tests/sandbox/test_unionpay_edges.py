"""UnionPay protocol edges of CHANNELS-ADDENDUM §2 in the sandbox, over HTTP with the CH §6
client of ``test_unionpay``: ``encoding`` in any case (echoed as sent, and signed so), a
taken orderId answered 12 重复交易[2010002] however it was taken, and the final-failure
codes as fault kinds.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from sandbox.state import RESP_CODE_FAULTS, UNIONPAY_FAILURE_CODES
from tests.sandbox import test_unionpay
from tests.sandbox.channel_support import Catcher
from tests.sandbox.test_unionpay import Client, verifies

# The CH §6 client on the plugin's sandbox, and a merchant backUrl that records notices.
client, catcher = test_unionpay.client, test_unionpay.catcher


def respelled(client: Client, fields: dict[str, str], encoding: str) -> dict[str, str]:
    """The same request with ``encoding`` spelled otherwise, signed again."""
    unsigned = {k: v for k, v in fields.items() if k not in ("signature", "certId")}
    return client.sign({**unsigned, "encoding": encoding})


@pytest.mark.parametrize("encoding", ["utf-8", "Utf-8", "UTF-8"])
def test_encoding_in_any_case_is_accepted_and_echoed_as_sent(
        client: Client, catcher: Catcher, encoding: str) -> None:
    pay = client.payment()
    fields = respelled(client, client.refund_fields("R20260101E0001", pay["channel_trade_no"],
                                                    300, back_url=catcher.url), encoding)
    answer = client.refund(fields)                 # refund() checks the signature
    assert (answer["respCode"], answer["encoding"]) == ("00", encoding)
    [(_, body)] = catcher.wait(1)
    note = dict(parse_qsl(body.decode("utf-8")))
    assert verifies(note, client.cert) and note["encoding"] == encoding
    query = respelled(client, {
        "version": "5.1.0", "signMethod": "01", "txnType": "00", "txnSubType": "00",
        "bizType": "000000", "accessType": "0", "merId": fields["merId"],
        "orderId": "R20260101E0001", "txnTime": fields["txnTime"]}, encoding)
    r = client.post("/gateway/api/queryTrans.do", query)
    answered = test_unionpay.parse_answer(r.text)
    assert verifies(answered, client.cert)
    assert (answered["respCode"], answered["origRespCode"], answered["encoding"]) == (
        "00", "00", encoding)


def test_another_encoding_is_a_format_error(client: Client) -> None:
    pay = client.payment()
    fields = respelled(client, client.refund_fields("R20260101E0002", pay["channel_trade_no"],
                                                    300), "GBK")
    assert client.refund(fields)["respCode"] == "10"
    assert client.truth() == []


def test_the_consumes_own_order_id_is_a_duplicate(client: Client) -> None:
    """lokielse/omnipay-unionpay#19/#22: the refund sent under the payment's orderId got
    重复交易[2010002]; nothing was refunded."""
    pay = client.payment()
    fields = client.refund_fields(pay["merchant_order_no"], pay["channel_trade_no"], 300)
    answer = client.refund(fields)
    assert (answer["respCode"], answer["respMsg"]) == ("12", "重复交易[2010002]")
    assert "queryId" not in answer and client.truth() == []


def test_a_resent_refund_is_a_duplicate_and_runs_once(client: Client) -> None:
    pay = client.payment()
    fields = client.refund_fields("R20260101E0003", pay["channel_trade_no"], 300)
    first = client.refund(fields)
    assert first["respCode"] == "00"
    for _ in range(2):
        again = client.refund(fields)                       # the very same request
        assert (again["respCode"], again["respMsg"]) == ("12", "重复交易[2010002]")
    other = client.refund(client.refund_fields("R20260101E0003", pay["channel_trade_no"],
                                               301))          # other content, other time
    assert other["respCode"] == "12"
    assert [(t["executions"], t["amount_fen"]) for t in client.truth()] == [(1, 300)]
    assert client.query("R20260101E0003", fields["txnTime"])["queryId"] == first["queryId"]


@pytest.mark.parametrize("code", UNIONPAY_FAILURE_CODES)
def test_every_final_failure_code_is_a_fault_kind(client: Client, code: str) -> None:
    assert f"resp_code_{code}" in RESP_CODE_FAULTS
    client.fault("refund", f"resp_code_{code}")
    pay = client.payment()
    fields = client.refund_fields("R20260101E0004", pay["channel_trade_no"], 300)
    answer = client.refund(fields)
    assert answer["respCode"] == code and "queryId" not in answer and answer["respMsg"]
    assert client.truth() == []                             # refused: nothing ran
    assert client.query("R20260101E0004", fields["txnTime"])["respCode"] == "34"
