"""Four refunds made through the real ``RefundGateway`` on SQLite with scripted channels:
succeeded (Alipay, bank leg acknowledged, matched on a statement line), in transit
(WeChat, accepted), abnormal then rerouted (WeChat -> platform balance) and refunded but
not received (UnionPay bank card; two real reconciliation runs carry it over)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine

from gateway.models import ChannelResult, ChannelStatus, Refund, Route
from gateway.money import Money
from gateway.service import RefundGateway
from gateway.settings import GatewaySettings, load_settings
from gateway.store import RefundStore, make_engine, upgrade
from reconciliation.job import beijing_day, reconcile
from reconciliation.matching import classify
from reconciliation.platform import from_store
from reconciliation.receipts import StatementRef, statement_ref_from_row
from reconciliation.receipts.signing import generate_private_pem
from reconciliation.statements.model import BATCH_SCHEMA
from tests.helpers import FakeClock, request
from tests.integration.receipts.scripted import ScriptedChannel, scripted

KEY = "receipt-test-key-0123456789abcdef"        # HMAC: verifies v1 receipts only
SIGNING_PEM = generate_private_pem()              # Ed25519: signs every new receipt
KEY_ID = "rk-2026-11"
FULL_CARD = "6222021234567890123"
ALIPAY_REFUND_ID = "2026112022001404680512345678"
WECHAT_TRANSIT_ID = "50000000382026112009732678859"
WECHAT_ABNORMAL_ID = "50000000382026112009732670001"
UNIONPAY_QUERY_ID = "742611201000052816801"
STATEMENT_FILE = "alipay-20261120.zip/20881234567890120156_20261120_业务明细.csv"
STATEMENT_LINE = 6


@dataclass
class World:
    gw: RefundGateway
    clock: FakeClock
    settings: GatewaySettings
    channels: dict[Route, ScriptedChannel]
    succeeded: Refund
    in_transit: Refund
    abnormal: Refund
    linked: Refund
    not_received: Refund
    matched_line: StatementRef
    issued_at: datetime


def _ok(channel_id: str, at: datetime, **extra: Any) -> Any:
    def answer(refund: Refund) -> ChannelResult:
        return ChannelResult(ChannelStatus.SUCCEEDED, refund.channel_refund_no,
                             channel_refund_id=channel_id, amount=refund.amount,
                             succeeded_at=at, **extra)
    return answer


def _matched_line(gw: RefundGateway, refund: Refund) -> StatementRef:
    """Classify the refund against one statement line, with the real matching engine."""
    start, end = beijing_day(date(2026, 11, 20))
    platform = from_store(gw.store.engine, start, end, [Route.ALIPAY])
    statement = pl.DataFrame([{
        "route": "alipay", "kind": "refund", "channel_refund_no": refund.channel_refund_no,
        "channel_refund_id": ALIPAY_REFUND_ID, "merchant_order_no": "ORD-ALI-1",
        "channel_trade_no": "TORD-ALI-1", "amount_minor": refund.amount.minor,
        "currency": "CNY", "status": "succeeded", "time": refund.succeeded_at,
        "source": STATEMENT_FILE, "line": STATEMENT_LINE}], schema=BATCH_SCHEMA)
    rows = classify(platform, statement, date(2026, 11, 20))
    row = rows.filter(pl.col("refund_id") == refund.id).row(0, named=True)
    return statement_ref_from_row(row, run_date=date(2026, 11, 20))


def _platform(engine: Engine, day: date) -> Callable[[list[str]], pl.DataFrame]:
    start, end = beijing_day(day)

    def load(carried: list[str]) -> pl.DataFrame:
        return from_store(engine, start, end, [Route.BANKCARD], carried)
    return load


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'receipts.db'}"
    engine = make_engine(url)
    upgrade(engine)
    clock = FakeClock(datetime(2026, 11, 20, 2, 0, tzinfo=UTC))   # 10:00 Beijing, Friday
    channels = {r: scripted(r) for r in Route}
    gw = RefundGateway(RefundStore(engine), channels, clock=clock, sleep=lambda _: None)
    settings = load_settings(database_url=url, receipts={
        "signing_key": SIGNING_PEM, "key_id": KEY_ID, "hmac_key": KEY,
        "platform_name": "卡盟示例平台 Example Card Platform"})

    at = clock.now + timedelta(seconds=5)
    channels[Route.ALIPAY].answers.append(_ok(
        ALIPAY_REFUND_ID, at, received_account="159****5620",
        bank_ack={"dback_status": "S", "dback_amount": "12.30",
                  "bank_ack_time": "2026-11-20 10:00:07",
                  "est_bank_receipt_time": "2026-11-23 10:00:00"}))
    succeeded = gw.refund(request("k-ali", 1230, "ORD-ALI-1", 5000, Route.ALIPAY))

    clock.advance(minutes=3)
    channels[Route.WECHATPAY].answers.append(lambda r: ChannelResult(
        ChannelStatus.PROCESSING, r.channel_refund_no, channel_refund_id=WECHAT_TRANSIT_ID))
    in_transit = gw.refund(request("k-wx-1", 2500, "ORD-WX-1", 10000, Route.WECHATPAY))

    clock.advance(minutes=3)
    channels[Route.WECHATPAY].answers.append(lambda r: ChannelResult(
        ChannelStatus.ABNORMAL, r.channel_refund_no, channel_refund_id=WECHAT_ABNORMAL_ID,
        received_account="招商银行信用卡0403", failure_code="ABNORMAL",
        failure_message="原卡已注销"))
    abnormal = gw.refund(request("k-wx-2", 8800, "ORD-WX-2", 8800, Route.WECHATPAY))
    clock.advance(minutes=30)
    channels[Route.BALANCE].answers.append(_ok("BAL-000123", clock.now + timedelta(seconds=1),
                                               bank_ack={"entry_id": "L2026112000123"}))
    linked = gw.reroute(abnormal.id, Route.BALANCE, note="card cancelled; user agreed")
    abnormal = gw.get(abnormal.id)

    clock.advance(minutes=5)
    channels[Route.BANKCARD].answers.append(lambda r: ChannelResult(
        ChannelStatus.PROCESSING, r.channel_refund_no))
    not_received = gw.refund(request("k-card", 19900, "ORD-CARD-1", 19900, Route.BANKCARD))
    clock.advance(seconds=40)
    channels[Route.BANKCARD].answers.append(_ok(
        UNIONPAY_QUERY_ID, clock.now, received_account=FULL_CARD,
        bank_ack={"queryId": UNIONPAY_QUERY_ID, "settleDate": "1120", "traceNo": "528168"}))
    not_received = gw.sync(not_received.id)
    assert not_received.status.value == "succeeded"

    # Two real reconciliation runs (no bank-card statement lines): in transit on the day,
    # refunded-not-received once the 1-5 working-day window has passed (carry-over).
    for day in (date(2026, 11, 20), date(2026, 12, 1)):
        reconcile(run_date=day, routes=[Route.BANKCARD], statements=[],
                  platform=_platform(engine, day), platform_source="store", engine=engine)

    matched = _matched_line(gw, succeeded)
    clock.advance(hours=1)
    yield World(gw, clock, settings, channels, gw.get(succeeded.id), gw.get(in_transit.id),
                abnormal, gw.get(linked.id), gw.get(not_received.id), matched, clock.now)
    engine.dispose()


__all__ = ["FULL_CARD", "KEY", "KEY_ID", "SIGNING_PEM", "Money", "World"]
