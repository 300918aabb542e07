"""The reports as finance reads them (issue 18): XLSX with bilingual header rows, real
numbers, dates and Beijing datetimes, fitted widths, a frozen header and an autofilter;
totals by refund reason and by route that add up to the run; HTML and XLSX in Chinese
with English beside; every time a person reads in Beijing time."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook

from gateway.clock import BEIJING
from gateway.models import Route
from reconciliation.job import RunResult, reconcile
from reconciliation.platform import from_csv
from reconciliation.reports import header, totals, write_html, write_json, write_xlsx
from reconciliation.rows import RunRows
from reconciliation.statements import Source

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
STATEMENTS = ["statements/alipay_trade_20240611.zip", "statements/wechat_refund_20240611.csv.gz",
              "statements/wechat_fundflow_20240611.csv", "statements/balance_20240611.csv",
              "reconciliation/unionpay_duplicate_20240611.zip"]
REASONS = {"rf_a1": "商品未发货 not delivered", "rf_a2": "商品未发货 not delivered",
           "rf_a8": "重复扣款 charged twice", "rf_w3": "重复扣款 charged twice"}


@pytest.fixture(scope="module")
def run() -> RunResult:
    plat = from_csv(GOLDEN / "reconciliation/platform.csv")
    return reconcile(run_date=date(2024, 6, 11), routes=list(Route),
                     statements=[Source.of(GOLDEN / s) for s in STATEMENTS],
                     platform=lambda _c: plat, platform_source="platform.csv", engine=None)


def _with_reasons(result: RunResult) -> RunResult:
    """The same run with the platform's refund reasons on its rows (what a platform
    export or the store carries)."""
    rows = result.rows.with_columns(
        pl.col("refund_id").replace_strict(REASONS, default=None, return_dtype=pl.String)
        .alias("reason"))
    return RunResult(result.run_id, result.run_date, result.routes, RunRows(rows),
                     result.summary, result.bad_lines)


def test_xlsx_is_a_spreadsheet_finance_can_filter(run: RunResult, tmp_path: Path) -> None:
    wb = load_workbook(write_xlsx(run, tmp_path / "r.xlsx"))     # full mode: layout too
    sheet = wb["已退款未到账 refunded_not_received"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:T{sheet.max_row}"
    heads = [c.value for c in sheet[1]]
    assert heads[:4] == ["类别 Class", "退款路径 Route", "平台退款单号 Refund ID",
                         "关联退款 Linked refunds"]
    assert all(c.font.bold for c in sheet[1])
    row = dict(zip(heads, [c for c in sheet[2]], strict=True))
    assert row["类别 Class"].value == "已退款未到账 refunded, not received"
    assert row["退款路径 Route"].value == "支付宝 Alipay"
    amount = row["平台金额（元） Platform amount"]
    assert amount.value == Decimal("9.90") or amount.value == 9.9
    assert amount.number_format == "#,##0.00"
    when = row["平台退款成功时间 Succeeded at (Beijing)"]
    # 01:00:05 UTC as Beijing wall time (Excel has no time zones)
    assert when.value == datetime(2024, 6, 3, 9, 0, 5, tzinfo=BEIJING).replace(tzinfo=None)
    assert when.is_date and when.number_format == "yyyy-mm-dd hh:mm:ss"
    by = row["最晚到账日 Arrive by"]
    assert by.is_date and by.value.date() == date(2024, 6, 6)
    # Widths fitted to what the column holds: the refund number column is wider than
    # the currency's, the Chinese header counts double, nothing is wider than the cap.
    widths = {h: sheet.column_dimensions[c.column_letter].width
              for h, c in zip(heads, sheet[1], strict=True)}
    assert widths["渠道退款单号 Channel refund no."] > widths["币种 Currency"] >= 8
    assert max(widths.values()) <= 50
    summary = wb["汇总 summary"]
    assert summary.freeze_panes == "A2" and summary.auto_filter.ref
    assert [c.value for c in summary[1]] == ["类别 Class", "退款路径 Route", "笔数 Count",
                                            "金额（元） Amount (CNY)"]
    assert isinstance(summary["C2"].value, int)
    wb.close()


def test_totals_by_reason_and_by_route_add_up(run: RunResult, tmp_path: Path) -> None:
    result = _with_reasons(run)
    by_reason = totals(result, "reason")
    assert [(r["reason"], r["count"]) for r in by_reason] == [
        (None, 8), ("商品未发货 not delivered", 2), ("重复扣款 charged twice", 2)]
    by_route = totals(result, "route")
    assert [r["route"] for r in by_route] == ["alipay", "wechatpay", "bankcard", "balance"]
    for table in (by_reason, by_route):
        assert sum(r["count"] for r in table) == result.total
        assert sum(Decimal(r["amount"]) for r in table) == Decimal("215.60")
        assert sum(r["discrepancies"] for r in table) == 7
    charged = next(r for r in by_reason if r["reason"] == "重复扣款 charged twice")
    # rf_a8 (9.90) and rf_w3 (8.80) are both refunded, not received.
    assert (charged["amount"], charged["discrepancies"], charged["discrepancy_amount"]) == (
        "18.70", 2, "18.70")
    doc = write_json(result, tmp_path / "r.json").read_text(encoding="utf-8")
    assert '"totals_by_reason"' in doc and "charged twice" in doc
    sheet = load_workbook(write_xlsx(result, tmp_path / "r.xlsx"))["按原因 by reason"]
    assert [c.value for c in sheet[1]] == [header("reason"), header("count"),
                                          header("amount"), header("discrepancies"),
                                          header("discrepancy_amount")]
    assert [sheet.cell(r, 1).value for r in range(2, 5)] == [
        "未记录 not recorded", "商品未发货 not delivered", "重复扣款 charged twice"]
    html = write_html(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="by-reason"' in html and "重复扣款 charged twice" in html
    assert "Refund reasons were not in the platform data" not in html


def test_html_is_bilingual_in_beijing_time_and_yuan(run: RunResult, tmp_path: Path) -> None:
    html = write_html(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "退款对账报告 Refund reconciliation — 2024-06-11" in html
    assert "平台退款单号<br>Refund ID" in html and "账单金额（元）<br>Statement amount" in html
    assert "已退款未到账 refunded, not received" in html and "支付宝 Alipay" in html
    assert 'id="by-route"' in html and 'id="by-reason"' in html
    # rf_a8 succeeded 2024-06-03T01:00:05Z: printed as Beijing wall time, no offset.
    assert "2024-06-03 09:00:05" in html and "01:00:05" not in html
    assert "+00:00" not in html and "T09:00:05" not in html
    assert "时间均为北京时间 all times Beijing (UTC+8)" in html
    assert "<td class=\"n\">9.90</td>" in html          # yuan, two decimals
