"""``refund-gateway serve``: the web app (``gateway.web``) under uvicorn.

Registered through the ``refund_gateway.cli`` entry points, so the core CLI does not
need the ``web`` extra. Runs until SIGTERM/SIGINT (uvicorn finishes the requests in
hand, then the gateway is closed).
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from gateway.cli import EXIT_OK, AppContext, handle_errors, pass_app
from gateway.resolver import run_loop


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="uvicorn's line per request (the gateway logs notifications itself).")
@click.option("--metrics-cache", type=click.FloatRange(0, 300), default=5.0,
              show_default=True, help="Seconds one read of the store's figures serves "
                                      "scrapes of /metrics.")
@click.option("--resolve", "resolve_every", type=click.IntRange(1, 3600), default=None,
              metavar="SECONDS", help="Also run the resolver in this process, a cycle "
              "every SECONDS (its channel calls then show in /metrics).")
@pass_app
@handle_errors
def serve_command(app: AppContext, host: str, port: int, access_log: bool,
                  metrics_cache: float, resolve_every: int | None) -> None:
    """Serve /notify/{route}, /healthz, /readyz and /metrics (until SIGTERM: exit 0)."""
    import uvicorn  # noqa: PLC0415 - the web extra, only for this command

    from gateway.web import create_app  # noqa: PLC0415

    web = create_app(app.gateway, metrics_cache_seconds=metrics_cache)
    stop_resolver = threading.Event()
    resolver: threading.Thread | None = None
    if resolve_every is not None:
        resolver = threading.Thread(target=run_loop, args=(app.gateway,), kwargs={
            "interval": resolve_every, "stop": stop_resolver, "settings": app.settings},
            name="resolver", daemon=True)
        resolver.start()
    click.echo(f"serving on http://{host}:{port} (notifications at /notify/<route>)",
               err=True)
    # uvicorn handles SIGTERM/SIGINT itself (finishing the requests in hand), then raises
    # the signal again to the handler it found: this one, so the command ends with 0.
    stopped: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stopped.append(number))
    try:
        uvicorn.run(web, host=host, port=port, log_config=None, access_log=access_log,
                    lifespan="on", server_header=False)
    finally:
        stop_resolver.set()          # the resolver finishes the refund in hand
        if resolver is not None:
            resolver.join(timeout=60)
        app.gateway.close()
    click.echo(f"stopped ({', '.join(signal.Signals(n).name for n in stopped) or 'done'})",
               err=True)
    sys.exit(EXIT_OK)
