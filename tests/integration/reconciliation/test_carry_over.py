"""Reconciliation against the gateway's store, on SQLite and PostgreSQL: refunds created
through ``RefundGateway`` with scripted channels (tests/fakes.py), statements as real-format
files, runs through ``refund-gateway reconcile`` (store source, runs persisted).

Two runs: items left open on day 1 (a bank-card refund in transit, not yet on the
settlement file; an Alipay refund that
succeeded a second before midnight and so is missing from the day-1 bill; a refund the
platform never made) are carried over; day 2's statements close the first two with
"matched in run 2"; a person resolves the third with ``discrepancies resolve``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, select

from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import BEIJING
from gateway.models import ChannelStatus, RefundStatus, Route
from gateway.ports import Capabilities
from gateway.service import RefundGateway
from gateway.settings import load_settings
from reconciliation.job import beijing_day, reconcile
from reconciliation.platform import from_store
from reconciliation.schema import recon_item_events, recon_items, recon_runs
from reconciliation.statements import Source
from tests.fakes import FakeChannel
from tests.helpers import FakeClock, request
from tests.unit.reconciliation.bills import (
    Line,
    alipay_detail,
    unionpay_settlement,
    wechat_refund_bill,
)

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)      # Thursday, Friday


class FakeAlipay(FakeChannel):
    route: ClassVar[Route] = Route.ALIPAY


class FakeBankcard(FakeChannel):
    route: ClassVar[Route] = Route.BANKCARD
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotent_submit=True, refund_query=True, notifications=True, statements=True,
        partial_refunds=True, max_refunds=None, refund_window=None,
        arrival_working_days=(1, 5))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 19, 2, 0, tzinfo=UTC))     # 10:00 Beijing, day 1


@pytest.fixture
def channels() -> dict[Route, FakeChannel]:
    chans: dict[Route, FakeChannel] = {Route.ALIPAY: FakeAlipay(),
                                       Route.BANKCARD: FakeBankcard(),
                                       Route.WECHATPAY: FakeChannel()}
    for c in chans.values():
        c.settle = ChannelStatus.SUCCEEDED
    return chans


@pytest.fixture
def gw(database_url: str, clock: FakeClock, channels: dict[Route, FakeChannel]
       ) -> Iterator[RefundGateway]:
    gateway = build_gateway(load_settings(database_url=database_url), clock=clock,
                            sleep=lambda _: None, configure_logs=False, adapters=channels)
    yield gateway
    gateway.close()


def _cli(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args),
                              env={"REFUND_GATEWAY_DATABASE_URL": database_url})


def _refund(gw: RefundGateway, key: str, route: Route, amount: int, order: str) -> Any:
    refund = gw.refund(request(key=key, amount=amount, order=order, route=route))
    assert refund.status is RefundStatus.SUCCEEDED, refund
    return refund


def _at(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=BEIJING)


def _list(database_url: str, *args: str) -> list[dict[str, Any]]:
    listed = _cli(database_url, "discrepancies", "list", "--json", *args)
    assert listed.exit_code == 0, listed.output
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def test_two_runs_carry_open_items_over_and_close_them(
        gw: RefundGateway, clock: FakeClock, database_url: str, tmp_path: Path) -> None:
    card = _refund(gw, "k-card", Route.BANKCARD, 4_500, "ORD-C")
    ali_ok = _refund(gw, "k-ali1", Route.ALIPAY, 1_000, "ORD-A")
    clock.now = _at(DAY1, 23, 59, 59).astimezone(UTC)    # one second before the cut-off
    ali_late = _refund(gw, "k-ali2", Route.ALIPAY, 2_000, "ORD-A")   # partial, same order

    day1 = tmp_path / "day1"
    day1.mkdir()
    # The card refund is still processing: the settlement file lists no line for it.
    (day1 / "unionpay.zip").write_bytes(unionpay_settlement([], DAY1))
    (day1 / "alipay.csv").write_bytes(alipay_detail(
        [Line(ali_ok.channel_refund_no, "ORD-A", 1_000, at=_at(DAY1, 10, 0)),
         Line("RFNOBODY", "ORD-X", 777, at=_at(DAY1, 11, 0))]))      # unknown to platform
    first = _cli(database_url, "reconcile", "--date", DAY1.isoformat(),
                 "--statement", str(day1 / "unionpay.zip"),
                 "--statement", str(day1 / "alipay.csv"), "--out", str(tmp_path / "r1"),
                 "--format", "json")
    assert first.exit_code == 1, (first.output, repr(first.exception))

    open1 = {i["item_key"]: i for i in _list(database_url)}
    assert set(open1) == {card.channel_refund_no, ali_late.channel_refund_no, "RFNOBODY"}
    assert open1[card.channel_refund_no]["class"] == "in_transit"
    assert open1[ali_late.channel_refund_no]["class"] == "in_transit"
    assert open1["RFNOBODY"]["class"] == "unknown_to_platform"
    assert open1["RFNOBODY"]["last_event"]["action"] == "opened"

    # Finance looks into the unknown refund and closes it by hand.
    unknown_id = str(open1["RFNOBODY"]["id"])
    done = _cli(database_url, "discrepancies", "resolve", unknown_id, "--by", "li.na",
                "--note", "manual refund made in the merchant portal, ticket FIN-88")
    assert done.exit_code == 0, done.output
    missing = _cli(database_url, "discrepancies", "resolve", "999999", "--by", "x",
                   "--note", "y")
    assert missing.exit_code == 2 and "no discrepancy" in missing.output

    # Day 2: the card refund's success arrives; the late Alipay refund is on this bill.
    day2 = tmp_path / "day2"
    day2.mkdir()
    (day2 / "unionpay.zip").write_bytes(unionpay_settlement(
        [Line(card.channel_refund_no, "ORD-C", 4_500, "00", at=_at(DAY2, 9, 0))], DAY2))
    (day2 / "alipay.csv").write_bytes(alipay_detail(
        [Line(ali_late.channel_refund_no, "ORD-A", 2_000, at=_at(DAY2, 0, 0, 3))]))
    second = _cli(database_url, "reconcile", "--date", DAY2.isoformat(),
                  "--statement", str(day2 / "unionpay.zip"),
                  "--statement", str(day2 / "alipay.csv"), "--out", str(tmp_path / "r2"),
                  "--format", "json")
    assert second.exit_code == 0, (second.output, repr(second.exception))
    assert _list(database_url) == []

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            runs = [r.id for r in conn.execute(select(recon_runs).order_by(recon_runs.c.id))]
            items = {r.item_key: r._mapping for r in conn.execute(select(recon_items))}
            events = [dict(r._mapping) for r in conn.execute(
                select(recon_item_events).order_by(recon_item_events.c.id))]
    finally:
        engine.dispose()
    assert len(runs) == 2
    history = {k: [e for e in events if e["item_id"] == items[k]["id"]] for k in items}
    for key, source in ((card.channel_refund_no, "unionpay.zip!INN26112088ZM_"),
                        (ali_late.channel_refund_no, "alipay.csv:5")):
        item = items[key]
        assert (item["state"], item["class"]) == ("resolved", "matched")
        assert item["resolved_by"] == "reconcile"
        assert (item["first_seen_run"], item["last_seen_run"]) == (runs[0], runs[1])
        opened, closed = history[key]
        assert (opened["action"], opened["class_after"], opened["run_id"]) == (
            "opened", "in_transit", runs[0])
        assert (closed["action"], closed["actor"], closed["class_before"],
                closed["class_after"], closed["state_after"], closed["run_id"]) == (
            "closed", "reconcile", "in_transit", "matched", "resolved", runs[1])
        assert closed["note"].startswith(f"matched in run {runs[1]} ({source}")
    by_hand = items["RFNOBODY"]
    assert by_hand["state"] == "resolved" and by_hand["resolved_by"] == "li.na"
    assert by_hand["resolved_at"] is not None
    assert by_hand["last_seen_run"] == runs[0]     # resolved: not carried into run 2
    assert [(e["action"], e["actor"], e["note"]) for e in history["RFNOBODY"]][1:] == [
        ("resolved", "li.na", "manual refund made in the merchant portal, ticket FIN-88")]
    assert ali_ok.channel_refund_no not in items    # matched at once: never an item

    shown = _cli(database_url, "discrepancies", "list", "--all").stdout
    assert "li.na" in shown and "manual refund made in the merchant portal" in shown


def _engine(gw: RefundGateway) -> Engine:
    engine = getattr(gw.store, "engine", None)
    assert isinstance(engine, Engine)
    return engine


def test_store_source_window_and_classes(gw: RefundGateway, clock: FakeClock,
                                         channels: dict[Route, FakeChannel]) -> None:
    """``from_store`` takes refunds that succeeded in the Beijing day, or were created in
    it and have not succeeded, with order and trade numbers from their payment."""
    wx = channels[Route.WECHATPAY]
    clock.now = _at(DAY1 - (DAY2 - DAY1), 12, 0).astimezone(UTC)
    before = _refund(gw, "k-prev", Route.WECHATPAY, 100, "ORD-P")      # the day before
    clock.now = _at(DAY1, 0, 0, 0).astimezone(UTC)
    ok = _refund(gw, "k-ok", Route.WECHATPAY, 1_230, "ORD-1")
    part = _refund(gw, "k-part", Route.WECHATPAY, 770, "ORD-1")       # second partial
    wx.settle = ChannelStatus.PROCESSING
    pending = gw.refund(request(key="k-proc", amount=300, order="ORD-2"))
    assert pending.status is RefundStatus.PROCESSING
    wx.submit_script = ["refuse"]
    refused = gw.refund(request(key="k-fail", amount=400, order="ORD-3"))
    assert refused.status is RefundStatus.FAILED
    clock.now = _at(DAY2, 0, 0, 0).astimezone(UTC)                    # next day: outside
    wx.settle = ChannelStatus.SUCCEEDED
    _refund(gw, "k-next", Route.WECHATPAY, 500, "ORD-N")

    engine = _engine(gw)
    start, end = beijing_day(DAY1)
    plat = from_store(engine, start, end, [Route.WECHATPAY])
    got = {r["channel_refund_no"]: r for r in plat.iter_rows(named=True)}
    assert set(got) == {ok.channel_refund_no, part.channel_refund_no,
                        pending.channel_refund_no, refused.channel_refund_no}
    row = got[ok.channel_refund_no]
    assert (row["refund_id"], row["merchant_order_no"], row["channel_trade_no"],
            row["amount_minor"], row["status"]) == (ok.id, "ORD-1", "TORD-1", 1_230,
                                                    "succeeded")
    assert row["succeeded_at"] == ok.succeeded_at
    assert row["channel_refund_id"] == f"CH{ok.channel_refund_no}"
    # Carried-over numbers are loaded whatever their day.
    carried = from_store(engine, start, end, [Route.WECHATPAY], [before.channel_refund_no])
    assert before.channel_refund_no in set(carried.get_column("channel_refund_no"))

    noon = _at(DAY1, 12, 0)
    bill = wechat_refund_bill([
        Line(ok.channel_refund_no, "ORD-1", 1_230, at=noon),
        Line(part.channel_refund_no, "ORD-1", 707, at=noon),                   # amount differs
        Line(pending.channel_refund_no, "ORD-2", 300, "PROCESSING", at=noon),
        Line(refused.channel_refund_no, "ORD-3", 400, at=noon)])               # channel paid it
    result = reconcile(run_date=DAY1, routes=[Route.WECHATPAY],
                       statements=[Source.of(bill, "wx.csv")],
                       platform=lambda c: from_store(engine, start, end, [Route.WECHATPAY], c),
                       platform_source="store", engine=engine)
    classes = {r["channel_refund_no"]: r["class"] for r in result.rows.iter_rows(named=True)}
    assert classes == {ok.channel_refund_no: "matched", part.channel_refund_no:
                       "amount_mismatch", pending.channel_refund_no: "in_transit",
                       refused.channel_refund_no: "status_mismatch"}
    assert result.run_id is not None
