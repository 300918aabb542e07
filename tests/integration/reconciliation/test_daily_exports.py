"""Carry-over with daily exports (issue 18), on SQLite, PostgreSQL and MariaDB, through
``refund-gateway reconcile --json``: finance runs every day with that day's statement
and, for the platform, that day's refunds only: the refund service's CSV export of the
day, or the gateway's store (whose window is the day).

A bank-card refund of Thursday 2026-11-19 (1-5 working days: due by Thursday 11-26) is
missing from every settlement file. It is in transit on the 19th, the 20th and the 26th,
although none of the later exports holds it; on the 27th, the day its deadline has
passed, it becomes refunded, not received, in that run and its report; on Monday the
30th its line arrives and closes the item. Its history shows each step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import BEIJING
from gateway.models import ChannelStatus, RefundStatus, Route
from gateway.service import RefundGateway
from gateway.settings import load_settings
from tests.helpers import FakeClock, request
from tests.integration.reconciliation.test_carry_over import FakeBankcard
from tests.unit.reconciliation.bills import Line, PlatformRow, platform_csv, unionpay_settlement

THU, FRI, NEXT_THU, NEXT_FRI, MON = (date(2026, 11, 19), date(2026, 11, 20),
                                     date(2026, 11, 26), date(2026, 11, 27),
                                     date(2026, 11, 30))
DEADLINE = "2026-11-26"      # 5 working days after the 19th
RECONCILE_KEYS = {"schema", "database", "saved", "run_id", "run_date", "routes", "accounts",
                  "platform_source", "statements", "counts", "summary", "discrepancies",
                  "carried_over", "chains", "warnings", "bad_lines", "reports", "exit_code"}


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=BEIJING)


class Days:
    """One run per day: ``refund(day, ...)`` makes the day's refunds (through the
    gateway, or as the export's rows), ``run(day, lines)`` reconciles that day."""

    def __init__(self, source: str, database_url: str, tmp: Path) -> None:
        self.source, self.database_url, self.tmp = source, database_url, tmp
        self.rows: dict[date, list[PlatformRow]] = {}
        self.clock = FakeClock(_at(THU, 10).astimezone(UTC))
        self.channel = FakeBankcard()
        self.channel.settle = ChannelStatus.SUCCEEDED
        self.gw: RefundGateway | None = None
        if source == "store":
            self.gw = build_gateway(load_settings(database_url=database_url),
                                    clock=self.clock, sleep=lambda _: None,
                                    configure_logs=False,
                                    adapters={Route.BANKCARD: self.channel})

    def refund(self, day: date, key: str, amount: int) -> tuple[str, str]:
        """A bank-card refund that succeeds at 10:00 of ``day``: (refund id, number)."""
        if self.gw is not None:
            self.clock.now = _at(day, 10).astimezone(UTC)
            r = self.gw.refund(request(key=key, amount=amount, order=f"ORD-{key}",
                                       route=Route.BANKCARD))
            assert r.status is RefundStatus.SUCCEEDED
            return r.id, r.channel_refund_no
        row = PlatformRow(f"rf-{key}", "bankcard", f"ORD-{key}", f"RF-{key}", amount,
                          "succeeded", _at(day, 10), _at(day, 10))
        self.rows.setdefault(day, []).append(row)
        return row.refund_id, row.refund_no

    def run(self, day: date, lines: list[Line]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``reconcile --json`` of ``day``: (its stdout document, the JSON report)."""
        folder = self.tmp / day.isoformat()
        folder.mkdir()
        statement = folder / f"777290058110048_{day:%Y%m%d}.zip"
        statement.write_bytes(unionpay_settlement(lines, day))
        args = ["reconcile", "--date", day.isoformat(), "--route", "bankcard",
                "--statement", str(statement), "--out", str(folder), "--format", "json",
                "--json"]
        if self.source == "csv":    # the export of this day's refunds, nothing else
            args += ["--platform-csv",
                     str(platform_csv(self.rows.get(day, []), folder / "export.csv"))]
        done = CliRunner().invoke(main, args,
                                  env={"REFUND_GATEWAY_DATABASE_URL": self.database_url})
        assert done.exit_code in (0, 1), (done.output, repr(done.exception))
        doc = json.loads(done.stdout)
        assert doc["exit_code"] == done.exit_code
        assert set(doc) == RECONCILE_KEYS and doc["schema"] == "refund-gateway/cli/reconcile/v1"
        report = json.loads((folder / f"reconciliation-{day}.json").read_text("utf-8"))
        return doc, report

    def show(self, item_id: int) -> dict[str, Any]:
        done = CliRunner().invoke(main, ["discrepancies", "show", str(item_id), "--json"],
                                  env={"REFUND_GATEWAY_DATABASE_URL": self.database_url})
        assert done.exit_code == 0, done.output
        shown: dict[str, Any] = json.loads(done.stdout)
        return shown


@pytest.fixture(params=["csv", "store"])
def days(request: pytest.FixtureRequest, database_url: str, tmp_path: Path
         ) -> Iterator[Days]:
    d = Days(str(request.param), database_url, tmp_path)
    yield d
    if d.gw is not None:
        d.gw.close()


def _row(report: dict[str, Any], number: str) -> dict[str, Any]:
    (row,) = [r for r in report["rows"] if r["channel_refund_no"] == number]
    return row


def test_an_in_transit_refund_missing_from_later_exports_becomes_not_received(
        days: Days) -> None:
    card_id, card = days.refund(THU, "card", 4_500)
    # Day 1: the card refund is not on the day's file: in transit.
    doc, report = days.run(THU, [])
    assert doc["counts"]["in_transit"] == 1 and doc["exit_code"] == 0
    item_id = _row(report, card)["item_id"]
    assert item_id is not None and _row(report, card)["state"] == "open"

    # Later days: each export holds that day's refunds only; the card refund is still
    # judged, from the store or, for the CSV, from what its open item stored.
    for day, key in ((FRI, "fri"), (NEXT_THU, "thu2")):
        _, number = days.refund(day, key, 1_000)
        doc, report = days.run(day, [Line(number, f"ORD-{key}", 1_000, "00",
                                          at=_at(day, 10, 30))])
        assert doc["exit_code"] == 0, doc
        assert doc["counts"] == {**{k: 0 for k in doc["counts"]}, "matched": 1,
                                 "in_transit": 1}
        row = _row(report, card)
        assert (row["class"], row["refund_id"], row["item_id"], row["arrival_latest"]) == (
            "in_transit", card_id, item_id, DEADLINE)
        carried = [c["channel_refund_no"] for c in doc["carried_over"]]
        assert carried == ([card] if days.source == "csv" else [])

    # The 27th: the deadline (the 26th, working days) has passed with no statement line.
    _, number = days.refund(NEXT_FRI, "fri2", 700)
    doc, report = days.run(NEXT_FRI, [Line(number, "ORD-fri2", 700, "00",
                                           at=_at(NEXT_FRI, 9))])
    assert doc["exit_code"] == 1
    assert doc["counts"]["refunded_not_received"] == 1 and doc["counts"]["in_transit"] == 0
    row = _row(report, card)
    assert (row["class"], row["state"], row["item_id"], row["statement_lines"]) == (
        "refunded_not_received", "open", item_id, 0)
    assert {(s["class"], s["count"], s["amount"]) for s in doc["summary"]
            if s["count"]} == {("matched", 1, "7.00"), ("refunded_not_received", 1, "45.00")}

    # Monday: the line arrives (late); it closes the item.
    doc, report = days.run(MON, [Line(card, "ORD-card", 4_500, "00", at=_at(MON, 8))])
    assert doc["exit_code"] == 0 and doc["counts"]["matched"] == 1
    assert report["rows"] == []

    shown = days.show(item_id)
    assert (shown["item"]["state"], shown["item"]["class"]) == ("resolved", "matched")
    steps = [(e["action"], e["class_before"], e["class_after"], e["state_after"])
             for e in shown["history"]]
    assert steps == [("opened", None, "in_transit", "open"),
                     ("reclassified", "in_transit", "refunded_not_received", "open"),
                     ("closed", "refunded_not_received", "matched", "resolved")]
    why = shown["history"][1]["note"]
    assert f"arrival deadline {DEADLINE} passed with no statement line" in why
    assert ("judged from the open item" in why) == (days.source == "csv")
    assert shown["history"][2]["note"].startswith("matched in run ")
    assert all(e["actor"] == "reconcile" for e in shown["history"])
    assert shown["database"] == doc["database"]
