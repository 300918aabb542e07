"""The engine and the reports for DESIGN.md's "paid twice": a platform refund named in
``paid_twice`` (number -> route; ``platform.paid_twice`` reads them from the store) is in
that class whatever its statement line says, in memory and through the spilled buckets;
the reports name the other refunds of the release (``linked_refunds``)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from gateway.clock import BEIJING
from gateway.models import Route
from reconciliation.job import RunResult, load_statements
from reconciliation.matching import (
    CLASS_ORDER,
    PLATFORM_SCHEMA,
    Klass,
    classify,
    classify_parts,
    summarise,
)
from reconciliation.reports import COLUMNS, records, write_csv, write_json
from reconciliation.rows import RunRows
from reconciliation.statements import Source
from reconciliation.statements.base import BadLines
from tests.helpers import records_csv
from tests.unit.reconciliation.bills import Line, wechat_refund_bill

DAY = date(2024, 6, 11)
AT = datetime(2024, 6, 11, 9, 0, tzinfo=BEIJING).astimezone(UTC)


def _platform(rows: list[tuple[str, str, str, int, str]]) -> pl.DataFrame:
    """(refund id, route, number, amount, status) -> ``PLATFORM_SCHEMA`` rows."""
    return pl.DataFrame(
        [(rid, route, f"O{no}", f"T{no}", no, f"CH{no}", amount, "CNY", status, AT,
          AT + timedelta(seconds=5) if status == "succeeded" else None)
         for rid, route, no, amount, status in rows],
        schema=PLATFORM_SCHEMA, orient="row")


PLATFORM = [
    ("rf1", "wechatpay", "RF1", 10_000, "rerouted"),   # the bill shows the late success
    ("rf2", "wechatpay", "RF2", 5_000, "failed"),      # not on the bill at all
    ("rf3", "wechatpay", "RF3", 4_000, "closed"),      # the bill says a different amount
    ("rf4", "wechatpay", "RF4", 3_000, "rerouted"),    # a number flagged for another route
    ("rf5", "wechatpay", "RF5", 2_000, "rerouted"),    # released and still unpaid
    ("rf6", "balance", "RF6", 10_000, "succeeded"),    # rf1's linked refund
]
FLAGGED = {"RF1": "wechatpay", "RF2": "wechatpay", "RF3": "wechatpay", "RF4": "alipay"}


def _statement() -> pl.DataFrame:
    bill = wechat_refund_bill([Line("RF1", "ORF1", 10_000), Line("RF3", "ORF3", 4_100),
                               Line("RF4", "ORF4", 3_000)])
    return load_statements([Source.of(bill, "wx.csv")], BadLines())


def _classes(rows: pl.DataFrame) -> dict[str, str]:
    return dict(rows.select("channel_refund_no", "class").iter_rows())


def test_flagged_refunds_are_paid_twice_whatever_the_statement_says() -> None:
    rows = classify(_platform(PLATFORM), _statement(), DAY, paid_twice=FLAGGED)
    assert _classes(rows) == {
        "RF1": "paid_twice", "RF2": "paid_twice", "RF3": "paid_twice",
        "RF4": "status_mismatch",            # flagged under alipay: not this refund
        "RF5": "not_refunded", "RF6": "in_transit"}     # no money moved: never matched
    # without the store's alarms the same refunds are what the statement makes of them
    plain = classify(_platform(PLATFORM), _statement(), DAY)
    assert _classes(plain)["RF1"] == "status_mismatch"
    assert _classes(plain)["RF2"] == "not_refunded"
    assert _classes(plain)["RF3"] == "amount_mismatch"
    # report order: paid twice is the last class of DESIGN.md's table
    assert CLASS_ORDER[-1] is Klass.PAID_TWICE and Klass.PAID_TWICE.is_discrepancy
    assert rows.get_column("class").to_list()[-3:] == ["paid_twice"] * 3
    assert rows.get_column("channel_refund_no").to_list()[-3:] == ["RF1", "RF2", "RF3"]


def test_spilled_buckets_flag_the_same_rows(tmp_path: Path) -> None:
    whole = classify(_platform(PLATFORM), _statement(), DAY, paid_twice=FLAGGED)
    parts = classify_parts([_platform(PLATFORM)], [_statement()], DAY, partitions=4,
                           directory=tmp_path, paid_twice=FLAGGED)
    assert parts.equals(whole)


def _result() -> RunResult:
    rows = classify(_platform(PLATFORM), _statement(), DAY, paid_twice=FLAGGED)
    return RunResult(None, DAY, [Route.WECHATPAY, Route.BALANCE], RunRows(rows),
                     summarise(rows), linked={("wechatpay", "RF1"): ("rf6",),
                                              ("wechatpay", "RF2"): ("=rf7", "rf8"),
                                              ("wechatpay", "RF3"): ()})


def test_reports_name_the_linked_refunds(tmp_path: Path) -> None:
    result = _result()
    linked = {r["channel_refund_no"]: r["linked_refunds"] for r in records(result)}
    assert linked == {"RF1": "rf6", "RF2": "=rf7, rf8", "RF3": None, "RF4": None,
                      "RF5": None, "RF6": None}
    doc = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert doc["counts"]["paid_twice"] == 3
    assert {(s["route"], s["count"], s["amount"]) for s in doc["summary"]
            if s["class"] == "paid_twice"} == {("wechatpay", 3, "190.00"),
                                               ("balance", 0, "0.00")}
    # the columnar CSV is the records rendering, the new column neutralised like the rest
    got = write_csv(result, tmp_path / "r.csv").read_bytes()
    assert got == records_csv(result)
    assert b"'=rf7, rf8" in got
    assert COLUMNS.index("linked_refunds") == COLUMNS.index("refund_id") + 1


def test_xlsx_has_a_paid_twice_sheet(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from reconciliation.reports import write_xlsx

    wb = load_workbook(write_xlsx(_result(), tmp_path / "r.xlsx"), read_only=True)
    assert wb.sheetnames[-1] == "重复退款 paid_twice"
    header, *rows = list(wb["重复退款 paid_twice"].iter_rows(values_only=True))
    got = [dict(zip(header, r, strict=False)) for r in rows]
    assert [(g["平台退款单号 Refund ID"], g["关联退款 Linked refunds"]) for g in got] == [
        ("rf1", "rf6"), ("rf2", "'=rf7, rf8"), ("rf3", None)]
    wb.close()
