"""The ``refund-gateway`` console script.

Core commands live here (``db upgrade``, ``refund``, ``status``, ``resolve``,
``reroute``); other packages contribute theirs through the entry-point group
``refund_gateway.cli`` (``sandbox``, ``reconcile``, ``receipt``, ``demo``...), so this
module imports none of them. Exit codes (DESIGN.md): 0 ok, 1 discrepancies or a failed
refund, 2 usage or configuration error, 3 outcome unknown. A user mistake prints one
clear line, never a traceback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from functools import cached_property, wraps
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import structlog
from dotenv import dotenv_values

from gateway import calendar
from gateway.clock import BEIJING, utcnow
from gateway.errors import ConfigurationError, GatewayError, OutcomeUnknown, StoreUnavailable
from gateway.logging import configure_logging
from gateway.models import Payment, Refund, RefundRequest, RefundStatus, Route
from gateway.money import Money
from gateway.resolver import Backoff, run_loop
from gateway.service import RefundGateway, ResolveReport
from gateway.settings import GatewaySettings, load_settings
from gateway.store.location import database_label, require_existing_sqlite

log = structlog.get_logger("gateway.cli")

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
P = ParamSpec("P")
R = TypeVar("R")


class AppContext:
    """What every sub-command shares: settings and a gateway, built on first use."""

    def __init__(self, env_file: str | None, as_json: bool) -> None:
        self.env_file = env_file
        self.as_json = as_json

    @cached_property
    def settings(self) -> GatewaySettings:
        return load_settings(self.env_file)

    @cached_property
    def gateway(self) -> RefundGateway:
        settings = self.settings
        configure_logging(settings.log_format,
                          "WARNING" if self.as_json else settings.log_level)
        return RefundGateway.from_settings(settings, configure_logs=False)

    def emit(self, payload: Any, text: str | None = None) -> None:
        if self.as_json:
            document = to_jsonable(payload)
            if isinstance(document, dict) and "database" not in document:
                # which database answered (password masked, SQLite path absolute): the
                # relative default otherwise hides which file a command read
                document["database"] = database_label(self.settings.database_url)
            click.echo(json.dumps(document, ensure_ascii=False, sort_keys=True, indent=2))
        else:
            click.echo(text if text is not None else str(payload))


pass_app = click.make_pass_decorator(AppContext)


def _log_level(env_file: str | None) -> str:
    level = os.environ.get("REFUND_GATEWAY_LOG_LEVEL")
    if level is None and env_file:
        level = dotenv_values(env_file).get("REFUND_GATEWAY_LOG_LEVEL")
    return (level or "INFO").upper()


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Money):
        return {"minor": value.minor, "currency": value.currency, "text": value.format()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(getattr(value, k)) for k in asdict(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the error tree into one line on stderr and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except OutcomeUnknown as exc:
            click.echo(f"outcome unknown: {exc.message}", err=True)
            sys.exit(EXIT_UNKNOWN)
        except GatewayError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def describe(refund: Refund) -> str:
    lines = [
        f"refund      {refund.id}",
        f"status      {refund.status.value}",
        f"route       {refund.route.value}",
        f"amount      {refund.amount}",
        f"order       {refund.payment.merchant_order_no}",
        f"channel no  {refund.channel_refund_no}",
    ]
    if refund.channel_refund_id:
        lines.append(f"channel id  {refund.channel_refund_id}")
    if refund.expected_arrival:
        lines.append(f"arrival     {refund.expected_arrival.earliest} .. "
                     f"{refund.expected_arrival.latest}")
    if refund.next_check_at:
        lines.append(f"next check  {refund.next_check_at.isoformat()}")
    if refund.failure_code:
        lines.append(f"failure     {refund.failure_code} {refund.failure_message or ''}")
    if refund.rerouted_to:
        lines.append(f"rerouted to {refund.rerouted_to}")
    return "\n".join(lines)


def exit_for(refund: Refund, last_outcome: str | None = None) -> int:
    """1 for a refund that did not reach the user, 3 when the last channel call left the
    outcome unknown (or the channel could not be reached), else 0."""
    if refund.status in (RefundStatus.FAILED, RefundStatus.CLOSED, RefundStatus.ABNORMAL):
        return EXIT_PROBLEM
    if refund.status is RefundStatus.PENDING and last_outcome is not None:
        return EXIT_UNKNOWN
    if refund.status is RefundStatus.PROCESSING and last_outcome in (
            "OutcomeUnknown", "ChannelUnavailable", "ChannelAuthError"):
        return EXIT_UNKNOWN
    return EXIT_OK


def last_outcome(gw: RefundGateway, refund: Refund) -> str | None:
    attempts = gw.store.attempts(refund.id)
    return attempts[-1].outcome if attempts else None


class PluginGroup(click.Group):
    """Adds the sub-commands other packages register under ``refund_gateway.cli``."""

    def _plugins(self) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for ep in entry_points(group="refund_gateway.cli"):
            try:
                cmd = ep.load()
            except ImportError:
                continue   # a package not built yet must not break the core commands
            if isinstance(cmd, click.Command):
                found[ep.name] = cmd
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugins().get(cmd_name)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Settings file (REFUND_GATEWAY_* lines), e.g. one written by the sandbox.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def main(ctx: click.Context, env_file: str | None, as_json: bool) -> None:
    """refund-gateway: refunds back along the route the money came in."""
    if env_file and not Path(env_file).is_file():
        raise click.BadParameter(f"{env_file} does not exist", param_hint="--env-file")
    ctx.obj = AppContext(env_file, as_json)
    # Logs go to stderr so stdout stays the command's output (tables, --json). The level
    # is read before full settings so that even a settings error is logged as asked.
    configure_logging("auto", "WARNING" if as_json else _log_level(env_file))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_app
@handle_errors
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the schema (Alembic) at REFUND_GATEWAY_DATABASE_URL, and say
    which it did: created (the tables listed), migrated from a revision, or nothing."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 - only this command

    from gateway.store import make_engine, upgrade  # noqa: PLC0415

    engine = make_engine(app.settings.database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before, old_tables = _schema_state(engine)
        upgrade(engine)
        after, tables = _schema_state(engine)
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"cannot upgrade the schema at {where}: "
                               f"{type(exc.__cause__ or exc).__name__}",
                               operation="db upgrade") from None
    finally:
        engine.dispose()
    created = sorted(tables - old_tables)
    if not before:
        action, text = "created", (f"created the schema at {where} (revision {after}): "
                                   f"{len(created)} tables: {', '.join(created)}")
    elif before != after:
        action, text = "migrated", (f"migrated {where} from revision {before} to {after}"
                                    + (f"; new tables: {', '.join(created)}" if created
                                       else ""))
    else:
        action, text = "current", f"schema is current at {where} (revision {after})"
    app.emit({"database": where, "schema": "current", "action": action,
              "from_revision": before or None, "revision": after,
              "created_tables": created}, text)


def _schema_state(engine: Any) -> tuple[str, set[str]]:
    """(the Alembic revision, "" for none; the tables there) of a database."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
    from sqlalchemy import inspect  # noqa: PLC0415

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
        return ",".join(sorted(heads)), set(inspect(conn).get_table_names())


