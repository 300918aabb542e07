# ruff: noqa: E501  (the HTML template is one literal; wrapping it would change output)
"""Report writers for a reconciliation run: CSV (every row), XLSX (summary, totals by
refund reason and by route, one sheet per class), HTML (inline SVG charts, no network, no
script), JSON (machines).

For people: XLSX and HTML are labelled in Chinese with English beside (``LABELS``, the
receipts' class and route names), times in Beijing time, amounts in yuan; XLSX cells are
real numbers, dates and datetimes (Beijing, no offset: Excel has none) with fitted
widths, a frozen header row and an autofilter. CSV and JSON keep the machine column names
(``COLUMNS``) with times as ISO 8601 in Beijing time (+08:00). Totals by refund reason read
the rows' ``reason`` column when the platform side carries one (DOMAIN.md: finance looks
at refunds by reason and by route); without it they say the reason was not recorded.

A run scoped to some merchant accounts (``reconcile --account``) says so: the JSON's
``accounts`` (null: every account), the HTML header, and the file names
(``reconciliation-<day>-<account>...``, so one account's reports do not overwrite
another's in the same folder; an unscoped run's keep ``reconciliation-<day>``).

Deterministic: fixed columns, rows already sorted by the engine, no timestamps of the
writing itself, so golden files can pin them. Text cells that a spreadsheet would run as
a formula (starting with = + - @ tab CR) are neutralised; amounts stay numeric (yuan, two
decimals, from integer fen). Reports carry no account or card numbers (none are loaded;
a scoped run's merchant accounts are the names settings give them); bad-line messages,
which quote cells, have card numbers masked by ``gateway.masking`` (``mask_text``: the
``****``+last 4 a receipt shows; times and ids are left whole: they are what finance
searches by). No matching, no store access.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import polars as pl
from jinja2 import Environment, select_autoescape

from gateway import calendar
from gateway.clock import to_beijing
from gateway.masking import mask_text
from gateway.money import Money
from reconciliation.job import RunResult
from reconciliation.matching import CLASS_ORDER, Klass
from reconciliation.receipts.guidance import route_names
from reconciliation.receipts.layout import CLASS_NAMES, STATUS_NAMES
from reconciliation.receipts.layout import STATE_NAMES as _ITEM_STATES

FORMATS: Final = ("csv", "xlsx", "html", "json")
# linked_refunds: for a "paid twice" row, the other refunds of the release ("RF1, RF2").
COLUMNS: Final = ["class", "route", "refund_id", "linked_refunds", "channel_refund_no",
                  "channel_refund_id",
                  "merchant_order_no", "platform_amount", "statement_amount", "currency",
                  "platform_status", "statement_status", "succeeded_at", "statement_time",
                  "arrival_latest", "statement_lines", "source", "line", "state", "item_id"]
LINKED_SEPARATOR: Final = ", "
# What a person reads above each column (XLSX, HTML): Chinese, then English.
LABELS: Final[dict[str, tuple[str, str]]] = {
    "class": ("类别", "Class"), "route": ("退款路径", "Route"),
    "refund_id": ("平台退款单号", "Refund ID"), "linked_refunds": ("关联退款", "Linked refunds"),
    "channel_refund_no": ("渠道退款单号", "Channel refund no."),
    "channel_refund_id": ("渠道退款流水号", "Channel refund ID"),
    "merchant_order_no": ("商户订单号", "Merchant order no."),
    "platform_amount": ("平台金额（元）", "Platform amount"),
    "statement_amount": ("账单金额（元）", "Statement amount"),
    "currency": ("币种", "Currency"), "platform_status": ("平台状态", "Platform status"),
    "statement_status": ("账单状态", "Statement status"),
    "succeeded_at": ("平台退款成功时间", "Succeeded at (Beijing)"),
    "statement_time": ("账单时间", "Statement time (Beijing)"),
    "arrival_latest": ("最晚到账日", "Arrive by"), "statement_lines": ("账单行数", "Lines"),
    "source": ("账单文件", "Statement file"), "line": ("行号", "Line"),
    "state": ("处理状态", "Item state"), "item_id": ("差异编号", "Item no."),
    "reason": ("退款原因", "Refund reason"), "count": ("笔数", "Count"),
    "amount": ("金额（元）", "Amount (CNY)"),
    "discrepancies": ("差异笔数", "Discrepancies"),
    "discrepancy_amount": ("差异金额（元）", "Discrepancy amount (CNY)"),
    "code": ("代码", "Code"), "message": ("说明", "Message"), "bad_line": ("坏行", "Bad line"),
}
NO_REASON: Final = "未记录 not recorded"
ALL_ACCOUNTS: Final = "全部 all"      # the HTML header of a run not scoped to accounts
STATE_NAMES: Final = {**_ITEM_STATES, "unsaved": "未保存 unsaved"}
_TIME_COLS: Final = {"succeeded_at", "statement_time"}
_AMOUNT_COLS: Final = {"platform_amount", "statement_amount"}
_DANGEROUS: Final = ("=", "+", "-", "@", "\t", "\r")
DETAIL_CAP: Final = 100_000   # rows per class sheet / HTML table (CSV has every row)


def neutralise(text: str) -> str:
    return "'" + text if text.startswith(_DANGEROUS) else text


def header(column: str) -> str:
    """A column's label as printed: ``渠道退款单号 Channel refund no.``."""
    zh, en = LABELS[column]
    return f"{zh} {en}"


