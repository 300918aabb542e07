"""The WeChat route with the real SDK over real HTTP against a CH §5 fake (``fake_wechat``),
adapter-level and end to end through ``RefundGateway`` on SQLite and PostgreSQL.

Every fault converges to the fake's truth with exactly one execution per out_refund_no.
``test_wechat_sandbox.py`` runs the same scenarios against the project sandbox once its
WeChat channel lands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from adapters.wechatpay.adapter import BillKind, WechatPayAdapter, build
from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.errors import OutcomeUnknown, StatementError
from gateway.models import ChannelStatus
from gateway.ports import AbnormalRefundInstruction, AbnormalTarget
from gateway.settings import GatewaySettings, Timeouts, WechatPaySettings
from tests.helpers import FakeClock
from tests.integration.wechatpay.fake_wechat import FakeWechat
from tests.unit.adapters.wechatpay import canned
from tests.unit.adapters.wechatpay.canned import APIV3, MCHID, PUB_ID, keys

S = ChannelStatus
RS = RefundStatus


@pytest.fixture
def fake() -> Iterator[FakeWechat]:
    k = keys()
    f = FakeWechat(mchid=MCHID, merchant_public=k.merchant.public_key(), platform=k.platform,
                   public_key_id=PUB_ID, apiv3_key=APIV3)
    f.base = f.start()  # type: ignore[attr-defined]
    yield f
    f.stop()


def wx_settings(base: str) -> WechatPaySettings:
    k = keys()
    return WechatPaySettings(
        mchid=MCHID, appid=canned.APPID, private_key=SecretStr(k.merchant_pkcs1_pem),
        cert_serial_no=canned.CERT_SERIAL, apiv3_key=SecretStr(APIV3),
        public_key=SecretStr(k.platform_public_pem), public_key_id=PUB_ID,
        base_url=base, notify_url="https://gw.example.com/notify/wechatpay",
        timeouts=Timeouts(connect=1, read=1))


@pytest.fixture
def clock() -> FakeClock:
    import time
    from datetime import UTC, datetime
    # notifications carry the wall-clock timestamp; the business clock starts there
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


@pytest.fixture
def adapter(fake: FakeWechat, clock: FakeClock) -> Iterator[WechatPayAdapter]:
    a = build(GatewaySettings(wechatpay=wx_settings(fake.base)), clock)  # type: ignore[attr-defined]
    assert isinstance(a, WechatPayAdapter)
    yield a
    a.close()


def refund(no: str = "RF0001", amount: int = 2500) -> Any:
    return canned.refund(no, amount=amount)


# -- adapter against the fake -------------------------------------------------------------
def test_processing_then_query_success(adapter: WechatPayAdapter, fake: FakeWechat) -> None:
    r = refund()
    first = adapter.submit(r)
    assert first.status is S.PROCESSING and first.channel_refund_id
    assert first.raw["request_id"].startswith("REQ-")
    done = adapter.query(r)
    assert done.status is S.SUCCEEDED and done.succeeded_at is not None
    assert done.received_account == "招商银行信用卡0403"
    assert len(fake.truth(r.channel_refund_no)) == 1 and fake.auth_failures == 0


def test_resubmit_same_number_is_deduped(adapter: WechatPayAdapter, fake: FakeWechat) -> None:
    r = refund()
    adapter.submit(r)
    adapter.submit(r)
    assert len(fake.truth(r.channel_refund_no)) == 1


def test_query_unknown_refund_is_not_found(adapter: WechatPayAdapter) -> None:
    assert adapter.query(refund("NEVERSENT")).status is S.NOT_FOUND


def test_abnormal_then_apply_abnormal_refund(adapter: WechatPayAdapter,
                                             fake: FakeWechat) -> None:
    fake.fault("refund", "abnormal")
    r = refund()
    first = adapter.submit(r)
    assert first.status is S.ABNORMAL
    from dataclasses import replace
    r = replace(r, channel_refund_id=first.channel_refund_id, status=RS.ABNORMAL)
    applied = adapter.apply_abnormal_refund(r, AbnormalRefundInstruction(
        AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
    assert applied.status is S.PROCESSING
    assert fake.refunds[r.channel_refund_no].abnormal_applied == {"type": "USER_BANK_CARD",
                                                                  "last4": "0123"}
    done = adapter.query(r)
    assert done.status is S.SUCCEEDED and done.bank_ack["channel"] == "OTHER_BANKCARD"
    assert len(fake.truth(r.channel_refund_no)) == 1


@pytest.mark.parametrize(("kind", "code", "executed"), [
    ("rate_limited", "FREQUENCY_LIMITED", 0),
    ("http_500", "SYSTEM_ERROR", 0),
    ("timeout_after_commit", "READ_TIMEOUT", 1),
    # The server read the request and closed without answering: the client cannot tell
    # "dropped before commit" from "committed, answer lost", so it is unknown, not
    # unavailable (only a refused/timed-out connect proves nothing was sent).
    ("drop_before_commit", "CONNECTION_LOST", 0),
    ("bad_signature", "SIGNATURE_INVALID", 1),
])
def test_faults_are_unknown_then_query_converges(adapter: WechatPayAdapter,
                                                 fake: FakeWechat, kind: str, code: str,
                                                 executed: int) -> None:
    fake.stall = 1.5
    fake.fault("refund", kind)
    r = refund()
    with pytest.raises(OutcomeUnknown) as info:
        adapter.submit(r)
    assert info.value.code == code
    assert len(fake.truth(r.channel_refund_no)) == executed
    after = adapter.query(r)
    if executed:
        assert after.status is S.SUCCEEDED
    else:
        assert after.status is S.NOT_FOUND
        assert adapter.submit(r).status is S.PROCESSING   # resend, same number
    adapter.submit(r)                                      # and once more: deduped
    assert len(fake.truth(r.channel_refund_no)) == 1


def test_notification_from_the_channel(adapter: WechatPayAdapter, fake: FakeWechat) -> None:
    r = refund()
    adapter.submit(r)
    fake.settle(r.channel_refund_no)
    headers, body = fake.notification(r.channel_refund_no)
    result = adapter.parse_notification(headers, body)
    assert result.status is S.SUCCEEDED and result.amount == Money(2500)
    assert result.channel_refund_no == r.channel_refund_no
    assert result.replay_key == headers["Wechatpay-Nonce"]


def test_bills_with_hash_check(adapter: WechatPayAdapter, fake: FakeWechat) -> None:
    adapter.submit(refund())
    trade = adapter.download_statement(date(2026, 11, 19)).decode()
    assert "`RF0001" in trade and trade.startswith("交易时间")
    flow = adapter.download_bill(date(2026, 11, 19), BillKind.FUNDFLOW_BASIC).decode()
    assert flow.startswith("记账时间") and "`25.00" in flow
    with pytest.raises(StatementError, match="no statement for 2000-01-01"):
        adapter.download_statement(date(2000, 1, 1))


# -- end to end through RefundGateway -------------------------------------------------------
@pytest.fixture
def gw(database_url: str, fake: FakeWechat, clock: FakeClock) -> Iterator[RefundGateway]:
    settings = GatewaySettings(database_url=database_url,
                               wechatpay=wx_settings(fake.base))  # type: ignore[attr-defined]
    g = build_gateway(settings, clock=clock, sleep=lambda _: None, configure_logs=False)
    yield g
    g.close()


def ask(key: str, amount: int = 2500, paid: int = 10_000) -> RefundRequest:
    return RefundRequest(key, Payment(Route.WECHATPAY, "ORD1", "4200000001202611200000000001",
                                      Money(paid)), Money(amount), "goods not delivered")


def drive(gw: RefundGateway, clock: FakeClock, refund_id: str, rounds: int = 4) -> Any:
    for _ in range(rounds):
        clock.advance(minutes=61)
        gw.resolve_due()
        if gw.get(refund_id).status.is_final:
            break
    return gw.get(refund_id)


def test_e2e_notification_drives_status_and_replay_changes_nothing(
        gw: RefundGateway, fake: FakeWechat) -> None:
    rf = gw.refund(ask("k1"))
    assert rf.status is RS.PROCESSING and rf.channel_refund_no
    fake.settle(rf.channel_refund_no)
    headers, body = fake.notification(rf.channel_refund_no)
    ack = gw.handle_notification(Route.WECHATPAY, headers, body)
    assert ack.accepted and ack.http_status == 204
    done = gw.get(rf.id)
    assert done.status is RS.SUCCEEDED        # no polling
    assert done.received_account == "招商银行信用卡0403"
    events = len(gw.events(rf.id))
    replay = gw.handle_notification(Route.WECHATPAY, headers, body)
    assert not replay.accepted and replay.http_status == 400
    forged_headers = dict(headers, **{"Wechatpay-Nonce": "NEWNONCE"})
    forged = gw.handle_notification(Route.WECHATPAY, forged_headers, body)
    assert not forged.accepted
    assert len(gw.events(rf.id)) == events and gw.get(rf.id).status is RS.SUCCEEDED
    assert len(fake.truth(rf.channel_refund_no)) == 1


@pytest.mark.parametrize("kind", ["timeout_after_commit", "drop_before_commit", "http_500",
                                  "rate_limited", "bad_signature"])
def test_e2e_faults_converge_with_one_execution(gw: RefundGateway, fake: FakeWechat,
                                                clock: FakeClock, kind: str) -> None:
    fake.stall = 1.5
    fake.fault("refund", kind)
    rf = gw.refund(ask(f"k-{kind}"))
    assert rf.status is RS.PROCESSING           # unknown is never failure
    final = drive(gw, clock, rf.id)
    assert final.status is RS.SUCCEEDED
    truth = fake.truth(rf.channel_refund_no)
    assert len(truth) == 1 and truth[0].amount == 2500


def test_e2e_abnormal_rerouted_through_the_channel(gw: RefundGateway, fake: FakeWechat,
                                                   clock: FakeClock) -> None:
    fake.fault("refund", "abnormal")
    rf = gw.refund(ask("k-ab"))
    assert rf.status is RS.ABNORMAL and rf.channel_refund_id
    after = gw.reroute(rf.id, instruction=AbnormalRefundInstruction(
        AbnormalTarget.MERCHANT_BANK_CARD))
    assert after.status is RS.PROCESSING
    assert drive(gw, clock, rf.id).status is RS.SUCCEEDED
    assert len(fake.truth(rf.channel_refund_no)) == 1


def test_scrubbing_full_flow(gw: RefundGateway, fake: FakeWechat, clock: FakeClock) -> None:
    """activemerchant test_scrub: keys, API v3 key, signatures and Authorization values
    never reach logs (raw event dicts, before any redaction) or stored evidence."""
    k = keys()
    with capture_logs() as logs:
        fake.fault("refund", "abnormal")
        ab = gw.refund(ask("k-s1", amount=1000))
        gw.reroute(ab.id, instruction=AbnormalRefundInstruction(
            AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
        drive(gw, clock, ab.id)
        fake.stall = 1.5
        fake.fault("refund", "bad_signature")
        rf = gw.refund(ask("k-s2", amount=1500))
        drive(gw, clock, rf.id)
        headers, body = fake.notification(rf.channel_refund_no)
        gw.handle_notification(Route.WECHATPAY, headers, body)
        gw.handle_notification(Route.WECHATPAY, headers, body)   # replay, logged
        structlog.get_logger("test").warning("marker")   # tests log at WARNING
    stored = [json.dumps([e.data for e in gw.events(i)], ensure_ascii=False, default=str)
              for i in (ab.id, rf.id)]
    stored += [json.dumps([a.raw for a in gw.store.attempts(i)], ensure_ascii=False,
                          default=str) for i in (ab.id, rf.id)]
    text = json.dumps(logs, ensure_ascii=False, default=str) + "".join(stored)
    assert "marker" in text and len(fake.secrets_seen) > 5
    key_lines = [ln for ln in (k.merchant_pem + k.merchant_pkcs1_pem).splitlines()
                 if "-----" not in ln]
    forbidden = [APIV3, "WECHATPAY2-SHA256-RSA2048 mchid", "6222021234567890123", "张三",
                 *key_lines, *fake.secrets_seen]
    leaked = [s[:24] for s in forbidden if s and s in text]
    assert leaked == []
    assert gw.get(ab.id).status is RS.SUCCEEDED and gw.get(rf.id).status is RS.SUCCEEDED
