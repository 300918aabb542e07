"""The Alipay adapter with the real SDK over real HTTP, alone and through ``RefundGateway``
on SQLite and PostgreSQL, against ``fake_gateway.FakeAlipay`` (CH §4 on 127.0.0.1).

Every fault converges to the gateway's truth with exactly one execution on the channel.
The same scenarios against the project sandbox live in ``test_alipay_sandbox.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from adapters.alipay.adapter import AlipayAdapter
from adapters.alipay.client import AlipayClient
from gateway import RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.errors import ChannelUnavailable, OutcomeUnknown, StatementError
from gateway.models import ChannelStatus, Payment, Refund
from gateway.money import Money
from gateway.settings import load_settings
from tests.helpers import FakeClock, request
from tests.integration.alipay.fake_gateway import FakeAlipay
from tests.unit.adapters.alipay.conftest import APP_ID, KeyPair, _pair

S = RefundStatus
REFUND = "alipay.trade.refund"
QUERY = "alipay.trade.fastpay.refund.query"


@pytest.fixture(scope="module")
def app_keys() -> KeyPair:
    return _pair()


@pytest.fixture
def fake(app_keys: KeyPair) -> Iterator[FakeAlipay]:
    server = FakeAlipay(APP_ID, app_keys.public_pem, read_delay=1.0)
    server.add_trade("TORD1", "ORD1", 10_000)
    with server.running():
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def adapter(fake: FakeAlipay, app_keys: KeyPair, clock: FakeClock) -> AlipayAdapter:
    return AlipayAdapter(AlipayClient(
        app_id=APP_ID, app_private_key_pem=app_keys.private_pem,
        alipay_public_key_pem=fake.public_pem, gateway_url=fake.gateway_url,
        connect_timeout=1.0, read_timeout=0.4, clock=clock))


@pytest.fixture
def gw(database_url: str, fake: FakeAlipay, app_keys: KeyPair, clock: FakeClock
       ) -> Iterator[RefundGateway]:
    """Built by the composition root from settings (entry point ``alipay``)."""
    settings = load_settings(database_url=database_url, alipay={
        "app_id": APP_ID, "app_private_key": app_keys.private_pem,
        "alipay_public_key": fake.public_pem, "gateway_url": fake.gateway_url,
        "timeouts": {"connect": 1.0, "read": 0.4}})
    gateway = build_gateway(settings, clock=clock, sleep=lambda _: None,
                            configure_logs=False)
    yield gateway
    gateway.close()


def alipay_request(key: str = "k1", amount: int = 2_500) -> object:
    return request(key, amount, order="ORD1", paid=10_000, route=Route.ALIPAY)


def resolve(gw: RefundGateway, clock: FakeClock, refund_id: str) -> RefundStatus:
    for _ in range(4):
        clock.advance(minutes=31)
        gw.resolve_due()
        status = gw.get(refund_id).status
        if status.is_final:
            return status
    return gw.get(refund_id).status


# -- adapter alone -----------------------------------------------------------------------
def test_adapter_submit_then_query(adapter: AlipayAdapter, fake: FakeAlipay) -> None:
    fake.state.dback = "P"
    gw_refund = _refund_obj()
    result = adapter.submit(gw_refund)
    assert result.status is ChannelStatus.SUCCEEDED and result.succeeded_at is not None
    assert fake.state.requests[-1]["timestamp"] == "2026-11-20 10:00:00"   # Beijing
    again = adapter.submit(gw_refund)            # Alipay dedupes on out_request_no
    assert again.status is ChannelStatus.PROCESSING
    assert len(fake.state.executions) == 1
    queried = adapter.query(gw_refund)
    assert queried.status is ChannelStatus.SUCCEEDED
    assert queried.bank_ack["dback_status"] == "P"
    assert queried.bank_ack["est_bank_receipt_time"] == "2026-11-23 10:00:00"


def test_adapter_faults(adapter: AlipayAdapter, fake: FakeAlipay) -> None:
    refund = _refund_obj()
    fake.fault(REFUND, "http_500", "rate_limited", "bad_signature", "drop_before_commit",
               "timeout_after_commit")
    with pytest.raises(OutcomeUnknown) as e1:
        adapter.submit(refund)
    assert e1.value.http_status == 500
    with pytest.raises(OutcomeUnknown) as e2:
        adapter.submit(refund)
    assert e2.value.code == "isv.app-call-limited"
    with pytest.raises(OutcomeUnknown) as e3:
        adapter.submit(refund)                   # committed, answer not verifiable
    assert e3.value.code == "SIGNATURE_INVALID"
    with pytest.raises(OutcomeUnknown):
        adapter.submit(refund)
    with pytest.raises(OutcomeUnknown) as e5:
        adapter.submit(refund)
    assert e5.value.code == "READ_TIMEOUT"
    assert len(fake.state.executions) == 1


def test_adapter_connect_refused(app_keys: KeyPair, clock: FakeClock) -> None:
    dead = AlipayAdapter(AlipayClient(
        app_id=APP_ID, app_private_key_pem=app_keys.private_pem,
        alipay_public_key_pem=app_keys.public_pem,
        gateway_url="http://127.0.0.1:1/gateway.do", connect_timeout=0.5,
        read_timeout=0.5, clock=clock))
    with pytest.raises(ChannelUnavailable):
        dead.submit(_refund_obj())


def test_statement_download_and_guards(adapter: AlipayAdapter, fake: FakeAlipay) -> None:
    adapter.submit(_refund_obj())
    data = adapter.download_statement(date(2026, 11, 20))
    assert data.startswith(b"PK")
    with pytest.raises(StatementError, match="no trade bill"):
        adapter.download_statement(date(2026, 1, 1))
    fake.fault("alipay.data.dataservice.bill.downloadurl.query", "bomb")
    with pytest.raises(StatementError, match="ratio"):
        adapter.download_statement(date(2026, 11, 20))


# -- through RefundGateway ---------------------------------------------------------------
def test_refund_succeeds(gw: RefundGateway, fake: FakeAlipay) -> None:
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    assert refund.status is S.SUCCEEDED
    assert refund.received_account == "159****5620"
    assert len(fake.state.executions) == 1
    assert fake.state.executions[0].out_request_no == refund.channel_refund_no
    assert refund.expected_arrival is not None


@pytest.mark.parametrize("kind", ["timeout_after_commit", "drop_before_commit", "http_500",
                                  "rate_limited", "bad_signature"])
def test_fault_converges_with_one_execution(gw: RefundGateway, fake: FakeAlipay,
                                            clock: FakeClock, kind: str) -> None:
    fake.fault(REFUND, kind)
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    assert refund.status is S.PROCESSING     # unknown is never failure
    assert resolve(gw, clock, refund.id) is S.SUCCEEDED
    assert len(fake.state.executions) == 1
    assert [e.out_request_no for e in fake.state.executions] == [refund.channel_refund_no]


def test_query_faults_too(gw: RefundGateway, fake: FakeAlipay, clock: FakeClock) -> None:
    fake.fault(REFUND, "timeout_after_commit")
    fake.fault(QUERY, "http_500", "bad_signature", "rate_limited")
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    assert resolve(gw, clock, refund.id) is S.SUCCEEDED
    assert len(fake.state.executions) == 1


def test_dback_f_is_succeeded_into_alipay_balance(gw: RefundGateway, fake: FakeAlipay,
                                                  clock: FakeClock) -> None:
    fake.state.dback = "F"
    fake.fault(REFUND, "timeout_after_commit")
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    assert resolve(gw, clock, refund.id) is S.SUCCEEDED
    done = gw.get(refund.id)
    assert done.bank_ack["dback_status"] == "F"
    assert done.received_account == "alipay_balance"


def test_refusal_is_failed(gw: RefundGateway, fake: FakeAlipay) -> None:
    req = request("k9", 100, order="NOPE", paid=10_000, route=Route.ALIPAY)
    refund = gw.refund(req)
    assert refund.status is S.FAILED
    assert refund.failure_code == "ACQ.TRADE_NOT_EXIST"
    assert fake.state.executions == []


def test_notification_drives_status(gw: RefundGateway, fake: FakeAlipay) -> None:
    fake.fault(REFUND, "timeout_after_commit")
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    assert refund.status is S.PROCESSING
    form = {"notify_type": "trade_status_sync", "notify_id": "n-1", "app_id": APP_ID,
            "notify_time": "2026-11-20 10:00:09", "charset": "utf-8", "version": "1.0",
            "trade_no": "TORD1", "out_trade_no": "ORD1", "trade_status": "TRADE_SUCCESS",
            "out_biz_no": refund.channel_refund_no, "refund_fee": "25.00",
            "gmt_refund": "2026-11-20 10:00:05"}
    forged = dict(form, out_biz_no=refund.channel_refund_no)
    forged_body = fake.sign_form(forged).replace(b"refund_fee=25.00", b"refund_fee=99.00")
    bad = gw.handle_notification(Route.ALIPAY, {}, forged_body)
    assert (bad.body, bad.accepted) == (b"fail", False)
    assert gw.get(refund.id).status is S.PROCESSING
    ack = gw.handle_notification(Route.ALIPAY, {}, fake.sign_form(form))
    assert (ack.http_status, ack.body) == (200, b"success")
    assert gw.get(refund.id).status is S.SUCCEEDED
    again = gw.handle_notification(Route.ALIPAY, {}, fake.sign_form(form))
    assert again.body == b"success" and gw.get(refund.id).status is S.SUCCEEDED
    # The bank leg later: depositback.completed adds the bank acknowledgement.
    biz = {"out_request_no": refund.channel_refund_no, "dback_status": "S",
           "dback_amount": "25.00", "bank_ack_time": "2026-11-21 10:00:00"}
    dback = {"notify_id": "n-2", "msg_method": "alipay.trade.refund.depositback.completed",
             "app_id": APP_ID, "version": "1.1", "charset": "utf-8",
             "utc_timestamp": "1795663200000", "biz_content": json.dumps(biz)}
    assert gw.handle_notification(Route.ALIPAY, {}, fake.sign_form(dback)).accepted
    assert gw.get(refund.id).bank_ack["bank_ack_time"] == "2026-11-21 10:00:00"
    assert len(fake.state.executions) == 1


def test_stored_evidence_has_no_secrets(gw: RefundGateway, fake: FakeAlipay,
                                        app_keys: KeyPair) -> None:
    fake.fault(REFUND, "bad_signature")
    refund = gw.refund(alipay_request())   # type: ignore[arg-type]
    gw.sync(refund.id)
    blob = json.dumps([e.data for e in gw.events(refund.id)], default=str)
    attempts = gw.store.attempts(refund.id)
    assert any(a.raw for a in attempts)        # the evidence is there, redacted
    blob += json.dumps([dict(a.raw) for a in attempts], default=str)
    assert "PRIVATE KEY" not in blob and '"sign"' not in blob
    assert "2088101117955611" not in blob


def _refund_obj() -> Refund:
    at = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    return Refund(id="rf1", idempotency_key="k1", route=Route.ALIPAY,
                  payment=Payment(Route.ALIPAY, "ORD1", "TORD1", Money(10_000)),
                  amount=Money(2_500), reason="退货", status=S.PENDING,
                  channel_refund_no="RFabc123", created_at=at, updated_at=at)