def class_name(klass: str) -> str:
    return CLASS_NAMES.get(klass, klass)


def route_name(route: str) -> str:
    zh, en = route_names(route)
    return f"{zh} {en}"


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_beijing(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def records(result: RunResult, *, classes: Sequence[str] | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    lazy = result.scan()
    if classes is not None:
        lazy = lazy.filter(pl.col("class").is_in(list(classes)))
    if limit is not None:
        lazy = lazy.head(limit)
    out = []
    for row in lazy.collect().iter_rows(named=True):
        rec = {c: _cell(row.get(c)) for c in COLUMNS}
        for name, src in (("platform_amount", "platform_amount_minor"),
                          ("statement_amount", "statement_amount_minor")):
            minor = row[src]
            rec[name] = None if minor is None else Money(int(minor)).format()
        linked = result.linked.get((row["route"], row["channel_refund_no"]))
        rec["linked_refunds"] = (LINKED_SEPARATOR.join(linked)
                                 if linked and row["class"] == Klass.PAID_TWICE.value
                                 else None)
        state = result.states.get((row["route"], row["channel_refund_no"]), {})
        rec["state"] = state.get("state", "" if row["class"] == Klass.MATCHED.value
                                 else "unsaved")
        rec["item_id"] = state.get("item_id")
        out.append(rec)
    return out


def summary_records(result: RunResult) -> list[dict[str, Any]]:
    return [{"class": c, "route": r, "count": n, "amount": Money(int(a)).format()}
            for c, r, n, a in result.summary.iter_rows()]


def totals(result: RunResult, by: str) -> list[dict[str, Any]]:
    """Refunds by ``reason`` or by ``route``: count and amount (yuan text), and how many
    of them (and how much) are discrepancies. Reasons by count, most first; routes in
    route order. A row's amount is the platform's, else the statement's."""
    lazy = result.scan()
    names = lazy.collect_schema().names()
    if by == "reason":
        key = (pl.col("reason").cast(pl.String).fill_null("") if "reason" in names
               else pl.lit(""))
    else:
        key = pl.col("route").cast(pl.String)
    amount = pl.coalesce("platform_amount_minor", "statement_amount_minor").fill_null(0)
    bad = pl.col("class").cast(pl.String).is_in(
        [k.value for k in Klass if k.is_discrepancy])
    grouped = lazy.select(key.alias("key"), amount.alias("a"), bad.alias("d")).group_by(
        "key").agg(pl.len().alias("count"), pl.col("a").sum().alias("amount"),
                   pl.col("d").sum().alias("discrepancies"),
                   pl.col("a").filter(pl.col("d")).sum().alias("discrepancy_amount")
                   ).collect()
    rows = grouped.rows(named=True)
    if by == "reason":
        rows.sort(key=lambda r: (-int(r["count"]), str(r["key"])))
    else:
        order = {r.value: i for i, r in enumerate(result.routes)}
        rows.sort(key=lambda r: (order.get(str(r["key"]), len(order)), str(r["key"])))
    return [{by: r["key"] or None, "count": int(r["count"]),
             "amount": Money(int(r["amount"] or 0)).format(),
             "discrepancies": int(r["discrepancies"] or 0),
             "discrepancy_amount": Money(int(r["discrepancy_amount"] or 0)).format()}
            for r in rows]


def warning_records(result: RunResult) -> list[dict[str, Any]]:
    """The run's input warnings (lines of other days, ...), with their counts."""
    found = getattr(result, "warnings", None) or []
    records = [{"code": w.code, "message": mask_text(w.message), "count": w.count,
                "source": w.source} for w in found]
    run_date = getattr(result, "run_date", None)
    if isinstance(run_date, date):
        # deadlines reach up to the longest arrival window (5 working days) past the day
        near = [run_date + timedelta(days=d) for d in range(-14, 15)]
        if not all(calendar.covered(d) for d in near):
            reach = calendar.reach()
            records.append({
                "code": "calendar_approximate",
                "message": f"no holiday data after {reach['covered_through']}: arrival "
                           "deadlines near this day are counted Monday to Friday, so they "
                           "are approximate (set holiday_schedule) · 无节假日数据, 到账期限为估算",
                "count": 1, "source": None})
    return records


def write_csv(result: RunResult, path: Path) -> Path:
    """Every row, columnar (polars writes it; no Python object per row): the same cells
    ``records`` gives, amounts as yuan text, times ISO 8601, text neutralised. Written a
    piece of the run's rows at a time (``RunRows.pieces``), so a big run's rows are never
    all in memory (a lazy join + ``sink_csv`` over 10M rows peaked at 1.8 GiB)."""
    states = pl.DataFrame(
        [(k[0], k[1], v.get("state"), v.get("item_id")) for k, v in result.states.items()],
        schema={"route": pl.String(), "channel_refund_no": pl.String(),
                "state": pl.String(), "item_id": pl.Int64()}, orient="row")
    linked = pl.DataFrame(
        [(k[0], k[1], Klass.PAID_TWICE.value, LINKED_SEPARATOR.join(v))
         for k, v in result.linked.items() if v],
        schema={"route": pl.String(), "channel_refund_no": pl.String(),
                "class": pl.String(), "linked_refunds": pl.String()}, orient="row")
    with path.open("wb") as fh:
        for i, piece in enumerate(result.stored.pieces()):
            _csv_cells(piece, states, linked).write_csv(
                fh, include_bom=i == 0, include_header=i == 0, line_terminator="\r\n",
                null_value="", quote_style="necessary")
    return path


def _csv_cells(rows: pl.DataFrame, states: pl.DataFrame, linked: pl.DataFrame
               ) -> pl.DataFrame:
    df = rows.with_columns(pl.col("route").cast(pl.String), pl.col("class").cast(pl.String)
                           ).join(states, on=["route", "channel_refund_no"], how="left",
                                  maintain_order="left"
                                  ).join(linked, on=["route", "channel_refund_no", "class"],
                                         how="left", maintain_order="left")
    text = [c for c in COLUMNS if c not in _AMOUNT_COLS | {"statement_lines", "line",
                                                           "item_id"}]
    # Two steps: the cells as text first, then the spreadsheet guard on those columns
    # (one expression per cell: an eager select recomputes a shared subexpression).
    cells = df.select(
        *[_yuan(f"{c}_minor").alias(c) if c in _AMOUNT_COLS else
          pl.coalesce("state", pl.when(pl.col("class") != Klass.MATCHED.value)
                      .then(pl.lit("unsaved"))).alias(c)   # null: written as nothing
          if c == "state" else _as_text(df.schema, c) if c in text else pl.col(c)
          for c in COLUMNS])
    return cells.with_columns(_neutralised(c) for c in text)


def _yuan(col: str) -> pl.Expr:
    """Integer fen -> "12.30" (``Money.format``), vectorised."""
    v = pl.col(col)
    cents = (v.abs() % 100).cast(pl.String).str.zfill(2)
    body = (v.abs() // 100).cast(pl.String) + "." + cents
    return pl.when(v < 0).then("-" + body).otherwise(body)


def _as_text(schema: pl.Schema, col: str) -> pl.Expr:
    """A cell as ``records`` renders it: ISO dates and times in Beijing time (no fraction
    when it is zero, as ``datetime.isoformat``), anything else as text."""
    dtype = schema[col]
    e = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        return e.dt.convert_time_zone("Asia/Shanghai").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z").str.replace(
            ".000000", "", literal=True).alias(col)
    if isinstance(dtype, pl.Date):
        return e.dt.to_string("%Y-%m-%d").alias(col)
    return e.cast(pl.String).alias(col)


def _neutralised(col: str) -> pl.Expr:
    """A text cell that a spreadsheet would run as a formula, quoted (``neutralise``)."""
    e = pl.col(col)
    return pl.when(e.str.slice(0, 1).is_in(list(_DANGEROUS))).then("'" + e).otherwise(e).alias(
        col)


def write_json(result: RunResult, path: Path) -> Path:
    doc = {
        "run_id": result.run_id, "run_date": result.run_date.isoformat(),
        "routes": [r.value for r in result.routes], "accounts": result.accounts,
        "counts": result.counts(),
        "summary": summary_records(result),
        "totals_by_reason": totals(result, "reason"),
        "totals_by_route": totals(result, "route"),
        "warnings": warning_records(result),
        "bad_lines": sorted(mask_text(str(e)) for e in result.bad_lines),
        "rows": records(result, classes=[k.value for k in Klass if k != Klass.MATCHED]),
    }
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n",
                    encoding="utf-8")
    return path


_XLSX_TIME: Final = "yyyy-mm-dd hh:mm:ss"
_XLSX_DATE: Final = "yyyy-mm-dd"
_XLSX_MONEY: Final = "#,##0.00"
_MAX_WIDTH: Final = 48


def _text_width(value: Any) -> int:
    """Columns a value takes in a spreadsheet: a CJK character is two."""
    text = value if isinstance(value, str) else (
        "0000-00-00 00:00:00" if isinstance(value, datetime) else
        "0000-00-00" if isinstance(value, date) else f"{value:,.2f}"
        if isinstance(value, Decimal) else str(value) if value is not None else "")
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def _xlsx_value(column: str, value: Any) -> tuple[Any, str | None]:
    """A report cell as a spreadsheet value and its number format."""
    if value is None:
        return None, None
    if column in _AMOUNT_COLS or column in ("amount", "discrepancy_amount"):
        return Decimal(value), _XLSX_MONEY
    if column in _TIME_COLS:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        # Excel has no time zones: Beijing wall time, said in the header.
        return to_beijing(moment).replace(tzinfo=None), _XLSX_TIME
    if column == "arrival_latest":
        return (date.fromisoformat(value) if isinstance(value, str) else value), _XLSX_DATE
    if column == "class":
        return class_name(value), None
    if column == "route":
        return route_name(value), None
    if column in ("platform_status", "statement_status"):
        return STATUS_NAMES.get(value, value), None
    if column == "state" and value:
        return STATE_NAMES.get(value, value), None
    if isinstance(value, str):
        return neutralise(value), None
    return value, None


def _sheet(wb: Any, title: str, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
    """One table: a bilingual header row, frozen, with an autofilter; widths fitted to
    the header and the cells (capped); real numbers, dates and datetimes."""
    from openpyxl.cell import WriteOnlyCell  # noqa: PLC0415 - with openpyxl, only here
    from openpyxl.styles import Alignment, Font  # noqa: PLC0415
    from openpyxl.utils import get_column_letter  # noqa: PLC0415

    ws = wb.create_sheet(title[:31])
    cells = [[_xlsx_value(c, r.get(c)) for c in columns] for r in rows]
    heads = [header(c) for c in columns]
    for i, head in enumerate(heads):
        widest = max([_text_width(head) * 0.6] + [_text_width(row[i][0]) for row in cells])
        ws.column_dimensions[get_column_letter(i + 1)].width = min(_MAX_WIDTH, widest + 2)
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{len(rows) + 1}"
    bold, wrap = Font(bold=True), Alignment(wrap_text=True, vertical="top")
    head_cells = []
    for head in heads:
        cell = WriteOnlyCell(ws, value=head)
        cell.font, cell.alignment = bold, wrap
        head_cells.append(cell)
    ws.append(head_cells)
    for row in cells:
        out: list[Any] = []
        for value, fmt in row:
            if fmt is None:
                out.append(value)
                continue
            cell = WriteOnlyCell(ws, value=value)
            cell.number_format = fmt
            out.append(cell)
        ws.append(out)


SHEET_SUMMARY: Final = "汇总 summary"
SHEET_REASON: Final = "按原因 by reason"
SHEET_ROUTE: Final = "按路径 by route"
SHEET_BAD: Final = "坏行 bad lines"
SHEET_WARNINGS: Final = "警告 warnings"


def sheet_name(klass: Klass) -> str:
    """A class's sheet: its Chinese name and its value (31 characters at most)."""
    return f"{class_name(klass.value).split(' ')[0]} {klass.value}"[:31]


def write_xlsx(result: RunResult, path: Path) -> Path:
    """Write-only workbook (rows streamed to the file: no per-cell objects kept, and no
    ``max_row`` scans, which made the normal mode quadratic at 100k rows)."""
    from openpyxl import Workbook  # noqa: PLC0415 - heavy import, only when asked for

    wb = Workbook(write_only=True)
    _sheet(wb, SHEET_SUMMARY, ["class", "route", "count", "amount"], summary_records(result))
    _sheet(wb, SHEET_REASON, ["reason", "count", "amount", "discrepancies",
                              "discrepancy_amount"],
           [{**r, "reason": r["reason"] or NO_REASON} for r in totals(result, "reason")])
    _sheet(wb, SHEET_ROUTE, ["route", "count", "amount", "discrepancies",
                             "discrepancy_amount"], totals(result, "route"))
    if warnings := warning_records(result):
        _sheet(wb, SHEET_WARNINGS, ["code", "message", "count", "source"], warnings)
    if result.bad_lines:
        _sheet(wb, SHEET_BAD, ["bad_line"], [{"bad_line": mask_text(e)} for e in
                                             sorted(str(e) for e in result.bad_lines)])
    for klass in CLASS_ORDER:
        _sheet(wb, sheet_name(klass), COLUMNS,
               records(result, classes=[klass.value], limit=DETAIL_CAP))
    wb.save(path)
    return path


# --- HTML ------------------------------------------------------------------------------

def _bars(title: str, items: list[tuple[str, int]], unit: str, cls: str) -> dict[str, Any]:
    top = max([v for _, v in items] + [1])
    return {"title": title, "cls": cls, "unit": unit, "height": 28 * len(items) + 10,
            "bars": [{"label": k, "value": v, "y": 28 * i + 5,
                      "w": round(290 * v / top, 1),
                      "text": Money(v).format() if unit == "CNY" else str(v)}
                     for i, (k, v) in enumerate(items)]}


def ageing(result: RunResult) -> list[tuple[str, int]]:
    buckets = ["0-1 天 d", "2-3 天 d", "4-5 天 d", "6+ 天 d"]
    counts = dict.fromkeys(buckets, 0)
    rows = result.scan().filter(pl.col("class") == Klass.IN_TRANSIT.value).select(
        "succeeded_at").collect()
    for ts in rows.get_column("succeeded_at").to_list():
        days = 0 if ts is None else (result.run_date - to_beijing(ts).date()).days
        key = buckets[0] if days <= 1 else buckets[1] if days <= 3 else \
            buckets[2] if days <= 5 else buckets[3]
        counts[key] += 1
    return list(counts.items())


def charts(result: RunResult) -> list[dict[str, Any]]:
    s = result.summary
    by_class = s.group_by("class", maintain_order=True).agg(pl.col("count").sum(),
                                                            pl.col("amount_minor").sum())
    by_route = s.filter(pl.col("class").is_in(
        [k.value for k in Klass if k.is_discrepancy])).group_by(
        "route", maintain_order=True).agg(pl.col("count").sum(), pl.col("amount_minor").sum())
    return [
        _bars("各类笔数 Refunds by class", [(class_name(c), int(n)) for c, n, _ in
                                          by_class.iter_rows()], "", "count-class"),
        _bars("各类金额（元）Amount by class (CNY)", [(class_name(c), int(a)) for c, _, a in
                                                  by_class.iter_rows()], "CNY",
              "amount-class"),
        _bars("各路径差异笔数 Discrepancies by route",
              [(route_name(r), int(n)) for r, n, _ in by_route.iter_rows()], "",
              "count-route"),
        _bars("各路径差异金额（元）Discrepancy amount by route (CNY)",
              [(route_name(r), int(a)) for r, _, a in by_route.iter_rows()], "CNY",
              "amount-route"),
        _bars("在途账龄 Ageing of in-transit refunds", ageing(result), "", "ageing"),
    ]


# Columns of the HTML detail tables: what a person compares, in reading order. The class
# is the section's, the currency is in the amount headers; the rest is in CSV/XLSX.
HTML_COLUMNS: Final = ["route", "refund_id", "channel_refund_no", "channel_refund_id",
                       "merchant_order_no", "platform_amount", "statement_amount",
                       "platform_status", "statement_status", "succeeded_at",
                       "statement_time", "arrival_latest", "source", "state", "item_id"]
_MONO: Final = {"refund_id", "channel_refund_no", "channel_refund_id", "merchant_order_no",
                "linked_refunds"}

_HTML = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>退款对账报告 Refund reconciliation {{ run_date }}</title>
<style>
*{box-sizing:border-box}
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","PingFang SC","Microsoft YaHei",sans-serif;margin:24px;color:#1a1a1a;font-size:14px;line-height:1.45;max-width:1800px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:2px solid #3b6ea5;padding-bottom:3px}
.meta{color:#444;margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f7;font-weight:600;font-size:12.5px;line-height:1.3}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.n,td.t{white-space:nowrap}
td.m{font-family:"Noto Sans Mono CJK SC","DejaVu Sans Mono",monospace;font-size:12px;white-space:nowrap}
td.f{font-size:12px;word-break:break-all;min-width:9em}
tbody tr:nth-child(even){background:#f8fafc}
.totals{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.totals table{min-width:420px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:8px 28px}
figure{margin:0}figcaption{font-weight:600;margin:6px 0}svg text{font-size:12px}
.detail{width:100%;font-size:12.5px}.detail td,.detail th{padding:3px 5px}
.detail td.m{font-size:11.5px}
.detail th{position:sticky;top:0}
.d{color:#b00020}.note{color:#555;font-size:12.5px}
</style></head><body>
<h1>退款对账报告 Refund reconciliation — {{ run_date }}</h1>
<p class="meta">对账批次 Run {{ run_id if run_id is not none else "未保存 (not saved)" }} · 退款路径 Routes: {{ routes }} · 商户号/账户 Accounts: {{ accounts }} · {{ total }} 笔 rows · 差异 {{ discrepancies }} discrepancies · 坏行 {{ bad_lines|length }} bad statement lines · 时间均为北京时间 all times Beijing (UTC+8) · 金额单位：元 amounts in yuan (CNY)</p>
{% if paid_twice %}<p class="d" id="paid-twice-alarm"><strong>重复退款 {{ paid_twice }} paid twice</strong>：金额释放后仍有资金转出，请财务立即追回 money moved after its amount was released; finance, recover at once (the refunds of each release are in the <a href="#paid_twice">paid twice</a> table).</p>{% endif %}
{% if warnings %}<h2 id="warnings">输入警告 Input warnings</h2>
<table><thead><tr><th>代码 Code</th><th>说明 Message</th><th class="n">笔数 Count</th><th>来源 Source</th></tr></thead><tbody>
{% for w in warnings %}<tr><td class="m">{{ w.code }}</td><td>{{ w.message }}</td><td class="n">{{ w.count }}</td><td>{{ w.source or "" }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
<h2>汇总 Summary</h2>
<div class="totals">
<table id="summary"><thead><tr><th>类别 Class</th><th class="n">笔数 Count</th><th class="n">金额（元）Amount (CNY)</th></tr></thead><tbody>
{% for c in classes %}<tr><td class="{{ 'd' if c.discrepancy else '' }}">{{ c.label }}</td>
<td class="n">{{ c.count }}</td><td class="n">{{ c.amount }}</td></tr>{% endfor %}</tbody></table>
{% for t in totals %}<table id="{{ t.id }}"><thead><tr><th>{{ t.label }}</th><th class="n">笔数 Count</th><th class="n">金额（元）Amount</th><th class="n">差异笔数 Discrepancies</th><th class="n">差异金额（元）Discrepancy amount</th></tr></thead><tbody>
{% for r in t.rows %}<tr><td>{{ r.name }}</td><td class="n">{{ r.count }}</td><td class="n">{{ r.amount }}</td><td class="n{{ ' d' if r.discrepancies else '' }}">{{ r.discrepancies }}</td><td class="n">{{ r.discrepancy_amount }}</td></tr>
{% endfor %}</tbody></table>{% endfor %}
</div>
{% if not has_reason %}<p class="note">退款原因未随平台数据提供 Refund reasons were not in the platform data: every refund is counted as "未记录 not recorded".</p>{% endif %}
<div class="charts">
{% for ch in charts %}<figure><figcaption>{{ ch.title }}</figcaption>
<svg class="chart {{ ch.cls }}" role="img" aria-label="{{ ch.title }}" width="600" height="{{ ch.height }}" xmlns="http://www.w3.org/2000/svg">
{% for b in ch.bars %}<text x="0" y="{{ b.y + 14 }}">{{ b.label }}</text>
<rect x="250" y="{{ b.y }}" width="{{ b.w }}" height="20" fill="#3b6ea5"><title>{{ b.label }}: {{ b.text }}</title></rect>
<text x="{{ 255 + b.w }}" y="{{ b.y + 14 }}">{{ b.text }}</text>
{% endfor %}</svg></figure>
{% endfor %}</div>
{% if bad_lines %}<h2>坏行 Bad statement lines</h2><ul>{% for e in bad_lines %}<li>{{ e }}</li>{% endfor %}</ul>{% endif %}
{% for sec in sections %}<h2 id="{{ sec.klass }}">{{ sec.label }}（{{ sec.rows|length }} 笔{% if sec.capped %}，仅显示前 {{ sec.rows|length }} 笔 first {{ sec.rows|length }} shown{% endif %}）</h2>
<table class="detail"><thead><tr>{% for c in sec.columns %}<th class="{{ 'n' if c in numeric else '' }}">{{ labels[c][0] }}<br>{{ labels[c][1] }}</th>{% endfor %}</tr></thead><tbody>
{% for r in sec.rows %}<tr>{% for c in sec.columns %}<td class="{{ kinds[c] }}">{{ r[c] }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% endfor %}
</body></html>
"""


def _html_cell(column: str, rec: dict[str, Any]) -> str:
    value = rec.get(column)
    if column == "source":
        return f"{value}:{rec['line']}" if value and rec.get("line") else (value or "")
    if value is None:
        return ""
    if column in _TIME_COLS:
        return to_beijing(datetime.fromisoformat(value)).strftime("%Y-%m-%d %H:%M:%S")
    if column == "route":
        return route_name(value)
    if column in ("platform_status", "statement_status"):
        return STATUS_NAMES.get(str(value), str(value))
    if column == "state":
        return STATE_NAMES.get(str(value), str(value))
    return str(value)


def write_html(result: RunResult, path: Path) -> Path:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    counts = result.counts()
    amounts = dict(result.summary.group_by("class").agg(pl.col("amount_minor").sum())
                   .iter_rows())
    classes = [{"label": class_name(k.value), "count": counts[k.value],
                "discrepancy": k.is_discrepancy,
                "amount": Money(int(amounts.get(k.value, 0))).format()} for k in CLASS_ORDER]
    sections = []
    for k in CLASS_ORDER:
        if k == Klass.MATCHED or not counts[k.value]:
            continue
        columns = list(HTML_COLUMNS)
        if k == Klass.PAID_TWICE:
            columns.insert(2, "linked_refunds")
        if k == Klass.DUPLICATE:
            columns.insert(columns.index("source"), "statement_lines")
        rows = [{c: _html_cell(c, rec) for c in columns}
                for rec in records(result, classes=[k.value], limit=DETAIL_CAP)]
        sections.append({"klass": k.value, "label": class_name(k.value), "rows": rows,
                         "columns": columns, "capped": counts[k.value] > DETAIL_CAP})
    has_reason = "reason" in result.scan().collect_schema().names()
    by_reason = [{**r, "name": r["reason"] or NO_REASON} for r in totals(result, "reason")]
    by_route = [{**r, "name": route_name(r["route"])} for r in totals(result, "route")]
    kinds = {c: "n" if c in _AMOUNT_COLS | {"item_id", "statement_lines"} else
             "m" if c in _MONO else "t" if c in _TIME_COLS | {"arrival_latest"}
             else "f" if c == "source" else "" for c in [*HTML_COLUMNS, "linked_refunds", "statement_lines"]}
    html = env.from_string(_HTML).render(
        run_date=result.run_date.isoformat(), run_id=result.run_id,
        routes=", ".join(route_name(r.value) for r in result.routes),
        accounts=", ".join(result.accounts) if result.accounts else ALL_ACCOUNTS,
        total=result.total,
        discrepancies=sum(counts[k.value] for k in Klass if k.is_discrepancy),
        paid_twice=counts[Klass.PAID_TWICE.value], warnings=warning_records(result),
        bad_lines=sorted(mask_text(str(e)) for e in result.bad_lines), classes=classes,
        totals=[{"id": "by-reason", "label": header("reason"), "rows": by_reason},
                {"id": "by-route", "label": header("route"), "rows": by_route}],
        has_reason=has_reason, charts=charts(result), sections=sections, labels=LABELS,
        kinds=kinds, numeric=_AMOUNT_COLS | {"item_id", "statement_lines"})
    path.write_text(html, encoding="utf-8")
    return path


WRITERS: Final = {"csv": write_csv, "xlsx": write_xlsx, "html": write_html, "json": write_json}


def report_stem(result: RunResult) -> str:
    """``reconciliation-<day>``, with the run's accounts after it when it was scoped."""
    return "-".join([f"reconciliation-{result.run_date.isoformat()}",
                     *(result.accounts or [])])


def write_reports(result: RunResult, out: Path, formats: Sequence[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(result)
    return [WRITERS[f](result, out / f"{stem}.{f}") for f in formats]
