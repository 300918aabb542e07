"""Wrong input is refused, not reconciled (issue 18), through ``refund-gateway reconcile``:
a statement of another route than ``--route``, the same file twice, a statement of
another day are exit 2 with nothing recorded; lines outside the day (UnionPay's 23:00
cut-off allowed for) and platform refunds of other days are warnings with counts (exit
1, kept with the run); a refund matched by an earlier run that a later statement lists
again is a duplicate, not unknown to the platform."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select

from gateway.cli import main
from gateway.clock import BEIJING
from reconciliation.schema import recon_items, recon_runs
from tests.unit.reconciliation.bills import (
    Line,
    PlatformRow,
    alipay_detail,
    platform_csv,
    unionpay_settlement,
    wechat_refund_bill,
)

DAY = date(2026, 11, 19)
NEXT = date(2026, 11, 20)


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=BEIJING)


def _rows(day: date, *numbers: str, route: str = "wechatpay") -> list[PlatformRow]:
    return [PlatformRow(f"rf-{n}", route, f"ORD-{n}", n, 1_000, "succeeded", _at(day, 9),
                        _at(day, 9)) for n in numbers]


def _run(url: str, tmp: Path, day: date, statements: list[Path],
         rows: list[PlatformRow] | None, *extra: str) -> Result:
    out = tmp / f"out-{day}-{len(list(tmp.iterdir()))}"
    args = ["reconcile", "--date", day.isoformat(), "--out", str(out), "--format", "json",
            "--json", *extra]
    for s in statements:
        args += ["--statement", str(s)]
    if rows is not None:
        args += ["--platform-csv", str(platform_csv(rows, tmp / f"export-{day}.csv"))]
    return CliRunner().invoke(main, args, env={"REFUND_GATEWAY_DATABASE_URL": url})


def _doc(result: Result) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["exit_code"] == result.exit_code
    return doc


def _runs(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(recon_runs))]
    finally:
        engine.dispose()


def _bill(path: Path, lines: list[Line]) -> Path:
    path.write_bytes(wechat_refund_bill(lines))
    return path


def test_a_statement_of_another_route_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    ali = tmp_path / "alipay.csv"
    ali.write_bytes(alipay_detail([Line("RF1", "ORD-RF1", 1_000, at=_at(DAY, 10))]))
    done = _run(sqlite_url, tmp_path, DAY, [ali], _rows(DAY, "RF1"), "--route", "wechatpay")
    assert done.exit_code == 2, done.output
    assert "alipay.csv is a alipay statement" in done.stderr
    assert "this run is for wechatpay (--route)" in done.stderr
    assert _doc(done)["error"].startswith("alipay.csv is a alipay statement")
    assert _runs(sqlite_url) == []          # nothing reconciled, nothing recorded


def test_the_same_file_twice_is_refused_by_path_and_by_content(sqlite_url: str,
                                                               tmp_path: Path) -> None:
    bill = _bill(tmp_path / "wx.csv", [Line("RF1", "ORD-RF1", 1_000, at=_at(DAY, 10))])
    twice = _run(sqlite_url, tmp_path, DAY, [bill, bill], _rows(DAY, "RF1"))
    assert twice.exit_code == 2 and "wx.csv is given twice" in twice.stderr
    copy = tmp_path / "wx-copy.csv"
    shutil.copy(bill, copy)
    again = _run(sqlite_url, tmp_path, DAY, [bill, copy], _rows(DAY, "RF1"))
    assert again.exit_code == 2
    assert "wx-copy.csv has the same content as wx.csv" in again.stderr
    assert _runs(sqlite_url) == []


def test_a_statement_of_another_day_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    yesterday = _bill(tmp_path / "wx.csv", [Line("RF1", "ORD-RF1", 1_000,
                                                 at=_at(NEXT, 10))])
    done = _run(sqlite_url, tmp_path, DAY, [yesterday], _rows(DAY, "RF1"))
    assert done.exit_code == 2, done.output
    assert ("wx.csv: none of its 1 refund lines is of 2026-11-19 (wechatpay's statement "
            "day 2026-11-19 is 2026-11-19 00:00 to 2026-11-20 00:00 Beijing time; lines "
            "from 2026-11-20 10:00 to 2026-11-20 10:00)") in done.stderr
    assert _runs(sqlite_url) == []


def test_lines_outside_the_day_are_a_warning_with_counts(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    # UnionPay clears 23:00 to 23:00: a 22:30 line of the day before is outside, a 23:30
    # one is in (it clears on this day's file), as is 22:59 of the day itself.
    lines = [Line("RF1", "ORD-RF1", 1_000, "00", at=_at(DAY, 22, 59)),
             Line("RF2", "ORD-RF2", 1_000, "00", at=datetime(2026, 11, 18, 23, 30,
                                                             tzinfo=BEIJING)),
             Line("RF3", "ORD-RF3", 1_000, "00", at=datetime(2026, 11, 18, 22, 30,
                                                             tzinfo=BEIJING))]
    card = tmp_path / "777290058110048_20261119.zip"
    card.write_bytes(unionpay_settlement(lines, DAY))
    done = _run(sqlite_url, tmp_path, DAY, [card],
                _rows(DAY, "RF1", "RF2", "RF3", route="bankcard"))
    assert done.exit_code == 1, done.output      # all matched, but someone must look
    doc = _doc(done)
    assert doc["counts"]["matched"] == 3 and doc["discrepancies"] == 0
    (warning,) = doc["warnings"]
    assert (warning["code"], warning["count"], warning["details"]["lines"]) == (
        "lines_outside_day", 1, 3)
    assert warning["message"].startswith(
        "777290058110048_20261119.zip: 1 of 3 refund lines "
        "fall outside 2026-11-19 (bankcard's statement day 2026-11-19 is 2026-11-18 23:00 "
        "to 2026-11-19 23:00 Beijing time")
    (run,) = _runs(sqlite_url)
    assert json.loads(run["warnings"])[0]["code"] == "lines_outside_day"
    assert run["outcome"] == "discrepancies"


def test_platform_refunds_of_other_days_are_counted_and_judged(sqlite_url: str,
                                                              tmp_path: Path) -> None:
    bill = _bill(tmp_path / "wx.csv", [Line("RF1", "ORD-RF1", 1_000, at=_at(DAY, 10))])
    rows = [*_rows(DAY, "RF1"), *_rows(date(2026, 11, 2), "OLD1", "OLD2"),
            *_rows(date(2026, 11, 12), "OLD3")]
    done = _run(sqlite_url, tmp_path, DAY, [bill], rows)
    assert done.exit_code == 1, done.output
    doc = _doc(done)
    (warning,) = doc["warnings"]
    assert (warning["code"], warning["count"], warning["details"]["by_day"]) == (
        "platform_other_days", 3, {"2026-11-02": 2, "2026-11-12": 1})
    assert warning["message"] == ("3 platform refunds are not of 2026-11-19 (2026-11-02: "
                                  "2, 2026-11-12: 1); judged against this day's statements")
    # Judged, not dropped: old and not on the statement, they are refunded, not received.
    assert doc["counts"]["refunded_not_received"] == 3 and doc["counts"]["matched"] == 1


def _items(url: str) -> dict[str, dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.item_key: dict(r._mapping) for r in conn.execute(select(recon_items))}
    finally:
        engine.dispose()


def test_a_refund_matched_earlier_and_listed_again_is_a_duplicate(
        database_url: str, tmp_path: Path) -> None:
    day1 = _bill(tmp_path / "wx-1.csv", [Line("RF1", "ORD-RF1", 1_000, at=_at(DAY, 10))])
    first = _run(database_url, tmp_path, DAY, [day1], _rows(DAY, "RF1"))
    assert first.exit_code == 0, first.output
    # Running the same day again sees its own line again: still matched.
    rerun = _run(database_url, tmp_path, DAY, [day1], _rows(DAY, "RF1"))
    assert rerun.exit_code == 0 and _doc(rerun)["counts"]["matched"] == 1
    # The next day's export has that day's refunds only; its bill lists RF1 again.
    day2 = _bill(tmp_path / "wx-2.csv", [Line("RF1", "ORD-RF1", 1_000, at=_at(NEXT, 9)),
                                         Line("RF2", "ORD-RF2", 1_000, at=_at(NEXT, 9))])
    second = _run(database_url, tmp_path, NEXT, [day2], _rows(NEXT, "RF2"))
    assert second.exit_code == 1, second.output
    doc = _doc(second)
    assert (doc["counts"]["duplicate"], doc["counts"]["unknown_to_platform"],
            doc["counts"]["matched"]) == (1, 0, 1)
    report = json.loads(Path(doc["reports"][0]).read_text("utf-8"))
    (row,) = report["rows"]
    assert (row["class"], row["channel_refund_no"], row["refund_id"],
            row["platform_amount"], row["source"]) == (
        "duplicate", "RF1", "rf-RF1", "10.00", "wx-2.csv")
    item = _items(database_url)["RF1"]
    assert (item["class"], item["refund_id"]) == ("duplicate", "rf-RF1")
    shown = json.loads(CliRunner().invoke(
        main, ["discrepancies", "show", str(item["id"]), "--json"],
        env={"REFUND_GATEWAY_DATABASE_URL": database_url}).stdout)
    (opened,) = shown["history"]
    assert opened["note"].startswith(f"matched in run {_doc(rerun)['run_id']} of "
                                     "2026-11-19 (wx-1.csv:")
    assert "and listed again (wx-2.csv:" in opened["note"]
    # Later: an export holding RF2 again (more than the day) does not judge it a second
    # time; the open duplicate stays one until a person resolves it.
    third = _run(database_url, tmp_path, date(2026, 11, 23),
                 [_bill(tmp_path / "wx-3.csv", [])], _rows(NEXT, "RF2"))
    assert third.exit_code == 1, third.output
    doc = _doc(third)
    assert [(w["code"], w["count"], w["details"]) for w in doc["warnings"]] == [
        ("platform_matched_before", 1, {"refunds": ["RF2"]})]
    assert doc["counts"] == {**{k: 0 for k in doc["counts"]}, "duplicate": 1}
    assert _items(database_url)["RF1"]["id"] == item["id"]
    assert "RF2" not in _items(database_url)
