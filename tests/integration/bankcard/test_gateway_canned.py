"""Bank card and balance through ``RefundGateway`` on SQLite and PostgreSQL, with canned
(signed) UnionPay and wallet answers. The sandbox tests cover the same paths over real
HTTP; these pin the service/adapter contract when no sandbox runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import responses

from adapters.balance.adapter import BalanceAdapter
from adapters.balance.client import WalletClient
from adapters.bankcard import signing
from adapters.bankcard.adapter import BankcardAdapter
from adapters.bankcard.client import BACK_TRANS_PATH, QUERY_PATH, UnionPayClient
from gateway import Money, OverRefund, RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from tests.helpers import FakeClock, request
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.bankcard.canned import BASE, MER_ID, signed_answer, signed_form

S = RefundStatus
WALLET = "https://wallet.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def gw(database_url: str, clock: FakeClock, mocked: responses.RequestsMock
       ) -> Iterator[RefundGateway]:
    trust = signing.load_pin(certs.public_pem())
    bank = BankcardAdapter(
        UnionPayClient(base_url=BASE, mer_id=MER_ID, cert_id="69629715588",
                       private_key=certs.KEY, trust=trust, connect_timeout=1,
                       read_timeout=2),
        back_url="http://127.0.0.1:9/notify/bankcard", channel_type="07", trust=trust,
        clock=clock)
    wallet = BalanceAdapter(WalletClient(base_url=WALLET, hmac_key=b"k" * 32,
                                         connect_timeout=1, read_timeout=2), clock)
    gateway = build_gateway(load_settings(database_url=database_url), clock=clock,
                            sleep=lambda _: None, configure_logs=False,
                            adapters={Route.BANKCARD: bank, Route.BALANCE: wallet})
    yield gateway
    gateway.close()


def accept(mocked: responses.RequestsMock) -> None:
    def reply(req: object) -> tuple[int, dict[str, str], str]:
        body = dict(p.split("=", 1) for p in str(req.body).split("&"))  # type: ignore[attr-defined]
        return 200, {}, signed_answer(txnType="04", orderId=body["orderId"], respCode="00",
                                      queryId="Q" + body["orderId"][-8:])
    mocked.add_callback(responses.POST, BASE + BACK_TRANS_PATH, callback=reply)


def query_says(mocked: responses.RequestsMock, orig: str, amount: int = 2500) -> None:
    def reply(req: object) -> tuple[int, dict[str, str], str]:
        body = dict(p.split("=", 1) for p in str(req.body).split("&"))  # type: ignore[attr-defined]
        return 200, {}, signed_answer(
            respCode="00", origRespCode=orig, origRespMsg="x", orderId=body["orderId"],
            queryId="Q" + body["orderId"][-8:], txnAmt=str(amount), settleDate="1120")
    mocked.add_callback(responses.POST, BASE + QUERY_PATH, callback=reply)


def bank_request(key: str = "k1", amount: int = 2500) -> object:
    return request(key, amount, order="ORD9", paid=10_000, route=Route.BANKCARD)


def test_accepted_then_query_succeeds(gw: RefundGateway, mocked: responses.RequestsMock,
                                      clock: FakeClock) -> None:
    accept(mocked)
    refund = gw.refund(bank_request())   # type: ignore[arg-type]
    assert refund.status is S.PROCESSING
    assert refund.channel_refund_id == "Q" + refund.channel_refund_no[-8:]
    assert refund.expected_arrival is not None
    query_says(mocked, "00")
    clock.advance(minutes=2)
    done = gw.sync(refund.id)
    assert done.status is S.SUCCEEDED
    assert done.bank_ack["queryId"] == refund.channel_refund_id
    assert done.bank_ack["settleDate"] == "1120"


def test_back_notification_settles_and_forgeries_change_nothing(
        gw: RefundGateway, mocked: responses.RequestsMock) -> None:
    accept(mocked)
    refund = gw.refund(bank_request())   # type: ignore[arg-type]
    fields = signed_form(txnType="04", txnSubType="00", bizType="000201",
                         orderId=refund.channel_refund_no, txnTime="20261120100000",
                         txnAmt="2500", queryId="QN1", respCode="00", respMsg="ok")
    forged = urlencode({**fields, "txnAmt": "9999"}).encode()
    assert gw.handle_notification(Route.BANKCARD, {}, forged).http_status == 400
    assert gw.get(refund.id).status is S.PROCESSING
    body = urlencode(fields).encode()
    ack = gw.handle_notification(Route.BANKCARD, {}, body)
    assert (ack.http_status, ack.body, ack.refund_id) == (200, b"ok", refund.id)
    assert gw.get(refund.id).status is S.SUCCEEDED
    again = gw.handle_notification(Route.BANKCARD, {}, body)   # UnionPay redelivers
    assert again.http_status == 200 and gw.get(refund.id).status is S.SUCCEEDED


def test_unknown_answer_then_query(gw: RefundGateway, mocked: responses.RequestsMock,
                                   clock: FakeClock) -> None:
    mocked.post(BASE + BACK_TRANS_PATH, body=signed_answer(respCode="03"))
    refund = gw.refund(bank_request())   # type: ignore[arg-type]
    assert refund.status is S.PROCESSING and refund.failure_code is None
    query_says(mocked, "05")
    clock.advance(minutes=2)
    assert gw.sync(refund.id).status is S.PROCESSING
    mocked.replace(responses.POST, BASE + QUERY_PATH, body=signed_answer(
        respCode="00", origRespCode="00", orderId=refund.channel_refund_no, queryId="Q1",
        txnAmt="2500"))
    assert gw.sync(refund.id).status is S.SUCCEEDED


def test_refusal_fails_and_releases(gw: RefundGateway, mocked: responses.RequestsMock) -> None:
    mocked.post(BASE + BACK_TRANS_PATH, body=signed_answer(respCode="35", respMsg="原交易"))
    refund = gw.refund(bank_request(amount=10_000))   # type: ignore[arg-type]
    assert (refund.status, refund.failure_code) == (S.FAILED, "35")


def test_abnormal_rerouted_to_balance_keeps_total(gw: RefundGateway,
                                                  mocked: responses.RequestsMock,
                                                  clock: FakeClock) -> None:
    accept(mocked)
    refund = gw.refund(bank_request(amount=6_000))   # type: ignore[arg-type]
    query_says(mocked, "61", amount=6_000)
    clock.advance(minutes=2)
    abnormal = gw.sync(refund.id)
    assert (abnormal.status, abnormal.failure_code) == (S.ABNORMAL, "61")

    def credit(req: object) -> tuple[int, dict[str, str], str]:
        sent = json.loads(req.body)   # type: ignore[attr-defined]
        return 200, {}, json.dumps({"refund_no": sent["refund_no"], "wallet_txn_id": "WT1",
                                    "status": "SUCCESS", "amount_fen": sent["amount_fen"],
                                    "user_id": sent["user_id"]})
    mocked.add_callback(responses.POST, WALLET + "/v1/refunds", callback=credit)
    linked = gw.reroute(refund.id, Route.BALANCE)
    assert (linked.route, linked.status, linked.amount) == (Route.BALANCE, S.SUCCEEDED,
                                                            Money(6_000))
    wallet_call = json.loads(mocked.calls[-1].request.body or b"{}")
    assert (wallet_call["user_id"], wallet_call["order_no"]) == ("u-1", "ORD9")
    assert gw.get(refund.id).status is S.REROUTED
    assert gw.reroute(refund.id, Route.BALANCE).id == linked.id   # idempotent
    with pytest.raises(OverRefund) as err:
        gw.refund(bank_request("k2", 4_001))   # type: ignore[arg-type]
    assert err.value.remaining_minor == 4_000
    total = gw.store.sum_counting(Route.BANKCARD, "ORD9")
    assert total is not None and total.minor <= 10_000
