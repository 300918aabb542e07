"""The WeChat route end to end against the project sandbox (issue 3) through its control API
(DESIGN.md "Sandbox contract"): payments, faults, the truth list of refunds.

The sandbox's WeChat channel (``sandbox.wechatpay``) and its pytest plugin are part of the
project, so nothing here is skipped: a missing channel or notification is a failure.
``test_wechat_http.py`` runs the same scenarios against a CH §5 fake.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.wechatpay.adapter import BillKind, WechatPayAdapter
from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.clock import to_beijing
from gateway.ports import AbnormalRefundInstruction, AbnormalTarget
from gateway.settings import load_settings
from tests.helpers import FakeClock

S = RefundStatus


class Control:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data,  # noqa: S310 - local
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local sandbox
            return json.loads(resp.read() or b"null")

    def payment(self, fen: int) -> Payment:
        doc = self.call("POST", "/_sandbox/payments", {"route": "wechatpay", "amount_fen": fen})
        return Payment(Route.WECHATPAY, doc["merchant_order_no"], doc["channel_trade_no"],
                       Money(fen))

    def fault(self, operation: str, kind: str, count: int = 1, **params: Any) -> None:
        self.call("POST", "/_sandbox/faults", {"route": "wechatpay", "operation": operation,
                                               "kind": kind, "count": count, **params})

    def truth(self, channel_refund_no: str) -> list[Mapping[str, Any]]:
        doc = self.call("GET", "/_sandbox/refunds")
        rows = doc.get("refunds", []) if isinstance(doc, dict) else doc
        return [r for r in rows if r.get("route") == "wechatpay"
                and r.get("channel_refund_no") == channel_refund_no]


@pytest.fixture
def control(refund_sandbox: Any) -> Control:
    return Control(refund_sandbox.url)


@pytest.fixture
def clock() -> FakeClock:
    # notifications carry wall-clock timestamps; the business clock starts at now
    return FakeClock(datetime.fromtimestamp(int(time.time()), UTC))


@pytest.fixture
def gw(database_url: str, sandbox_settings: Mapping[str, str], clock: FakeClock,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[RefundGateway]:
    for key, value in sandbox_settings.items():
        if key.startswith("REFUND_GATEWAY_WECHATPAY__"):
            monkeypatch.setenv(key, value)
    # no notify URL: the sandbox keeps notifications for pending_notifications()
    monkeypatch.delenv("REFUND_GATEWAY_WECHATPAY__NOTIFY_URL", raising=False)
    monkeypatch.setenv("REFUND_GATEWAY_WECHATPAY__TIMEOUTS__READ", "1")
    gateway = build_gateway(load_settings(database_url=database_url), clock=clock,
                            sleep=lambda _: None, configure_logs=False)
    yield gateway
    gateway.close()


def ask(payment: Payment, fen: int, key: str = "k1") -> RefundRequest:
    return RefundRequest(key, payment, Money(fen), "sandbox")


def resolve(gw: RefundGateway, clock: FakeClock, refund_id: str,
            step_minutes: float = 61) -> RefundStatus:
    """Run the resolver until the refund is final (at most 8 steps of business time)."""
    for _ in range(8):
        clock.advance(minutes=step_minutes)
        gw.resolve_due()
        if gw.get(refund_id).status.is_final:
            break
    return gw.get(refund_id).status


def test_processing_then_query_success(gw: RefundGateway, control: Control,
                                       clock: FakeClock) -> None:
    rf = gw.refund(ask(control.payment(10_000), 2_500))
    assert rf.status in (S.PROCESSING, S.SUCCEEDED)
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    assert len(control.truth(rf.channel_refund_no)) == 1


@pytest.mark.parametrize("kind", ["timeout_after_commit", "drop_before_commit", "http_500",
                                  "rate_limited", "bad_signature"])
def test_fault_converges(gw: RefundGateway, control: Control, clock: FakeClock,
                         kind: str) -> None:
    payment = control.payment(10_000)
    control.fault("refund", kind, stall_seconds=2.0)
    rf = gw.refund(ask(payment, 2_500, f"k-{kind}"))
    assert rf.status in (S.PROCESSING, S.PENDING, S.SUCCEEDED)
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    assert len(control.truth(rf.channel_refund_no)) == 1


def test_query_of_unknown_refund_is_not_found(gw: RefundGateway) -> None:
    from gateway.models import ChannelStatus
    from tests.unit.adapters.wechatpay.canned import refund
    adapter = gw.adapters[Route.WECHATPAY]
    assert adapter.query(refund("NEVERSENT0001")).status is ChannelStatus.NOT_FOUND


def test_abnormal_then_channel_reroute(gw: RefundGateway, control: Control,
                                       clock: FakeClock) -> None:
    payment = control.payment(10_000)
    control.fault("refund", "abnormal")
    rf = gw.refund(ask(payment, 2_500))
    if rf.status is not S.ABNORMAL:
        resolve(gw, clock, rf.id)
    rf = gw.get(rf.id)
    assert rf.status is S.ABNORMAL
    gw.reroute(rf.id, instruction=AbnormalRefundInstruction(
        AbnormalTarget.USER_BANK_CARD, "ICBC_DEBIT", "6222021234567890123", "张三"))
    assert resolve(gw, clock, rf.id) is S.SUCCEEDED
    assert len(control.truth(rf.channel_refund_no)) == 1


def test_sandbox_notification_drives_status_and_replay_changes_nothing(
        gw: RefundGateway, control: Control, refund_sandbox: Any) -> None:
    rf = gw.refund(ask(control.payment(10_000), 2_500))
    assert rf.status is S.PROCESSING   # WeChat answers PROCESSING; the notification settles
    notes = []
    deadline = time.monotonic() + 5
    while not notes and time.monotonic() < deadline:
        notes = refund_sandbox.pending_notifications("wechatpay")
        time.sleep(0.05)
    assert notes, "the sandbox sent no WeChat notification for an immediately settled refund"
    assert gw.get(rf.id).status is S.PROCESSING   # nothing but the notification moves it
    for note in notes:
        gw.handle_notification(Route.WECHATPAY, note.headers, note.body)
    assert gw.get(rf.id).status is S.SUCCEEDED
    events = len(gw.events(rf.id))
    replay = gw.handle_notification(Route.WECHATPAY, notes[0].headers, notes[0].body)
    assert not replay.accepted and len(gw.events(rf.id)) == events


def test_bills(gw: RefundGateway, control: Control) -> None:
    rf = gw.refund(ask(control.payment(10_000), 2_500))
    adapter = gw.adapters[Route.WECHATPAY]
    assert isinstance(adapter, WechatPayAdapter)
    day = to_beijing(rf.created_at).date()   # bill days are Beijing days (CH §5)
    trade = adapter.download_statement(day)
    assert rf.channel_refund_no.encode() in trade
    adapter.download_bill(day, BillKind.FUNDFLOW_BASIC)
