# ruff: noqa: E501  (the HTML template is one literal; wrapping it would change output)
"""Report writers for a reconciliation run: CSV (every row), XLSX (summary sheet + one
sheet per class), HTML (inline SVG charts, no network, no script), JSON (machines).

Deterministic: fixed columns, rows already sorted by the engine, no timestamps of the
writing itself, so golden files can pin them. Text cells that a spreadsheet would run as
a formula (starting with = + - @ tab CR) are neutralised; amounts stay numeric (yuan, two
decimals, from integer fen). Reports carry no account or card numbers (none are loaded);
bad-line messages, which quote cells, have card numbers masked by ``gateway.masking``
(``mask_text``: the ``****``+last 4 a receipt shows; times and ids are left whole: they
are what finance searches by). No matching, no store access.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import polars as pl
from jinja2 import Environment, select_autoescape

from gateway.masking import mask_text
from gateway.money import Money
from reconciliation.job import RunResult
from reconciliation.matching import CLASS_ORDER, Klass

FORMATS: Final = ("csv", "xlsx", "html", "json")
# linked_refunds: for a "paid twice" row, the other refunds of the release ("RF1, RF2").
COLUMNS: Final = ["class", "route", "refund_id", "linked_refunds", "channel_refund_no",
                  "channel_refund_id",
                  "merchant_order_no", "platform_amount", "statement_amount", "currency",
                  "platform_status", "statement_status", "succeeded_at", "statement_time",
                  "arrival_latest", "statement_lines", "source", "line", "state", "item_id"]
LINKED_SEPARATOR: Final = ", "
_AMOUNT_COLS: Final = {"platform_amount", "statement_amount"}
_DANGEROUS: Final = ("=", "+", "-", "@", "\t", "\r")
DETAIL_CAP: Final = 100_000   # rows per class sheet / HTML table (CSV has every row)


def neutralise(text: str) -> str:
    return "'" + text if text.startswith(_DANGEROUS) else text


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
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
    """A cell as ``records`` renders it: ISO dates and times (no fraction when it is
    zero, as ``datetime.isoformat``), anything else as text."""
    dtype = schema[col]
    e = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        return e.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z").str.replace(
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
        "routes": [r.value for r in result.routes], "counts": result.counts(),
        "summary": summary_records(result),
        "bad_lines": sorted(mask_text(str(e)) for e in result.bad_lines),
        "rows": records(result, classes=[k.value for k in Klass if k != Klass.MATCHED]),
    }
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n",
                    encoding="utf-8")
    return path


def write_xlsx(result: RunResult, path: Path) -> Path:
    """Write-only workbook (rows streamed to the file: no per-cell objects kept, and no
    ``max_row`` scans, which made the normal mode quadratic at 100k rows)."""
    from openpyxl import Workbook  # noqa: PLC0415 - heavy import, only when asked for
    from openpyxl.cell import WriteOnlyCell  # noqa: PLC0415 - same

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("summary")

    def money(sheet: Any, value: str | None) -> Any:
        if value is None:
            return None
        cell = WriteOnlyCell(sheet, value=Decimal(value))
        cell.number_format = "0.00"
        return cell

    ws.append(["class", "route", "count", "amount"])
    for rec in summary_records(result):
        ws.append([rec["class"], rec["route"], rec["count"], money(ws, rec["amount"])])
    if result.bad_lines:
        bl = wb.create_sheet("bad_lines")
        bl.append(["bad line"])
        for e in sorted(str(e) for e in result.bad_lines):
            bl.append([neutralise(mask_text(e))])
    for klass in CLASS_ORDER:
        sheet = wb.create_sheet(klass.value[:31])
        sheet.append(COLUMNS)
        for rec in records(result, classes=[klass.value], limit=DETAIL_CAP):
            row: list[Any] = []
            for c in COLUMNS:
                v = rec[c]
                if c in _AMOUNT_COLS:
                    row.append(money(sheet, v))
                elif isinstance(v, str):
                    row.append(neutralise(v))
                else:
                    row.append(v)
            sheet.append(row)
    wb.save(path)
    return path


# --- HTML ------------------------------------------------------------------------------

def _bars(title: str, items: list[tuple[str, int]], unit: str, cls: str) -> dict[str, Any]:
    top = max([v for _, v in items] + [1])
    return {"title": title, "cls": cls, "unit": unit, "height": 28 * len(items) + 10,
            "bars": [{"label": k, "value": v, "y": 28 * i + 5,
                      "w": round(360 * v / top, 1),
                      "text": Money(v).format() if unit == "CNY" else str(v)}
                     for i, (k, v) in enumerate(items)]}


def ageing(result: RunResult) -> list[tuple[str, int]]:
    buckets = ["0-1 d", "2-3 d", "4-5 d", "6+ d"]
    counts = dict.fromkeys(buckets, 0)
    rows = result.scan().filter(pl.col("class") == Klass.IN_TRANSIT.value).select(
        "succeeded_at").collect()
    for ts in rows.get_column("succeeded_at").to_list():
        days = 0 if ts is None else (result.run_date - ts.date()).days
        key = buckets[0] if days <= 1 else buckets[1] if days <= 3 else \
            buckets[2] if days <= 5 else buckets[3]
        counts[key] += 1
    return list(counts.items())


def charts(result: RunResult) -> list[dict[str, Any]]:
    s = result.summary
    by_class = s.group_by("class", maintain_order=True).agg(pl.col("count").sum(),
                                                            pl.col("amount_minor").sum())
    by_route = s.filter(pl.col("class") != Klass.MATCHED.value).group_by(
        "route", maintain_order=True).agg(pl.col("count").sum(), pl.col("amount_minor").sum())
    return [
        _bars("Refunds by class", [(Klass(c).label, int(n)) for c, n, _ in
                                   by_class.iter_rows()], "", "count-class"),
        _bars("Amount by class (CNY)", [(Klass(c).label, int(a)) for c, _, a in
                                        by_class.iter_rows()], "CNY", "amount-class"),
        _bars("Open items by route", [(r, int(n)) for r, n, _ in by_route.iter_rows()], "",
              "count-route"),
        _bars("Open amount by route (CNY)", [(r, int(a)) for r, _, a in by_route.iter_rows()],
              "CNY", "amount-route"),
        _bars("Ageing of in-transit refunds", ageing(result), "", "ageing"),
    ]


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Refund reconciliation {{ run_date }}</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}td.n{text-align:right}
.charts{display:flex;flex-wrap:wrap;gap:2em}svg text{font-size:12px}
.d{color:#b00020}
</style></head><body>
<h1>Refund reconciliation — {{ run_date }}</h1>
<p>Run {{ run_id if run_id is not none else "(not saved)" }}; routes: {{ routes }};
{{ total }} rows; {{ discrepancies }} discrepancies; {{ bad_lines|length }} bad statement lines.</p>
{% if paid_twice %}<p class="d" id="paid-twice-alarm"><strong>{{ paid_twice }} paid twice</strong>: money moved after its amount was released; finance, recover at once (the refunds of each release are in the <a href="#paid_twice">paid twice</a> table).</p>{% endif %}
<h2>Summary</h2>
<table id="summary"><tr><th>class</th><th>count</th><th>amount (CNY)</th></tr>
{% for c in classes %}<tr><td class="{{ 'd' if c.discrepancy else '' }}">{{ c.label }}</td>
<td class="n">{{ c.count }}</td><td class="n">{{ c.amount }}</td></tr>{% endfor %}</table>
<div class="charts">
{% for ch in charts %}<figure><figcaption>{{ ch.title }}</figcaption>
<svg class="chart {{ ch.cls }}" role="img" aria-label="{{ ch.title }}" width="600" height="{{ ch.height }}" xmlns="http://www.w3.org/2000/svg">
{% for b in ch.bars %}<text x="0" y="{{ b.y + 14 }}">{{ b.label }}</text>
<rect x="170" y="{{ b.y }}" width="{{ b.w }}" height="20" fill="#3b6ea5"><title>{{ b.label }}: {{ b.text }}</title></rect>
<text x="{{ 175 + b.w }}" y="{{ b.y + 14 }}">{{ b.text }}</text>
{% endfor %}</svg></figure>
{% endfor %}</div>
{% if bad_lines %}<h2>Bad statement lines</h2><ul>{% for e in bad_lines %}<li>{{ e }}</li>{% endfor %}</ul>{% endif %}
{% for sec in sections %}<h2 id="{{ sec.klass }}">{{ sec.label }} ({{ sec.rows|length }}{% if sec.capped %}, first {{ sec.rows|length }} shown{% endif %})</h2>
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in sec.rows %}<tr>{% for c in columns %}<td>{{ r[c] if r[c] is not none else "" }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}
</body></html>
"""


