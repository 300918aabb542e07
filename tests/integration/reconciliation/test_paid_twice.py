"""DESIGN.md "paid twice" (issue 15 behaviour 8), from the gateway's alarm to finance's
list, on SQLite and PostgreSQL: refunds made through ``RefundGateway`` with the scripted
channels of tests/fakes.py, runs through ``refund-gateway reconcile`` (store source).

A WeChat refund goes ABNORMAL, is rerouted to the platform balance (paid there), then
WeChat's notification says the original succeeded after all: the gateway records
``paid_after_release``. Every run from then on shows one "paid twice" item naming both
refunds, whatever the statement says (here: the WeChat bill lists the late success, then
an empty bill on a later day), until a person resolves it; no run opens a second one."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, select

from gateway import Money, Payment, RefundGateway, RefundRequest, Route
from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import BEIJING
from gateway.models import ChannelStatus, EventKind, Refund, RefundStatus
from gateway.settings import load_settings
from reconciliation.job import beijing_day, reconcile
from reconciliation.platform import from_store
from reconciliation.schema import recon_items
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock
from tests.unit.reconciliation.bills import Line, wechat_refund_bill

DAY1, DAY2, DAY3 = date(2026, 11, 20), date(2026, 11, 23), date(2026, 11, 24)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 20, 2, 0, tzinfo=UTC))     # 10:00 Beijing, DAY1


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def gw(database_url: str, clock: FakeClock, channel: FakeChannel) -> Iterator[RefundGateway]:
    gateway = build_gateway(load_settings(database_url=database_url), clock=clock,
                            sleep=lambda _: None, configure_logs=False,
                            adapters={Route.WECHATPAY: channel,
                                      Route.BALANCE: FakeBalance(Ledger())})
    yield gateway
    gateway.close()


def _cli(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args),
                              env={"REFUND_GATEWAY_DATABASE_URL": database_url})


def _request(key: str, order: str, amount: int = 10_000) -> RefundRequest:
    return RefundRequest(key, Payment(Route.WECHATPAY, order, f"T{order}", Money(10_000),
                                      user_id="u1"), Money(amount), "goods not delivered")


def _late_success(gw: RefundGateway, refund: Refund) -> None:
    """WeChat's verified notification: the released refund succeeded after all."""
    body = f"{refund.channel_refund_no}:succeeded:{refund.amount.minor}".encode()
    ack = gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-nonce": "n1"},
                                 body)
    assert ack.accepted
    assert any(e.kind is EventKind.PAID_AFTER_RELEASE for e in gw.events(refund.id))


def _items(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(recon_items).order_by(recon_items.c.id))]
    finally:
        engine.dispose()


def _run(database_url: str, tmp_path: Path, day: date, lines: list[Line]) -> dict[str, Any]:
    bill = tmp_path / f"wx-{day}.csv"
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=BEIJING)   # the bill's day
    bill.write_bytes(wechat_refund_bill([replace(ln, at=noon) for ln in lines]))
    out = tmp_path / f"r-{day}"
    done = _cli(database_url, "reconcile", "--date", day.isoformat(), "--route", "wechatpay",
                "--statement", str(bill), "--out", str(out), "--format", "json,csv,html")
    assert done.exit_code == 1, (done.output, repr(done.exception))   # a discrepancy
    doc: dict[str, Any] = json.loads((out / f"reconciliation-{day}.json").read_text())
    doc["csv"] = list(csv.DictReader(io.StringIO(
        (out / f"reconciliation-{day}.csv").read_text(encoding="utf-8-sig"))))
    doc["html"] = (out / f"reconciliation-{day}.html").read_text(encoding="utf-8")
    return doc