@main.command("refund")
@click.option("--route", type=click.Choice([r.value for r in Route]), required=True)
@click.option("--order", "order", required=True, help="merchant order number")
@click.option("--trade-no", required=True, help="the channel's trade number of the payment")
@click.option("--paid", required=True, help="amount paid, in yuan, e.g. 100.00")
@click.option("--amount", required=True, help="amount to refund, in yuan, e.g. 25.00")
@click.option("--key", "key", required=True, help="idempotency key")
@click.option("--reason", default="")
@click.option("--user-id", default=None)
@click.option("--account", default="default", show_default=True,
              help="the merchant account the payment came through (..._ACCOUNTS__<NAME>)")
@pass_app
@handle_errors
def refund_cmd(app: AppContext, route: str, order: str, trade_no: str, paid: str,
               amount: str, key: str, reason: str, user_id: str | None,
               account: str) -> None:
    """Refund part or all of a payment (idempotent per --key)."""
    refund = app.gateway.refund(RefundRequest(
        idempotency_key=key,
        payment=Payment(Route(route), order, trade_no, Money.parse(paid), user_id,
                        merchant_account=account),
        amount=Money.parse(amount), reason=reason))
    app.emit(refund, describe(refund))
    sys.exit(exit_for(refund, last_outcome(app.gateway, refund)))


