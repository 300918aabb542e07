"""A reconciliation with every class a statement can show planted (golden statements +
tests/golden/reconciliation/platform.csv) through `refund-gateway reconcile`: exit 1, each
fault in its class, four outputs written, JSON report equal to the golden file. ("paid
twice" comes from the gateway's own alarm in the store, whatever the statement says:
test_paid_twice.py; here it is listed with zero.)"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from reconciliation.matching import Klass
from tests.golden_files import (
    GOLDEN,
    PLANTED_STATEMENTS,
    REGENERATE,
    REPORT,
    planted_run,
    read_expected,
)
from tests.helpers import printed_summaries, records_csv

STATEMENTS = PLANTED_STATEMENTS


# Each planted fault by its refund number (the platform CSV and statements in golden/).
PLANTED = {
    "RFA0009": "in_transit", "RFB0002": "in_transit",
    "RFA0008": "refunded_not_received", "RFW0003": "refunded_not_received",
    "RFL0001": "unknown_to_platform", "RFL0003": "unknown_to_platform",
    "RFA0003": "amount_mismatch",
    "RFB0001": "duplicate", "RFW0002": "status_mismatch"}
MATCHED = ("RFA0001", "RFA0002", "RFW0001")   # RFA0002 across the cut-off, RFW0001 in 2 files


def test_every_planted_fault_in_its_class(tmp_path: Path) -> None:
    result = planted_run(tmp_path)
    assert result.exit_code == 1, (result.output, repr(result.exception))
    expected_counts = {k.value: sum(c == k.value for c in PLANTED.values()) for k in Klass}
    expected_counts[Klass.MATCHED.value] = len(MATCHED)
    assert printed_summaries(result.output) == [expected_counts], result.output
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == [f"reconciliation-2024-06-11.{e}" for e in ("csv", "html", "json", "xlsx")]
    doc = json.loads((tmp_path / "out/reconciliation-2024-06-11.json").read_text())
    assert {r["channel_refund_no"]: r["class"] for r in doc["rows"]} == PLANTED
    assert doc["counts"] == expected_counts
    assert doc == read_expected(REPORT), (
        f"differs from the reviewed golden report; if intended: {REGENERATE}, review the diff")


def test_xlsx_summary_and_class_sheets_with_numeric_amounts(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    args = ["reconcile", "--date", "2024-06-11", "--no-save", "--format", "xlsx",
            "--platform-csv", str(GOLDEN / "reconciliation/platform.csv"),
            "--out", str(tmp_path)]
    for s in STATEMENTS:
        args += ["--statement", str(GOLDEN / s)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, (result.output, repr(result.exception))
    wb = load_workbook(tmp_path / "reconciliation-2024-06-11.xlsx", read_only=True)
    assert wb.sheetnames == ["汇总 summary", "按原因 by reason", "按路径 by route",
                             "警告 warnings", "已核对一致 matched", "在途 in_transit",
                             "未退款 not_refunded", "已退款未到账 refunded_not_received",
                             "平台无记录 unknown_to_platform", "金额不符 amount_mismatch",
                             "重复 duplicate", "状态不符 status_mismatch", "重复退款 paid_twice"]
    rows = list(wb["金额不符 amount_mismatch"].iter_rows(values_only=True))
    header, (row,) = rows[0], rows[1:]
    got = dict(zip(header, row, strict=False))   # read-only mode drops trailing blanks
    assert got["渠道退款单号 Channel refund no."] == "RFA0003"
    assert (got["平台金额（元） Platform amount"], got["账单金额（元） Statement amount"]) == (
        12, 12.3)
    summary = list(wb["汇总 summary"].iter_rows(values_only=True))
    assert summary[0] == ("类别 Class", "退款路径 Route", "笔数 Count", "金额（元） Amount (CNY)")
    assert all(isinstance(r[3], int | float) for r in summary[1:])
    wb.close()


def test_csv_is_the_records_rendering_with_formulas_neutralised(tmp_path: Path) -> None:
    """The columnar CSV writer gives exactly what the per-row ``records`` rendering
    gives (``records_csv``), including a formula planted in an order number."""
    from gateway.models import Route
    from reconciliation.job import reconcile
    from reconciliation.platform import from_csv
    from reconciliation.reports import write_csv
    from reconciliation.statements import Source

    text = (GOLDEN / "reconciliation/platform.csv").read_text()
    evil = tmp_path / "platform.csv"
    evil.write_text(text.replace("ORD1008", "=HYPERLINK(1)"))
    plat = from_csv(evil)
    result = reconcile(run_date=date(2024, 6, 11), routes=list(Route),
                       statements=[Source.of(GOLDEN / s) for s in STATEMENTS],
                       platform=lambda _c: plat, platform_source="csv", engine=None)
    got = write_csv(result, tmp_path / "r.csv").read_bytes()
    assert got == records_csv(result)
    assert b"'=HYPERLINK(1)" in got