def test_a_rerouted_refund_paid_on_its_route_is_one_paid_twice_item(
        gw: RefundGateway, channel: FakeChannel, database_url: str, tmp_path: Path) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    original = gw.refund(_request("k1", "ORD1"))
    linked = gw.reroute(original.id, Route.BALANCE)
    assert linked.status is RefundStatus.SUCCEEDED
    _late_success(gw, original)
    channel.settle = ChannelStatus.SUCCEEDED
    fine = gw.refund(_request("k2", "ORD2", 3_000))          # an ordinary refund, matched

    # Day 1: the bill lists the late success; the class is paid twice, not status mismatch.
    first = _run(database_url, tmp_path, DAY1, [
        Line(original.channel_refund_no, "ORD1", 10_000),
        Line(fine.channel_refund_no, "ORD2", 3_000)])
    assert first["counts"]["paid_twice"] == 1
    assert first["counts"]["matched"] == 1 and first["counts"]["status_mismatch"] == 0
    (row,) = first["rows"]
    assert (row["class"], row["route"], row["refund_id"], row["linked_refunds"],
            row["platform_status"], row["statement_status"], row["platform_amount"],
            row["state"]) == ("paid_twice", "wechatpay", original.id, linked.id, "rerouted",
                              "succeeded", "100.00", "open")
    assert {(s["route"], s["count"], s["amount"]) for s in first["summary"]
            if s["class"] == "paid_twice"} == {("wechatpay", 1, "100.00")}
    (csv_row,) = [r for r in first["csv"] if r["class"] == "paid_twice"]
    assert (csv_row["refund_id"], csv_row["linked_refunds"]) == (original.id, linked.id)
    assert 'id="paid-twice-alarm"' in first["html"] and linked.id in first["html"]

    (item,) = _items(database_url)
    assert (item["class"], item["state"], item["refund_id"], item["item_key"]) == (
        "paid_twice", "open", original.id, original.channel_refund_no)
    # The linked refunds have a column of their own: a resolution note never replaces them.
    assert json.loads(item["linked_refunds"]) == [linked.id]
    listed = _cli(database_url, "discrepancies", "list").stdout.splitlines()
    (line,) = [ln for ln in listed if original.id in ln]
    assert "paid_twice" in line and f"[linked: {linked.id}]" in line

    # Day 2: nothing about it on the bill, and it is outside the day: still shown, the
    # same item, not a second one (day 1's line, carried, is its evidence).
    second = _run(database_url, tmp_path, DAY2, [])
    (again,) = second["rows"]
    assert (again["class"], again["refund_id"], again["linked_refunds"], again["item_id"],
            again["source"], again["line"]) == ("paid_twice", original.id, linked.id,
                                                item["id"],
                                                f"carried from run {item['last_seen_run']}", 0)
    (still,) = _items(database_url)
    assert (still["id"], still["class"], still["state"]) == (item["id"], "paid_twice", "open")
    assert still["last_seen_run"] > item["last_seen_run"] == item["first_seen_run"]

    # Finance recovers the money and resolves it: later runs leave it resolved.
    done = _cli(database_url, "discrepancies", "resolve", str(item["id"]), "--by", "li.na",
                "--note", "recovered from the balance, ticket FIN-90")
    assert done.exit_code == 0, done.output
    third = CliRunner().invoke(main, [
        "reconcile", "--date", DAY3.isoformat(), "--route", "wechatpay", "--statement",
        str(tmp_path / f"wx-{DAY2}.csv"), "--out", str(tmp_path / "r3"), "--format", "json"],
        env={"REFUND_GATEWAY_DATABASE_URL": database_url})
    assert third.exit_code == 0, (third.output, repr(third.exception))
    (kept,) = _items(database_url)
    assert (kept["state"], kept["resolved_by"], kept["class"]) == ("resolved", "li.na",
                                                                   "paid_twice")
    assert json.loads(kept["linked_refunds"]) == [linked.id]


def _engine(gw: RefundGateway) -> Engine:
    engine = getattr(gw.store, "engine", None)
    assert isinstance(engine, Engine)
    return engine


def test_a_failed_refund_paid_later_names_the_refund_that_took_its_amount(
        gw: RefundGateway, channel: FakeChannel, clock: FakeClock) -> None:
    """FAILED, the merchant refunded again under a new key, then the first was paid."""
    channel.settle = ChannelStatus.SUCCEEDED
    channel.submit_script = ["refuse"]
    failed = gw.refund(_request("k1", "ORD1"))
    assert failed.status is RefundStatus.FAILED
    retry = gw.refund(_request("k2", "ORD1"))
    assert retry.status is RefundStatus.SUCCEEDED
    other = gw.refund(_request("k3", "ORD9", 500))             # another payment: not named
    _late_success(gw, failed)
    engine = _engine(gw)
    start, end = beijing_day(DAY1)
    result = reconcile(run_date=DAY1, routes=[Route.WECHATPAY], statements=[],
                       platform=lambda c: from_store(engine, start, end, [Route.WECHATPAY],
                                                     c),
                       platform_source="store", engine=engine)
    classes = {r["refund_id"]: r["class"] for r in result.rows.iter_rows(named=True)}
    assert classes == {failed.id: "paid_twice", retry.id: "in_transit",
                       other.id: "in_transit"}
    assert result.linked == {("wechatpay", failed.channel_refund_no): (retry.id,)}
    assert result.counts()["paid_twice"] == 1 and result.has_discrepancies
