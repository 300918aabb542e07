"""A ready ASGI app (Starlette, the ``web`` extra): what a deployment serves.

* ``POST /notify/{route}``: a channel's notification, handed raw to
  ``RefundGateway.handle_notification``; the answer is exactly its ``NotificationAck``
  (status, body, content type), which is what that channel expects (Alipay ``success``,
  WeChat 204, UnionPay 200; a refusal the channel redelivers).
* ``GET /healthz``: the process answers (liveness).
* ``GET /readyz``: the store answers a read of the refunds table (readiness); 503 when
  it does not.
* ``GET /metrics``: Prometheus text (``gateway.metrics``: this process's observations and
  the store's figures).

``create_app(gateway)`` instruments the gateway for metrics (and tracing, when the
OpenTelemetry API is installed). The gateway's calls block (database, channel), so they
run in the thread pool, never on the event loop. Business rules stay in the service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from gateway import tracing as otel
from gateway.metrics import GatewayMetrics, instrument
from gateway.service import RefundGateway
from gateway.store.schema import refunds

log = structlog.get_logger("gateway.web")

# A notification is a few KB; anything far larger is not one (and is not read whole).
MAX_NOTIFICATION_BYTES = 1 << 20


def _store_answers(gateway: RefundGateway) -> None:
    with gateway.store.engine.connect() as conn:
        conn.execute(select(refunds.c.id).limit(1)).all()


def create_app(gateway: RefundGateway, *, metrics: GatewayMetrics | None = None,
               tracing: bool | None = None, close_gateway: bool = False,
               metrics_cache_seconds: float = 5.0) -> Starlette:
    """The app for ``gateway``. ``metrics``: where to observe (a new registry by
    default); ``tracing``: spans through the OpenTelemetry API (default: when it is
    installed); ``close_gateway``: close it when the app shuts down (``serve`` does)."""
    metrics = instrument(gateway, metrics, cache_seconds=metrics_cache_seconds)
    if tracing or (tracing is None and otel.available()):
        otel.instrument(gateway)    # without the API: ConfigurationError naming the extra
    registry = metrics.registry

    async def notify(request: Request) -> Response:
        route = request.path_params["route"]
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and \
                int(declared) > MAX_NOTIFICATION_BYTES:
            return Response(b"too large", status_code=413, media_type="text/plain")
        body = await request.body()
        if len(body) > MAX_NOTIFICATION_BYTES:
            return Response(b"too large", status_code=413, media_type="text/plain")
        ack = await run_in_threadpool(gateway.handle_notification, route,
                                      dict(request.headers), body)
        # The ack's content type as it is (Starlette would add a charset to text/plain)
        return Response(ack.body, status_code=ack.http_status,
                        headers={"content-type": ack.content_type})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            await run_in_threadpool(_store_answers, gateway)
        except Exception as exc:  # any failure to read means "not ready", said plainly
            log.warning("web.not_ready", error=type(exc).__name__, message=str(exc)[:200])
            return JSONResponse({"status": "unavailable", "store": type(exc).__name__},
                                status_code=503)
        return JSONResponse({"status": "ready", "store": "ok"})

    async def metrics_endpoint(_: Request) -> Response:
        text = await run_in_threadpool(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if close_gateway:
            await run_in_threadpool(gateway.close)

    routes: list[HttpRoute] = [
        HttpRoute("/notify/{route}", notify, methods=["POST"]),
        HttpRoute("/healthz", healthz, methods=["GET"]),
        HttpRoute("/readyz", readyz, methods=["GET"]),
        HttpRoute("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)

__all__ = ["MAX_NOTIFICATION_BYTES", "create_app"]