@main.command("status")
@click.argument("refund_id")
@click.option("--sync", "do_sync", is_flag=True, help="Ask the channel now.")
@click.option("--events", "show_events", is_flag=True, help="Show the event history.")
@pass_app
@handle_errors
def status_cmd(app: AppContext, refund_id: str, do_sync: bool, show_events: bool) -> None:
    """Show a refund."""
    # Read-only: a SQLite file that is not there would be created empty ("no refund").
    require_existing_sqlite(app.settings.database_url)
    gw = app.gateway
    refund = gw.sync(refund_id) if do_sync else gw.get(refund_id)
    events = gw.events(refund_id) if show_events else []
    text = describe(refund)
    for e in events:
        change = (f"{e.status_from.value if e.status_from else ''} -> {e.status_to.value}"
                  if e.status_to else "")
        text += f"\n  {e.seq:>3} {e.at.isoformat()} {e.kind.value:<15} {change}"
    app.emit({"refund": refund, "events": events} if show_events else refund, text)
    sys.exit(exit_for(refund, last_outcome(gw, refund) if do_sync else None))


@main.command("resolve")
@click.option("--loop", is_flag=True, help="Keep running (a scheduler-free resolver).")
@click.option("--interval", type=click.IntRange(1, 3600), default=10, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=None)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Refunds checked at once (default: REFUND_GATEWAY_RESOLVER__CONCURRENCY,"
                   " 64), within each route and account's rate and in-flight limits.")
@pass_app
@handle_errors
def resolve_cmd(app: AppContext, loop: bool, interval: int, limit: int | None,
                concurrency: int | None) -> None:
    """Query refunds whose check is due; resend under the same number when needed.

    Due refunds are checked concurrently: a pool per route and merchant account, within
    the account's calls per second and in-flight cap (REFUND_GATEWAY_RESOLVER__LIMITS__...;
    WeChat 150/s), slowed down on its own by a 429 / FREQUENCY_LIMITED answer. With --loop
    it runs until SIGTERM or SIGINT, finishing the refunds in hand; a database or channel
    outage is logged and retried with backoff, never a reason to exit."""
    if concurrency is not None:
        settings = app.settings
        settings.resolver = settings.resolver.model_copy(update={"concurrency": concurrency})

    def emit(report: ResolveReport) -> None:
        app.emit(report, f"claimed {report.claimed}, changed {report.changed}, "
                         f"resent {report.resent}, final {report.final}, "
                         f"errors {report.errors}")

    if not loop:
        report = app.gateway.resolve_due(limit)
        emit(report)
        sys.exit(EXIT_PROBLEM if report.errors else EXIT_OK)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("resolver.signal", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    gw = _reachable_gateway(app, stop)
    if gw is not None:
        run_loop(gw, interval=interval, limit=limit, stop=stop, on_cycle=emit,
                 settings=app.settings)
    sys.exit(EXIT_OK)


def _reachable_gateway(app: AppContext, stop: threading.Event) -> RefundGateway | None:
    """The gateway once its database answers: a resolver started while the database is
    down or still starting (a host reboot brings both up at once) waits for it, with
    the resolver's own backoff up to 30 s (``gateway.resolver.Backoff``), logging each
    try, instead of exiting. None: stopped (SIGTERM) before the database answered."""
    backoff, rng = Backoff(cap=30.0), random.Random()  # noqa: S311 - jitter
    failures = 0
    while not stop.is_set():
        try:
            return app.gateway
        except StoreUnavailable as exc:
            failures += 1
            delay = backoff.delay(failures, rng)
            log.warning("resolver.store_unavailable_at_start", error=exc.message,
                        failures=failures, retry_in_seconds=round(delay, 1))
            stop.wait(delay)
    return None


@main.command("doctor")
@click.option("--warn-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="Warn about certificates that expire within this many days.")
@click.option("--route", "routes", multiple=True,
              type=click.Choice([r.value for r in Route]), help="Only this route (repeatable).")
@click.option("--account", "accounts", multiple=True,
              help="Only this merchant account (repeatable).")
@click.option("--offline", is_flag=True,
              help="Settings, keys and certificates only: no channel call.")
@click.option("--json", "doctor_json", is_flag=True, help="Machine-readable output.")
@pass_app
def doctor_cmd(app: AppContext, warn_days: int, routes: tuple[str, ...],
               accounts: tuple[str, ...], offline: bool, doctor_json: bool) -> None:
    """Check every merchant account of every route: settings complete, keys that load and
    match their certificates, certificates not expiring, and a harmless signed query of
    an unknown refund that the channel answers and that verifies.

    Exit 0 when nothing is wrong (warnings are listed), 1 when a check found a problem,
    2 when the settings cannot be read or name no such route or account."""
    from gateway import doctor  # noqa: PLC0415 - only this command

    as_json = app.as_json or doctor_json
    try:
        report = doctor.run(app.settings, warn_days=warn_days, routes=routes,
                            accounts=accounts, offline=offline)
    except ConfigurationError as exc:
        if as_json:
            click.echo(json.dumps(doctor.error_document(exc.message, EXIT_USAGE),
                                  ensure_ascii=False, indent=2))
        else:
            click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2) if as_json
               else report.table())
    sys.exit(report.exit_code)


