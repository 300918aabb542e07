"""The discrepancy workflow keeps its history (issue 18), on SQLite, PostgreSQL and
MariaDB, through ``refund-gateway discrepancies``: resolving needs a non-empty ``--by``
and ``--note`` and an open item; every resolve and reopen is an append-only history row
(who, when, note, class before and after) that ``discrepancies show`` lists; a later run
that changes a resolved item's class reopens it with the reason, and what the people
wrote stays. ``--json`` documents, one schema per command (README.md)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.clock import BEIJING
from gateway.store.location import database_label
from tests.unit.reconciliation.bills import Line, PlatformRow, platform_csv, wechat_refund_bill

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)
AT1 = datetime(2026, 11, 19, 9, tzinfo=BEIJING)
ITEM_KEYS = {"id", "state", "class", "label", "route", "item_key", "refund_id",
             "channel_refund_id", "merchant_order_no", "platform_amount_minor",
             "statement_amount_minor", "platform_amount", "statement_amount", "currency",
             "platform_status", "statement_status", "succeeded_at", "arrival_latest",
             "source", "line", "statement_time", "linked_refunds", "first_seen_run",
             "last_seen_run", "resolved_by", "resolved_at"}
EVENT_KEYS = {"id", "at", "actor", "action", "class_before", "class_after", "state_before",
              "state_after", "run_id", "note"}


class Cli:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args),
                                  env={"REFUND_GATEWAY_DATABASE_URL": self.url})

    def json(self, *args: str, code: int = 0) -> dict[str, Any]:
        done = self(*args, "--json")
        assert done.exit_code == code, done.output
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def run(self, day: date, lines: list[Line]) -> Result:
        bill = self.tmp / f"wx-{day}.csv"
        bill.write_bytes(wechat_refund_bill(lines))
        export = platform_csv([PlatformRow("rf-1", "wechatpay", "ORD-1", "RF1", 1_000,
                                           "succeeded", AT1, AT1)] if day == DAY1 else [],
                              self.tmp / f"export-{day}.csv")
        return self("reconcile", "--date", day.isoformat(), "--statement", str(bill),
                    "--platform-csv", str(export), "--out", str(self.tmp / str(day)),
                    "--format", "json")


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(database_url, tmp_path)


def test_resolve_and_reopen_append_history_and_a_run_reopens_with_its_reason(
        cli: Cli) -> None:
    first = cli.run(DAY1, [Line("RF1", "ORD-1", 900, at=datetime(2026, 11, 19, 10,
                                                                 tzinfo=BEIJING))])
    assert first.exit_code == 1, first.output
    listed = cli.json("discrepancies", "list")
    assert listed["schema"] == "refund-gateway/cli/discrepancies-list/v1"
    assert listed["state"] == "open"
    assert listed["database"] == database_label(cli.url)
    (item,) = listed["items"]
    assert set(item) >= ITEM_KEYS and item["events"] == 1
    assert (item["class"], item["platform_amount"], item["statement_amount"]) == (
        "amount_mismatch", "10.00", "9.00")
    assert set(item["last_event"]) == EVENT_KEYS
    assert item["last_event"]["note"] == "platform 10.00, statement 9.00 (wx-2026-11-19.csv:2)"
    number = str(item["id"])

    # Empty or blank who/what is refused, and nothing is recorded.
    for by, note, what in (("", "fee", "--by is empty"), ("  ", "fee", "--by is empty"),
                           ("li.na", "", "--note is empty"), ("li.na", " \t", "--note is empty"),
                           ("x" * 65, "fee", "--by is 65 characters")):
        refused = cli("discrepancies", "resolve", number, "--by", by, "--note", note)
        assert refused.exit_code == 2 and what in refused.stderr, refused.output
    assert len(cli.json("discrepancies", "show", number)["history"]) == 1

    done = cli.json("discrepancies", "resolve", number, "--by", "li.na", "--note",
                    "channel kept a 1.00 fee; accepted, ticket FIN-7")
    assert done["schema"] == "refund-gateway/cli/discrepancies-resolve/v1" and set(done) == {
        "schema", "database", "item", "event"}
    assert (done["item"]["state"], done["item"]["resolved_by"]) == ("resolved", "li.na")
    assert (done["event"]["action"], done["event"]["actor"], done["event"]["class_before"],
            done["event"]["class_after"], done["event"]["state_before"],
            done["event"]["state_after"]) == ("resolved", "li.na", "amount_mismatch",
                                              "amount_mismatch", "open", "resolved")
    assert done["event"]["at"].endswith("+08:00")

    # A second resolve does not overwrite the first: refused, naming who resolved it.
    again = cli("discrepancies", "resolve", number, "--by", "wang.wei", "--note", "other")
    assert again.exit_code == 2
    assert f"discrepancy {number} is already resolved by li.na" in again.stderr
    assert "reopen it first" in again.stderr
    reopened = cli.json("discrepancies", "reopen", number, "--by", "wang.wei", "--note",
                        "user disputes the fee")
    assert (reopened["item"]["state"], reopened["item"]["resolved_by"],
            reopened["event"]["action"]) == ("open", None, "reopened")
    assert cli("discrepancies", "reopen", number, "--by", "a", "--note", "b").exit_code == 2
    cli.json("discrepancies", "resolve", number, "--by", "li.na", "--note",
             "fee refunded to the user by hand, ticket FIN-9")

    # Day 2: the channel lists RF1 again, closed: the class changes, the item reopens.
    second = cli.run(DAY2, [Line("RF1", "ORD-1", 1_000, "CLOSED",
                                 at=datetime(2026, 11, 20, 10, tzinfo=BEIJING))])
    assert second.exit_code == 1, second.output
    shown = cli.json("discrepancies", "show", number)
    assert set(shown) == {"schema", "database", "item", "history"}
    assert (shown["item"]["state"], shown["item"]["class"]) == ("open",
                                                                "refunded_not_received")
    assert all(set(e) == EVENT_KEYS for e in shown["history"])
    assert [(e["action"], e["actor"], e["class_before"], e["class_after"])
            for e in shown["history"]] == [
        ("opened", "reconcile", None, "amount_mismatch"),
        ("resolved", "li.na", "amount_mismatch", "amount_mismatch"),
        ("reopened", "wang.wei", "amount_mismatch", "amount_mismatch"),
        ("resolved", "li.na", "amount_mismatch", "amount_mismatch"),
        ("reopened", "reconcile", "amount_mismatch", "refunded_not_received")]
    notes = [e["note"] for e in shown["history"]]
    assert notes[1:4] == ["channel kept a 1.00 fee; accepted, ticket FIN-7",
                          "user disputes the fee",
                          "fee refunded to the user by hand, ticket FIN-9"]
    assert notes[4].startswith("reopened: run ")
    assert notes[4].endswith("finds it refunded, not received (was amount mismatch): the "
                             "statement says closed (wx-2026-11-20.csv:2)")
    assert shown["history"][4]["run_id"] == shown["item"]["last_seen_run"]

    # The human view: Beijing times, every note.
    text = cli("discrepancies", "show", number)
    assert text.exit_code == 0
    for e in shown["history"]:
        assert e["at"][:19].replace("T", " ") in text.stdout and e["note"] in text.stdout
    table = cli("discrepancies", "list").stdout.splitlines()
    assert table[0].startswith("database: ")
    assert table[1].split()[:5] == ["id", "state", "class", "route", "channel"]
    assert "refunded_not_received" in table[2] and "reconcile" in table[2]


def test_unknown_item_is_exit_2_in_json_too(cli: Cli) -> None:
    cli.run(DAY1, [])
    doc = cli.json("discrepancies", "show", "4242", code=2)
    assert doc == {"schema": "refund-gateway/cli/discrepancies-show/v1",
                   "error": "no discrepancy with id 4242", "exit_code": 2}
