"""``refund-gateway relay``: webhook and RabbitMQ relays, dead letters and replay.

Registered through the ``refund_gateway.cli`` entry points. The webhook secret comes
from the environment (``REFUND_GATEWAY_RELAY_WEBHOOK_SECRET``; several, space-separated,
the current first, while rotating), not the command line, so it stays out of process
listings. ``relay webhook`` and ``relay rabbitmq`` run until SIGTERM/SIGINT (or once,
with ``--once``).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from gateway.cli import EXIT_OK, EXIT_PROBLEM, AppContext, handle_errors, pass_app

if TYPE_CHECKING:
    from gateway.relay.webhook import WebhookRelay

SECRET_ENV = "REFUND_GATEWAY_RELAY_WEBHOOK_SECRET"  # noqa: S105 - a variable name
DEFAULT_SCHEDULE_TEXT = "1m,5m,30m,2h,1d*3"


def _gateway_closed_at_exit(app: AppContext) -> None:
    """Close the gateway (its pooled connections) when the command ends."""
    def close() -> None:
        if "gateway" in vars(app):       # built (a cached_property): close it
            app.gateway.close()

    click.get_current_context().call_on_close(close)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return stop


def _schedule(_ctx: click.Context, _param: click.Parameter, value: str
              ) -> tuple[timedelta, ...]:
    from gateway.relay.webhook import parse_schedule  # noqa: PLC0415

    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def webhook_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("--url", required=True, help="Where to POST each event."),
        click.option("--secret", "secrets", multiple=True, envvar=SECRET_ENV,
                     help=f"HMAC-SHA256 key (from ${SECRET_ENV}; several "
                                         "space-separated while rotating, current first)."),
        click.option("--name", default="webhook", show_default=True,
                     help="The relay's name: its outbox cursor and its deliveries."),
        click.option("--schedule", default=DEFAULT_SCHEDULE_TEXT, show_default=True,
                     callback=_schedule, help="Delays after each failure (s/m/h/d, *N "
                                              "repeats); then the event is a dead letter."),
        click.option("--connect-timeout", type=click.FloatRange(0.1, 60), default=5.0,
                     show_default=True),
        click.option("--timeout", "read_timeout", type=click.FloatRange(0.1, 300),
                     default=10.0, show_default=True, help="Seconds to wait for an answer."),
    ]):
        fn = option(fn)
    return fn


def _webhook(app: AppContext, url: str, secrets: Sequence[str], name: str,
             schedule: tuple[timedelta, ...], connect_timeout: float,
             read_timeout: float, batch: int = 100) -> WebhookRelay:
    from gateway.relay.webhook import WebhookRelay  # noqa: PLC0415 - only for relays

    split = [part for s in secrets for part in s.split()]
    if not split:
        raise click.UsageError(f"no signing secret: set {SECRET_ENV} (or --secret)")
    try:
        return WebhookRelay(app.gateway.store, url=url, secrets=split, name=name,
                            schedule=schedule, connect_timeout=connect_timeout,
                            read_timeout=read_timeout, batch=batch)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("relay")
def relay_group() -> None:
    """Forward refund events (the outbox) to a webhook or RabbitMQ."""


@relay_group.command("webhook")
@webhook_options
@click.option("--batch", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=1.0,
              show_default=True)
@click.option("--once", is_flag=True, help="Queue the outbox, send what is due, exit.")
@pass_app
@handle_errors
def webhook_cmd(app: AppContext, url: str, secrets: tuple[str, ...], name: str,
                schedule: tuple[timedelta, ...], connect_timeout: float,
                read_timeout: float, batch: int, poll_interval: float, once: bool) -> None:
    """POST every refund event, signed, to --url; retry with backoff; dead-letter."""
    _gateway_closed_at_exit(app)
    relay = _webhook(app, url, secrets, name, schedule, connect_timeout, read_timeout,
                     batch)
    if once:
        report = relay.run_once()
        app.emit(report, f"attempted {report.attempted}, delivered {report.delivered}, "
                         f"retrying {report.retrying}, dead {report.dead}")
        sys.exit(EXIT_OK)
    stop = _stop_on_signals()
    click.echo(f"relaying events to {url} as {relay.consumer}", err=True)
    relay.run(stop, poll_interval=poll_interval)


@relay_group.command("replay")
@webhook_options
@click.option("--event-id", "event_ids", multiple=True,
              help="An event to send again (delivered or dead); repeatable.")
@click.option("--dead", is_flag=True, help="Every dead letter.")
@pass_app
@handle_errors
def replay_cmd(app: AppContext, url: str, secrets: tuple[str, ...], name: str,
               schedule: tuple[timedelta, ...], connect_timeout: float,
               read_timeout: float, event_ids: tuple[str, ...], dead: bool) -> None:
    """Send events again now, from the start of the retry schedule."""
    _gateway_closed_at_exit(app)
    if not event_ids and not dead:
        raise click.UsageError("name --event-id ... or --dead")
    relay = _webhook(app, url, secrets, name, schedule, connect_timeout, read_timeout)
    report = relay.replay(event_ids=list(event_ids) or None, dead=dead)
    app.emit(report, f"replayed {report.attempted}: delivered {report.delivered}, "
                     f"retrying {report.retrying}, dead {report.dead}")
    sys.exit(EXIT_OK if report.attempted == report.delivered else EXIT_PROBLEM)


@relay_group.command("dead-letters")
@click.option("--name", default="webhook", show_default=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@pass_app
@handle_errors
def dead_letters_cmd(app: AppContext, name: str, limit: int) -> None:
    """Events the relay gave up on (exit 1 when there are any)."""
    _gateway_closed_at_exit(app)
    from gateway.relay.store import DEAD, RelayStore  # noqa: PLC0415

    dead = RelayStore(app.gateway.store.engine).deliveries(name, status=DEAD, limit=limit)
    lines = [f"{d.event_id}  {d.refund_id}  attempts {d.attempts}  {d.last_error or ''}"
             for d in dead]
    app.emit([{"event_id": d.event_id, "refund_id": d.refund_id, "attempts": d.attempts,
               "last_error": d.last_error, "sequence": d.cursor} for d in dead],
             "\n".join(lines) if lines else "no dead letters")
    sys.exit(EXIT_PROBLEM if dead else EXIT_OK)


@relay_group.command("attempts")
@click.argument("event_id")
@click.option("--name", default="webhook", show_default=True)
@pass_app
@handle_errors
def attempts_cmd(app: AppContext, event_id: str, name: str) -> None:
    """Every attempt made to deliver one event."""
    _gateway_closed_at_exit(app)
    from gateway.relay.store import RelayStore  # noqa: PLC0415

    relays = RelayStore(app.gateway.store.engine)
    found = relays.deliveries(name, event_ids=[event_id])
    if not found:
        raise click.BadParameter(f"no delivery of {event_id} by relay {name}")
    rows = relays.attempts(found[0].id)
    app.emit({"delivery": found[0], "attempts": rows},
             "\n".join(f"{a.attempt:>3} {a.started_at.isoformat()} {a.outcome:<13} "
                       f"{a.http_status or ''} {a.error or ''}" for a in rows)
             or "no attempt yet")


@relay_group.command("rabbitmq")
@click.option("--url", required=True, help="amqp://user:password@host:5672/vhost")
@click.option("--exchange", default="refund-gateway.events", show_default=True,
              help="A durable topic exchange (declared if missing).")
@click.option("--name", default="rabbitmq", show_default=True)
@click.option("--mandatory", is_flag=True,
              help="Treat a message no queue takes as not delivered (retried).")
@click.option("--batch", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=1.0,
              show_default=True)
@pass_app
@handle_errors
def rabbitmq_cmd(app: AppContext, url: str, exchange: str, name: str, mandatory: bool,
                 batch: int, poll_interval: float) -> None:
    """Publish every refund event to RabbitMQ (routing key refund.<route>.<status>)."""
    _gateway_closed_at_exit(app)
    from gateway.relay.rabbitmq import RabbitRelay  # noqa: PLC0415 - the rabbitmq extra

    relay = RabbitRelay(app.gateway.store, url=url, exchange=exchange, name=name,
                        mandatory=mandatory)
    stop = _stop_on_signals()
    click.echo(f"publishing events to {exchange} as {relay.consumer}", err=True)
    published = relay.run(stop, batch=batch, poll_interval=poll_interval)
    click.echo(f"published {published}", err=True)
