"""``refund-gateway reconcile`` and ``refund-gateway discrepancies list|show|resolve|reopen``
(entry points in pyproject). Exit codes (DESIGN.md): 0 all matched, in transit or not
refunded, 1 discrepancies (or bad lines below the threshold, or input warnings), 2 usage
or configuration error or wrong input (never a traceback for a user mistake).

``--json`` (on the command, or ``refund-gateway --json``) prints one JSON document per
command on stdout, named by its ``schema`` (``refund-gateway/cli/reconcile/v1``,
``.../discrepancies-list/v1``...; README.md "Reconciliation --json"); an error is
``{"schema", "error", "exit_code": 2}`` there too (and one line on stderr). Every output
names the database it used, password masked. ``discrepancies list`` and ``show`` refuse a
SQLite file that does not exist (they would create an empty one and say "nothing").
Statements come from ``--statement`` files or, without them, from each route's adapter
(``download_statement``) built by ``gateway.bootstrap``. ``--account`` scopes a run to
some merchant accounts: only their statements are downloaded (given ``--statement``
files are taken as theirs), only their refunds and open items are judged (``job``), and
the outputs name them. Owns arguments and printing only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import polars as pl
from sqlalchemy import Engine

from gateway.clock import to_beijing
from gateway.errors import GatewayError, StatementError
from gateway.masking import mask_text
from gateway.models import Route
from gateway.money import Money
from gateway.ports import ChannelAdapter
from gateway.settings import ACCOUNT_NAME, DEFAULT_ACCOUNT, GatewaySettings, select_accounts
from gateway.store.location import database_label, require_existing_sqlite
from reconciliation.items import item_history
from reconciliation.job import (
    RunResult,
    beijing_day,
    list_items,
    reconcile,
    reopen_item,
    resolve_item,
)
from reconciliation.matching import CLASS_ORDER, Klass
from reconciliation.platform import from_csv_parts, from_store
from reconciliation.reports import FORMATS, write_reports
from reconciliation.statements import Source, TooManyBadLines, detect

EXIT_OK, EXIT_DISCREPANCIES, EXIT_USAGE = 0, 1, 2

json_option = click.option("--json", "as_json", is_flag=True,
                           help="One JSON document on stdout (schema in README.md).")


def _settings(ctx: click.Context) -> GatewaySettings:
    from gateway.settings import load_settings  # noqa: PLC0415 - only when a command runs

    app = ctx.find_root().obj
    given = getattr(app, "settings", None)
    return given if isinstance(given, GatewaySettings) else load_settings()


def _json(ctx: click.Context, local: bool) -> bool:
    return local or bool(getattr(ctx.find_root().obj, "as_json", False))


def _database(ctx: click.Context) -> str:
    return database_label(_settings(ctx).database_url)


def _engine(ctx: click.Context, *, read_only: bool = False) -> Engine:
    from gateway.bootstrap import build_store  # noqa: PLC0415 - lazy: store only when needed

    settings = _settings(ctx)
    if read_only:
        require_existing_sqlite(settings.database_url)
    engine = build_store(settings).engine
    # Pooled connections are closed when the command ends (exit codes included).
    ctx.call_on_close(engine.dispose)
    return engine


def schema_of(command: str) -> str:
    """The name of a command's ``--json`` document (README.md)."""
    return f"refund-gateway/cli/{command.replace(' ', '-')}/v1"


def _emit(doc: Mapping[str, Any]) -> None:
    click.echo(json.dumps(_plain(doc), ensure_ascii=False, indent=2, sort_keys=False))