def write_html(result: RunResult, path: Path) -> Path:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    counts = result.counts()
    amounts = dict(result.summary.group_by("class").agg(pl.col("amount_minor").sum())
                   .iter_rows())
    classes = [{"label": k.label, "count": counts[k.value], "discrepancy": k.is_discrepancy,
                "amount": Money(int(amounts.get(k.value, 0))).format()} for k in CLASS_ORDER]
    sections = []
    for k in CLASS_ORDER:
        if k == Klass.MATCHED or not counts[k.value]:
            continue
        rows = records(result, classes=[k.value], limit=DETAIL_CAP)
        sections.append({"klass": k.value, "label": k.label, "rows": rows,
                         "capped": counts[k.value] > DETAIL_CAP})
    html = env.from_string(_HTML).render(
        run_date=result.run_date.isoformat(), run_id=result.run_id,
        routes=", ".join(r.value for r in result.routes), total=result.total,
        discrepancies=sum(counts[k.value] for k in Klass if k.is_discrepancy),
        paid_twice=counts[Klass.PAID_TWICE.value],
        bad_lines=sorted(mask_text(str(e)) for e in result.bad_lines), classes=classes,
        charts=charts(result), sections=sections, columns=COLUMNS)
    path.write_text(html, encoding="utf-8")
    return path


WRITERS: Final = {"csv": write_csv, "xlsx": write_xlsx, "html": write_html, "json": write_json}


def write_reports(result: RunResult, out: Path, formats: Sequence[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"reconciliation-{result.run_date.isoformat()}"
    return [WRITERS[f](result, out / f"{stem}.{f}") for f in formats]
