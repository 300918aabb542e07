"""Totals that mean what they say (issue 18), on SQLite, PostgreSQL and MariaDB, through
``refund-gateway reconcile --json``: "matched" is money the channel confirmed. A WeChat
refund that went ABNORMAL (the bill says so) and was rerouted to the platform balance
(the wallet ledger credits it) is one chain: the rerouted refund is "not refunded" (no
money moved, no item), the balance refund matched; the chain's money is counted once. A
refund failed on both sides is not refunded either, never matched. Without a store, the
export's ``rerouted_from`` column makes the chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from gateway import Money, Payment, RefundGateway, RefundRequest, Route
from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import BEIJING
from gateway.models import ChannelStatus, Refund, RefundStatus
from gateway.settings import load_settings
from reconciliation.job import reconcile
from reconciliation.matching import PLATFORM_SCHEMA
from reconciliation.platform import LINK_COLUMN
from reconciliation.statements import Source
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock
from tests.unit.reconciliation.bills import Line, wechat_refund_bill

DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=BEIJING)


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def gw(database_url: str, channel: FakeChannel) -> Iterator[RefundGateway]:
    gateway = build_gateway(load_settings(database_url=database_url),
                            clock=FakeClock(datetime(2026, 11, 20, 2, tzinfo=UTC)),
                            sleep=lambda _: None, configure_logs=False,
                            adapters={Route.WECHATPAY: channel,
                                      Route.BALANCE: FakeBalance(Ledger())})
    yield gateway
    gateway.close()


def _refund(gw: RefundGateway, key: str, amount: int) -> Refund:
    return gw.refund(RefundRequest(key, Payment(Route.WECHATPAY, f"ORD-{key}",
                                                f"T-{key}", Money(10_000), user_id="u1"),
                                   Money(amount), "goods not delivered"))


def _ledger(refunds: list[Refund]) -> bytes:
    rows = ["wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,credited_at"]
    rows += [f"W{i},{r.channel_refund_no},u1,{r.payment.merchant_order_no},{r.amount.minor},"
             f"CNY,SUCCESS,{NOON.isoformat()}" for i, r in enumerate(refunds)]
    return ("\n".join(rows) + "\n").encode()


def test_a_rerouted_refund_and_its_linked_refund_are_one_chain_counted_once(
        gw: RefundGateway, channel: FakeChannel, database_url: str, tmp_path: Path) -> None:
    channel.settle = ChannelStatus.ABNORMAL
    original = _refund(gw, "card-gone", 8_000)
    assert original.status is RefundStatus.ABNORMAL
    linked = gw.reroute(original.id, Route.BALANCE, note="card cancelled")
    channel.settle = ChannelStatus.SUCCEEDED
    fine = _refund(gw, "fine", 3_000)
    channel.submit_script = ["refuse"]
    failed = _refund(gw, "refused", 1_000)
    assert (linked.status, fine.status, failed.status) == (
        RefundStatus.SUCCEEDED, RefundStatus.SUCCEEDED, RefundStatus.FAILED)

    wx = tmp_path / "wx.csv"
    wx.write_bytes(wechat_refund_bill([
        Line(original.channel_refund_no, "ORD-card-gone", 8_000, "ABNORMAL", at=NOON),
        Line(fine.channel_refund_no, "ORD-fine", 3_000, at=NOON),
        Line(failed.channel_refund_no, "ORD-refused", 1_000, "CLOSED", at=NOON)]))
    wallet = tmp_path / "balance.csv"
    wallet.write_bytes(_ledger([linked]))
    done = CliRunner().invoke(main, [
        "reconcile", "--date", DAY.isoformat(), "--statement", str(wx), "--statement",
        str(wallet), "--out", str(tmp_path / "out"), "--format", "json", "--json"],
        env={"REFUND_GATEWAY_DATABASE_URL": database_url})
    assert done.exit_code == 0, done.output          # nothing for anyone to do
    doc = json.loads(done.stdout)
    assert {k: n for k, n in doc["counts"].items() if n} == {"matched": 2, "not_refunded": 2}
    money = {(s["class"], s["route"]): s["amount"] for s in doc["summary"] if s["count"]}
    assert money == {("matched", "balance"): "80.00", ("matched", "wechatpay"): "30.00",
                     ("not_refunded", "wechatpay"): "90.00"}
    (chain,) = doc["chains"]
    assert chain["refunds"] == [original.id, linked.id]
    assert chain["amount_counted"] == "80.00"
    assert [(r["refund_id"], r["class"], r["amount"]) for r in chain["rows"]] == [
        (original.id, "not_refunded", "80.00"), (linked.id, "matched", "80.00")]
    listed = CliRunner().invoke(main, ["discrepancies", "list", "--json"],
                                env={"REFUND_GATEWAY_DATABASE_URL": database_url})
    assert json.loads(listed.stdout)["items"] == []        # not refunded opens no item

    human = CliRunner().invoke(main, [
        "reconcile", "--date", DAY.isoformat(), "--statement", str(wx), "--statement",
        str(wallet), "--out", str(tmp_path / "out2"), "--format", "json"],
        env={"REFUND_GATEWAY_DATABASE_URL": database_url})
    assert (f"reroute chain {original.id} -> {linked.id}: one refund's money, counted once"
            in human.stdout)


def test_without_a_store_the_exports_rerouted_from_makes_the_chain() -> None:
    at = NOON.astimezone(UTC)

    def row(refund_id: str, route: str, number: str, status: str, link: str | None
            ) -> tuple[Any, ...]:
        return (refund_id, route, "ORD1", "T1", number, None, 5_000, "CNY", status, at,
                at if status == "succeeded" else None, link)

    export = pl.DataFrame(
        [row("rfA", "wechatpay", "NA", "rerouted", None),
         row("rfB", "balance", "NB", "succeeded", "rfA")],
        schema={**PLATFORM_SCHEMA, LINK_COLUMN: pl.String()}, orient="row")
    wallet = ("wallet_txn_id,refund_no,user_id,order_no,amount_fen,currency,status,"
              f"credited_at\nW1,NB,u1,ORD1,5000,CNY,SUCCESS,{NOON.isoformat()}\n").encode()
    with reconcile(run_date=DAY, routes=[Route.WECHATPAY, Route.BALANCE],
                   statements=[Source.of(wallet, "balance.csv")],
                   platform=lambda _c: [export], platform_source="csv",
                   engine=None) as result:
        assert result.chains == {("wechatpay", "NA"): ("rfA", "rfB"),
                                 ("balance", "NB"): ("rfA", "rfB")}
        assert {k: n for k, n in result.counts().items() if n} == {"matched": 1,
                                                                  "not_refunded": 1}
        assert not result.has_discrepancies