def _plain(value: Any) -> Any:
    """JSON-ready: times in Beijing time with their offset, dates ISO."""
    if isinstance(value, datetime):
        return to_beijing(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def _fail(message: str, *, command: str, as_json: bool) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if as_json:
        _emit({"schema": schema_of(command), "error": message, "exit_code": EXIT_USAGE})
    raise SystemExit(EXIT_USAGE)


def _bj(moment: datetime | None) -> str:
    return "-" if moment is None else to_beijing(moment).strftime("%Y-%m-%d %H:%M:%S")


def _yuan(minor: int | None) -> str | None:
    return None if minor is None else Money(int(minor)).format()


# --- reconcile -----------------------------------------------------------------------

@click.command("reconcile")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Statement day (Beijing), YYYY-MM-DD.")
@click.option("--route", "routes", multiple=True, type=click.Choice([r.value for r in Route]))
@click.option("--account", "accounts", multiple=True,
              help="Only this merchant account (repeatable; 'default' or a name of "
                   "..._ACCOUNTS__<NAME>): its statements, its refunds, its open items. "
                   "Default: every account.")
@click.option("--statement", "statements", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--platform-csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--format", "formats", default="csv,xlsx,html,json", show_default=True)
@click.option("--max-bad-lines", type=int, default=100, show_default=True,
              help="Fail the run (exit 2) past this many unreadable statement lines.")
@click.option("--no-save", is_flag=True, help="Do not record the run in the database.")
@json_option
@click.pass_context
def reconcile_command(ctx: click.Context, day: datetime, routes: tuple[str, ...],
                      accounts: tuple[str, ...], statements: tuple[Path, ...],
                      platform_csv: Path | None, out: Path, formats: str,
                      max_bad_lines: int, no_save: bool, as_json: bool) -> None:
    """Match the platform's refunds against the channels' statements for one day."""
    as_json = _json(ctx, as_json)
    run_date = day.date()
    fmts = [f.strip() for f in formats.split(",") if f.strip()]

    def fail(message: str) -> NoReturn:
        _fail(message, command="reconcile", as_json=as_json)

    if unknown := [f for f in fmts if f not in FORMATS]:
        fail(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    scope = sorted({a.strip().lower() for a in accounts}) or None
    if bad := [a for a in scope or [] if not ACCOUNT_NAME.fullmatch(a)]:
        fail(f"--account {', '.join(bad)}: a merchant account name is 1-32 of [a-z0-9_-]")
    database: str | None = None
    try:
        for p in statements:
            if not p.is_file():
                fail(f"statement file not found: {p}")
        if platform_csv is not None and not platform_csv.is_file():
            fail(f"platform CSV not found: {platform_csv}")
        sources = [Source.of(p) for p in statements]
        chosen = [Route(r) for r in routes]
        if sources:
            found = [detect(s).route for s in sources]
            chosen = chosen or sorted(set(found), key=list(Route).index)
        else:
            sources = _download(ctx, chosen, run_date, scope)
            chosen = chosen or sorted({detect(s).route for s in sources},
                                      key=list(Route).index)
        engine = None if no_save and platform_csv else _engine(ctx)
        if engine is not None:
            database = _database(ctx)
        if platform_csv is not None:
            csv_path = platform_csv

            def platform(carried: list[str]) -> Iterable[pl.DataFrame]:
                # Read inside the run (in parallel with the statements) and handed over
                # in chunks, so the engine can free them as it goes.
                return from_csv_parts(csv_path, routes=chosen, accounts=scope)
            source_name = str(platform_csv)
        else:
            start, end = beijing_day(run_date)
            store_engine = engine if engine is not None else _engine(ctx)

            def platform(carried: list[str]) -> Iterable[pl.DataFrame]:
                return [from_store(store_engine, start, end, chosen, carried, links=True,
                                   accounts=scope)]
            source_name = "store"
        total = sum((s.size() or 0) for s in sources)
        with click.progressbar(length=max(total, 1), label="reading statements",
                               file=sys.stderr,
                               hidden=total < 50_000_000) as bar:
            result = reconcile(run_date=run_date, routes=chosen, statements=sources,
                               platform=platform, platform_source=source_name,
                               engine=None if no_save else engine,
                               max_bad_lines=max_bad_lines,
                               progress=lambda n: bar.update(n * 100), accounts=scope)
            bar.update(total)
    except TooManyBadLines as exc:
        for e in exc.errors:
            click.echo(f"bad line: {mask_text(str(e))}", err=True)
        fail(str(exc))
    except GatewayError as exc:
        fail(str(exc))
    with result:
        paths = write_reports(result, out, fmts)
        code = EXIT_DISCREPANCIES if result.has_discrepancies else EXIT_OK
        if as_json:
            _emit(run_document(result, database=database, saved=not no_save,
                               platform_source=source_name, reports=paths, exit_code=code))
        else:
            _print_run(result, database, paths)
    raise SystemExit(code)


def run_document(result: RunResult, *, database: str | None, saved: bool,
                 platform_source: str, reports: list[Path], exit_code: int
                 ) -> dict[str, Any]:
    """``reconcile --json`` (README.md "Reconciliation --json")."""
    counts = result.counts()
    chains = []
    rows = {}
    if result.chains:
        ids = sorted({i for c in result.chain_list() for i in c})
        found = result.scan().filter(pl.col("refund_id").is_in(ids)).select(
            "refund_id", pl.col("route").cast(pl.String), "channel_refund_no",
            pl.col("class").cast(pl.String), "platform_amount_minor").collect()
        rows = {r["refund_id"]: r for r in found.iter_rows(named=True)}
    for chain in result.chain_list():
        members = [rows[i] for i in chain if i in rows]
        moved = sum(int(r["platform_amount_minor"] or 0) for r in members
                    if r["class"] != Klass.NOT_REFUNDED.value)
        chains.append({"refunds": list(chain), "rows": [
            {**r, "amount": _yuan(r.pop("platform_amount_minor"))} for r in members],
            "amount_counted": _yuan(moved)})
    carried: list[dict[str, Any]] = [
        {"item_id": item_id, "route": r, "channel_refund_no": n}
        for (r, n), item_id in sorted(result.carried.items())]
    if carried:
        classes = dict(result.scan().filter(pl.col("channel_refund_no").is_in(
            [c["channel_refund_no"] for c in carried])).select(
            pl.concat_str(pl.col("route").cast(pl.String), pl.lit("|"), "channel_refund_no"),
            pl.col("class").cast(pl.String)).collect().iter_rows())
        for c in carried:
            c["class"] = classes.get(f"{c['route']}|{c['channel_refund_no']}")
    return {
        "schema": schema_of("reconcile"), "database": database, "saved": saved,
        "run_id": result.run_id, "run_date": result.run_date,
        "routes": [r.value for r in result.routes], "accounts": result.accounts,
        "platform_source": platform_source,
        "statements": [{"name": s.name, "format": s.format, "route": s.route.value,
                        "sha256": s.sha256 or None} for s in result.statements],
        "counts": counts,
        "summary": [{"class": c, "route": r, "count": int(n), "amount_minor": int(a),
                     "amount": _yuan(int(a))} for c, r, n, a in result.summary.iter_rows()],
        "discrepancies": sum(counts[k.value] for k in Klass if k.is_discrepancy),
        "carried_over": carried,
        "chains": chains,
        "warnings": [w.to_json() for w in result.warnings],
        "bad_lines": sorted(mask_text(str(e)) for e in result.bad_lines),
        "reports": [str(p) for p in reports],
        "exit_code": exit_code,
    }


def _download(ctx: click.Context, routes: list[Route], day: date,
              accounts: list[str] | None = None) -> list[Source]:
    """Each configured merchant account's statement of ``day`` (the account ``default``
    and every ``..._ACCOUNTS__<NAME>``): the platform's refunds of a route span all its
    accounts, so all of their statements are read. With ``accounts``, those accounts'
    only (the run's platform side is theirs only too)."""
    settings = _settings(ctx)
    adapters = _statement_adapters(settings, routes, accounts)
    if not adapters:
        raise StatementError("no statements given and no route configured to download one")
    out = []
    for (route, account), adapter in sorted(adapters.items(),
                                            key=lambda kv: (kv[0][0].value, kv[0][1])):
        if not adapter.capabilities.statements:
            continue
        name = (f"{route.value}-{day.isoformat()}" if account == DEFAULT_ACCOUNT
                else f"{route.value}-{account}-{day.isoformat()}")
        try:
            out.append(Source.of(adapter.download_statement(day), name))
        finally:
            adapter.close()
    return out


def _statement_adapters(settings: GatewaySettings, routes: list[Route],
                        accounts: list[str] | None
                        ) -> dict[tuple[Route, str], ChannelAdapter]:
    """The adapters to download with, by (route, account): every account's, or only
    those of ``accounts`` (each must be configured on one of ``routes``, or of any route
    when none is given: a ``ConfigurationError`` listing the configured ones). Only the
    accounts chosen are built: another account's settings may be broken or another
    team's, and a scoped run must not need them."""
    from gateway.bootstrap import build_account  # noqa: PLC0415 - lazy: adapters on download

    return {(route, name): build_account(settings, route, cfg)
            for route, name, cfg in select_accounts(settings, [r.value for r in routes],
                                                    accounts or ())}


def _print_run(result: RunResult, database: str | None, paths: list[Path]) -> None:
    click.echo(f"database: {database or 'none (--no-save)'}")
    click.echo(f"accounts: {', '.join(result.accounts) if result.accounts else 'all'}")
    _print_summary(result.counts(), result.bad_lines)
    for w in result.warnings:
        click.echo(f"warning: {w.message}")
    if result.carried:
        click.echo(f"carried over from earlier runs, judged from the open item: "
                   f"{len(result.carried)}")
    for chain in result.chain_list():
        click.echo(f"reroute chain {' -> '.join(chain)}: one refund's money, counted once")
    for p in paths:
        click.echo(f"wrote {p}")


def _print_summary(counts: dict[str, int], bad: list[StatementError]) -> None:
    width = max(len(k.label) for k in CLASS_ORDER)
    click.echo(f"{'class':<{width}}  count")
    for k in CLASS_ORDER:
        click.echo(f"{k.label:<{width}}  {counts[k.value]:>5}")
    if bad:
        click.echo(f"{'bad statement lines':<{width}}  {len(bad):>5}")


# --- discrepancies -------------------------------------------------------------------

@click.group("discrepancies")
def discrepancies_group() -> None:
    """List, show, resolve and reopen reconciliation discrepancies kept across runs."""


def item_document(item: Mapping[str, Any]) -> dict[str, Any]:
    """One item as ``discrepancies --json`` shows it."""
    keep = ["id", "state", "class", "route", "item_key", "refund_id", "channel_refund_id",
            "merchant_order_no", "platform_amount_minor", "statement_amount_minor",
            "currency", "platform_status", "statement_status", "succeeded_at",
            "arrival_latest", "source", "line", "statement_time", "linked_refunds",
            "first_seen_run", "last_seen_run", "resolved_by", "resolved_at"]
    doc = {k: item.get(k) for k in keep}
    doc["label"] = Klass(item["class"]).label
    doc["platform_amount"] = _yuan(item.get("platform_amount_minor"))
    doc["statement_amount"] = _yuan(item.get("statement_amount_minor"))
    return doc


def event_document(event: Mapping[str, Any]) -> dict[str, Any]:
    keep = ["id", "at", "actor", "action", "class_before", "class_after", "state_before",
            "state_after", "run_id", "note"]
    return {k: event.get(k) for k in keep}


@contextmanager
def _errors(command: str, as_json: bool) -> Iterator[None]:
    """A discrepancies command's body, with the error tree turned into exit 2."""
    try:
        yield
    except GatewayError as exc:
        _fail(str(exc), command=command, as_json=as_json)


@discrepancies_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved items.")
@json_option
@click.pass_context
def list_command(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """The open items (with --all: every item), newest change last in each row."""
    as_json = _json(ctx, as_json)
    with _errors("discrepancies list", as_json):
        items = list_items(_engine(ctx, read_only=True), state=None if show_all else "open")
        database = _database(ctx)
    if as_json:
        _emit({"schema": schema_of("discrepancies list"), "database": database,
               "state": "all" if show_all else "open",
               "items": [{**item_document(i), "events": i["events"],
                          "last_event": event_document(i["last_event"])
                          if i["last_event"] else None} for i in items]})
        return
    click.echo(f"database: {database}")
    if not items:
        click.echo("no discrepancies" if not show_all else "no discrepancies recorded")
        return
    header = (f"{'id':>6}  {'state':<8}  {'class':<22}  {'route':<9}  {'channel refund no':<32}  "
              f"{'refund id':<32}  {'amount CNY':>11}  {'runs':<9}  "
              f"{'last change (Beijing)':<19}  {'by':<12}  note")
    click.echo(header)
    for i in items:
        amount = i["platform_amount_minor"] if i["platform_amount_minor"] is not None \
            else i["statement_amount_minor"]
        last = i["last_event"] or {}
        linked = (f" [linked: {', '.join(i['linked_refunds'])}]"
                  if i["linked_refunds"] else "")
        click.echo(f"{i['id']:>6}  {i['state']:<8}  {i['class']:<22}  {i['route']:<9}  "
                   f"{i['item_key']:<32}  {i['refund_id'] or '-':<32}  "
                   f"{_yuan(amount) or '-':>11}  "
                   f"{str(i['first_seen_run']) + '-' + str(i['last_seen_run']):<9}  "
                   f"{_bj(last.get('at')):<19}  {last.get('actor', '-'):<12}  "
                   f"{last.get('note', '')}{linked}")


@discrepancies_group.command("show")
@click.argument("item_id", type=int)
@json_option
@click.pass_context
def show_command(ctx: click.Context, item_id: int, as_json: bool) -> None:
    """One item and its whole history (every resolve, reopen and run's change)."""
    as_json = _json(ctx, as_json)
    with _errors("discrepancies show", as_json):
        item, events = item_history(_engine(ctx, read_only=True), item_id)
        database = _database(ctx)
    if as_json:
        _emit({"schema": schema_of("discrepancies show"), "database": database,
               "item": item_document(item), "history": [event_document(e) for e in events]})
        return
    k = Klass(item["class"])
    lines = [
        f"database     {database}",
        f"discrepancy  {item['id']}: {k.label} ({k.value}), {item['state']}",
        f"route        {item['route']}",
        f"refund       {item['refund_id'] or '- (unknown to the platform)'}",
        f"channel no   {item['item_key']}",
        f"amounts      platform {_yuan(item['platform_amount_minor']) or '-'}, statement "
        f"{_yuan(item['statement_amount_minor']) or '-'} {item['currency']}",
        f"statuses     platform {item['platform_status'] or '-'}, statement "
        f"{item['statement_status'] or '-'}",
        f"statement    {item['source'] + ':' + str(item['line']) if item['source'] else '-'}"
        f" at {_bj(item['statement_time'])}",
        f"arrival by   {item['arrival_latest'] or '-'}",
        f"runs         {item['first_seen_run']} .. {item['last_seen_run']}",
    ]
    if item["linked_refunds"]:
        lines.append(f"linked       {', '.join(item['linked_refunds'])}")
    lines.append("history (Beijing time):")
    for e in events:
        change = (f"{e['class_before'] or '-'} -> {e['class_after']}, "
                  f"{e['state_before'] or '-'} -> {e['state_after']}")
        run = f" (run {e['run_id']})" if e["run_id"] else ""
        lines.append(f"  {_bj(e['at'])}  {e['actor']:<12}  {e['action']:<12}  {change}{run}"
                     f"\n      {e['note']}")
    click.echo("\n".join(lines))


def _change_command(name: str, verb: str) -> click.Command:
    @click.command(name)
    @click.argument("item_id", type=int)
    @click.option("--by", "by", required=True, help=f"Who {verb} it (required, not empty).")
    @click.option("--note", required=True, help="What was done and why (required).")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, item_id: int, by: str, note: str, as_json: bool) -> None:
        as_json = _json(ctx, as_json)
        action = resolve_item if name == "resolve" else reopen_item
        with _errors(f"discrepancies {name}", as_json):
            item, event = action(_engine(ctx), item_id, by=by, note=note)
            database = _database(ctx)
        if as_json:
            _emit({"schema": schema_of(f"discrepancies {name}"), "database": database,
                   "item": item_document(item), "event": event_document(event)})
            return
        click.echo(f"{verb} {item['id']} ({item['class']}, {item['item_key']}) by "
                   f"{event['actor']} at {_bj(event['at'])} Beijing; database {database}")

    command.__doc__ = (f"Mark an item {verb}, with who and why; kept in its history "
                       "(discrepancies show).")
    return command


discrepancies_group.add_command(_change_command("resolve", "resolved"))
discrepancies_group.add_command(_change_command("reopen", "reopened"))
