"""``refund-gateway reconcile`` and ``refund-gateway discrepancies`` (entry points in
pyproject). Exit codes: 0 all matched or in transit, 1 discrepancies (or bad lines below
the threshold), 2 bad input (never a traceback for a user mistake). Statements come from
``--statement`` files or, without them, from each route's adapter (``download_statement``)
built by ``gateway.bootstrap``. Owns argument handling and the printed summary only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import click
import polars as pl
from sqlalchemy import Engine

from gateway.errors import GatewayError, StatementError
from gateway.models import Route
from gateway.settings import GatewaySettings
from reconciliation.job import ItemNotFound, beijing_day, list_items, reconcile, resolve_item
from reconciliation.matching import CLASS_ORDER
from reconciliation.platform import from_csv_parts, from_store
from reconciliation.reports import FORMATS, write_reports
from reconciliation.statements import Source, TooManyBadLines, detect

EXIT_OK, EXIT_DISCREPANCIES, EXIT_USAGE = 0, 1, 2


def _settings(ctx: click.Context) -> GatewaySettings:
    from gateway.settings import load_settings  # noqa: PLC0415 - only when a command runs

    app = ctx.find_root().obj
    given = getattr(app, "settings", None)
    return given if isinstance(given, GatewaySettings) else load_settings()


def _engine(ctx: click.Context) -> Engine:
    from gateway.bootstrap import build_store  # noqa: PLC0415 - lazy: store only when needed

    engine = build_store(_settings(ctx)).engine
    # Pooled connections are closed when the command ends (exit codes included).
    ctx.call_on_close(engine.dispose)
    return engine


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(EXIT_USAGE)


@click.command("reconcile")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Statement day (Beijing), YYYY-MM-DD.")
@click.option("--route", "routes", multiple=True, type=click.Choice([r.value for r in Route]))
@click.option("--statement", "statements", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--platform-csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--format", "formats", default="csv,xlsx,html,json", show_default=True)
@click.option("--max-bad-lines", type=int, default=100, show_default=True,
              help="Fail the run (exit 2) past this many unreadable statement lines.")
@click.option("--no-save", is_flag=True, help="Do not record the run in the database.")
@click.pass_context
def reconcile_command(ctx: click.Context, day: datetime, routes: tuple[str, ...],
                      statements: tuple[Path, ...], platform_csv: Path | None, out: Path,
                      formats: str, max_bad_lines: int, no_save: bool) -> None:
    """Match the platform's refunds against the channels' statements for one day."""
    run_date = day.date()
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    if unknown := [f for f in fmts if f not in FORMATS]:
        _fail(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    try:
        sources = [Source.of(p) for p in statements]
        for p in statements:
            if not p.exists():
                _fail(f"statement file not found: {p}")
        chosen = [Route(r) for r in routes]
        if sources:
            found = [detect(s).route for s in sources]
            chosen = chosen or sorted(set(found), key=list(Route).index)
        else:
            sources = _download(ctx, chosen, run_date)
            chosen = chosen or sorted({detect(s).route for s in sources},
                                      key=list(Route).index)
        engine = None if no_save and platform_csv else _engine(ctx)
        if platform_csv is not None:
            if not platform_csv.exists():
                _fail(f"platform CSV not found: {platform_csv}")
            csv_path = platform_csv

            def platform(carried: list[str]) -> Iterable[pl.DataFrame]:
                # Read inside the run (in parallel with the statements) and handed over
                # in chunks, so the engine can free them as it goes.
                return from_csv_parts(csv_path, routes=chosen)
            source_name = str(platform_csv)
        else:
            start, end = beijing_day(run_date)
            store_engine = engine if engine is not None else _engine(ctx)

            def platform(carried: list[str]) -> Iterable[pl.DataFrame]:
                return [from_store(store_engine, start, end, chosen, carried)]
            source_name = "store"
        total = sum((s.size() or 0) for s in sources)
        with click.progressbar(length=max(total, 1), label="reading statements",
                               file=sys.stderr,
                               hidden=total < 50_000_000) as bar:
            result = reconcile(run_date=run_date, routes=chosen, statements=sources,
                               platform=platform, platform_source=source_name,
                               engine=None if no_save else engine,
                               max_bad_lines=max_bad_lines,
                               progress=lambda n: bar.update(n * 100))
            bar.update(total)
    except TooManyBadLines as exc:
        for e in exc.errors:
            click.echo(f"bad line: {e}", err=True)
        _fail(str(exc))
        return
    except GatewayError as exc:
        _fail(str(exc))
        return
    with result:
        paths = write_reports(result, out, fmts)
        _print_summary(result.counts(), result.bad_lines)
        for p in paths:
            click.echo(f"wrote {p}")
        code = EXIT_DISCREPANCIES if result.has_discrepancies else EXIT_OK
    raise SystemExit(code)


def _download(ctx: click.Context, routes: list[Route], day: date) -> list[Source]:
    from gateway.bootstrap import build_adapters  # noqa: PLC0415 - lazy: adapters on download

    adapters = build_adapters(_settings(ctx), routes=routes or None)
    if not adapters:
        raise StatementError("no statements given and no route configured to download one")
    out = []
    for route, adapter in sorted(adapters.items(), key=lambda kv: kv[0].value):
        if not adapter.capabilities.statements:
            continue
        try:
            out.append(Source.of(adapter.download_statement(day),
                                 f"{route.value}-{day.isoformat()}"))
        finally:
            adapter.close()
    return out


def _print_summary(counts: dict[str, int], bad: list[StatementError]) -> None:
    width = max(len(k.label) for k in CLASS_ORDER)
    click.echo(f"{'class':<{width}}  count")
    for k in CLASS_ORDER:
        click.echo(f"{k.label:<{width}}  {counts[k.value]:>5}")
    if bad:
        click.echo(f"{'bad statement lines':<{width}}  {len(bad):>5}")


@click.group("discrepancies")
def discrepancies_group() -> None:
    """List and resolve reconciliation discrepancies kept across runs."""


@discrepancies_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved items.")
@click.pass_context
def list_command(ctx: click.Context, show_all: bool) -> None:
    try:
        items = list_items(_engine(ctx), state=None if show_all else "open")
    except GatewayError as exc:
        _fail(str(exc))
        return
    for i in items:
        amount = i["platform_amount_minor"] if i["platform_amount_minor"] is not None \
            else i["statement_amount_minor"]
        # An open item's note is the run's (a paid-twice item's linked refunds); a
        # resolved one's is the person's (or "matched in run N"), shown with who.
        by = f"{i['resolved_by']}: " if i["resolved_by"] else ""
        click.echo(f"{i['id']:>6}  {i['state']:<8} {i['class']:<22} {i['route']:<9} "
                   f"{i['item_key']:<32} {i['refund_id'] or '-':<32} {amount} "
                   f"runs {i['first_seen_run']}-{i['last_seen_run']}"
                   + (f"  [{by}{i['note']}]" if i["note"] else ""))
    if not items:
        click.echo("no discrepancies")


@discrepancies_group.command("resolve")
@click.argument("item_id", type=int)
@click.option("--by", "by", required=True, help="Who resolved it.")
@click.option("--note", required=True, help="What was done.")
@click.pass_context
def resolve_command(ctx: click.Context, item_id: int, by: str, note: str) -> None:
    try:
        item = resolve_item(_engine(ctx), item_id, by=by, note=note)
    except ItemNotFound as exc:
        _fail(str(exc))
        return
    click.echo(f"resolved {item['id']} ({item['class']}, {item['item_key']}) by {by}")
