"""Tracing through the OpenTelemetry API (the optional ``otel`` extra).

``instrument(gateway)`` opens a span per refund operation (``refund``, ``sync``,
``reroute``, ``handle_notification``, ``resolve_due``) and, inside it, one per channel
call (``submit``, ``query``, ``abnormal_refund``, ``statement``), each with the route,
the operation and the outcome (the refund's status, the channel's status, or the error
class, which also marks the span as an error). Only the API is used: the application
installs the SDK and an exporter (or none, and the spans cost nothing).
``add_trace_context`` is the structlog processor ``gateway.logging`` installs, so every
log line written inside a span carries ``trace_id`` and ``span_id``.
This module must not require the SDK, nor OpenTelemetry at all until ``instrument``.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from gateway.errors import ConfigurationError
from gateway.instrument import Call, Observer, observe_gateway
from gateway.service import RefundGateway

try:
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    otel_trace = None  # type: ignore[assignment]

TRACER_NAME = "refund_gateway"
ATTR = "refund_gateway"   # attribute namespace: refund_gateway.route, .operation, ...


def add_trace_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]
                      ) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids (W3C hex), when there is one."""
    if otel_trace is not None:
        context = otel_trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def available() -> bool:
    """Whether the OpenTelemetry API is installed."""
    return otel_trace is not None


def _tracer(provider: Any) -> Any:
    if otel_trace is None:
        raise ConfigurationError("tracing needs the OpenTelemetry API: pip install "
                                 "'refund-gateway[otel]'")
    return otel_trace.get_tracer(TRACER_NAME, tracer_provider=provider)


def observer(tracer: Any) -> Observer:
    """An ``gateway.instrument`` observer that wraps each call in a span."""
    from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

    @contextmanager
    def observe(call: Call) -> Iterator[None]:
        channel = call.kind == "channel"
        name = (f"channel {call.route} {call.operation}" if channel
                else f"refund_gateway {call.operation}")
        attributes = {f"{ATTR}.operation": call.operation, f"{ATTR}.kind": call.kind}
        if call.route:
            attributes[f"{ATTR}.route"] = call.route
        with tracer.start_as_current_span(
                name, kind=SpanKind.CLIENT if channel else SpanKind.INTERNAL,
                attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                yield
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                span.set_attribute(f"{ATTR}.outcome", call.outcome)
                if call.route:
                    span.set_attribute(f"{ATTR}.route", call.route)
                if call.refund_id:
                    span.set_attribute(f"{ATTR}.refund_id", call.refund_id)
                if call.reason:
                    span.set_attribute(f"{ATTR}.reason", call.reason)

    return observe


def instrument(gateway: RefundGateway, tracer_provider: Any = None) -> None:
    """Trace ``gateway``'s operations and channel calls (through ``tracer_provider``,
    default the global one). Instrumenting twice with one provider traces once."""
    tracer = _tracer(tracer_provider)
    observe_gateway(gateway, observer(tracer),
                    marker=f"_traced_by_{id(tracer_provider) if tracer_provider else 0}")