@main.group("events")
def events_group() -> None:
    """The outbox: every refund status change, for the refund service and the relays."""


@events_group.command("list")
@click.option("--after", "cursor", type=click.IntRange(0), default=0, show_default=True,
              help="the cursor to read after (an event's cursor; 0 from the start)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@pass_app
@handle_errors
def events_list_cmd(app: AppContext, cursor: int, limit: int) -> None:
    """Status changes after a cursor, oldest first."""
    found = app.gateway.events_since(cursor, limit)
    lines = [f"{e.cursor:>8}  {e.at.astimezone(BEIJING):%Y-%m-%d %H:%M:%S}  {e.refund_id}  "
             f"{e.status_from.value if e.status_from else '-':>10} -> {e.status_to.value}"
             for e in found]
    app.emit({"events": found}, "\n".join(lines) or "no events")


@events_group.command("prune")
@click.option("--older-than-days", type=click.IntRange(1), default=None,
              help="default: the events_retention_days setting")
@pass_app
@handle_errors
def events_prune_cmd(app: AppContext, older_than_days: int | None) -> None:
    """Delete events older than the retention that every consumer has read."""
    days = older_than_days or app.settings.events_retention_days
    before = utcnow() - timedelta(days=days)
    pruned = app.gateway.store.prune_outbox(before=before)
    app.emit({"pruned": pruned, "older_than_days": days},
             f"pruned {pruned} events older than {days} days (read by every consumer)")


@main.command("calendar")
@pass_app
@handle_errors
def calendar_cmd(app: AppContext) -> None:
    """Say how far the working-day calendar reaches (holiday data, schedule file)."""
    settings = app.settings
    calendar.configure(calendar.load_schedule(settings.holiday_schedule)
                       if settings.holiday_schedule else None)
    reach = calendar.reach()
    package, schedule = reach["package"], reach["schedule_file"]
    text = (f"holiday data 节假日数据: chinese-calendar {package['first_year']}-"
            f"{package['last_year']}; schedule file 安排文件: "
            f"{schedule['path'] or 'none'} {schedule['years'] or ''}".rstrip()
            + f"\ncovered through 覆盖至: {reach['covered_through']}; after that: "
            f"{reach['fallback']}")
    app.emit(reach, text)


@main.command("reroute")
@click.argument("refund_id")
@click.option("--to", "to", type=click.Choice([r.value for r in Route]), default="balance",
              show_default=True)
@click.option("--note", default="", help="Why (kept in the refund's events).")
@pass_app
@handle_errors
def reroute_cmd(app: AppContext, refund_id: str, to: str, note: str) -> None:
    """Resolve an ABNORMAL refund through another route (default: platform balance)."""
    linked = app.gateway.reroute(refund_id, Route(to), note=note)
    app.emit(linked, describe(linked))
    sys.exit(exit_for(linked, last_outcome(app.gateway, linked)))


def run() -> None:  # pragma: no cover - console entry for `python -m gateway.cli`
    try:
        main()
    except ConfigurationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_USAGE)
