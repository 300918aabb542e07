"""Tracing through the OpenTelemetry API (the SDK's in-memory exporter reads the spans):
a span per refund operation with a child per channel call, each with route, operation
and outcome; an unknown outcome marks the channel span as an error; log lines written
inside carry the span's trace id. Metrics and tracing stacked on one gateway each
observe every call once, notification reasons included."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import RefundGateway, RefundStatus, Route, tracing
from gateway import metrics as gateway_metrics
from gateway.bootstrap import build_gateway
from gateway.logging import configure_logging
from gateway.models import ChannelStatus
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def gw(sqlite_url: str, channel: FakeChannel) -> Iterator[RefundGateway]:
    g = build_gateway(load_settings(database_url=sqlite_url), clock=FakeClock(),
                      sleep=lambda _: None, configure_logs=False,
                      adapters={Route.WECHATPAY: channel, Route.BALANCE: FakeBalance(Ledger())})
    yield g
    g.close()


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_spans_per_operation_and_channel_call(
        gw: RefundGateway, channel: FakeChannel,
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    tracing.instrument(gw, provider)
    tracing.instrument(gw, provider)          # twice: traced once
    lines = io.StringIO()
    configure_logging("json", "INFO", stream=lines)
    try:
        refund = gw.refund(request("k1"))
        channel.ledger.status[refund.channel_refund_no] = ChannelStatus.SUCCEEDED
        assert gw.sync(refund.id).status is RefundStatus.SUCCEEDED
        channel.submit_script = ["timeout_after_commit"]
        unknown = gw.refund(request("k2", order="ORD2"))
    finally:
        configure_logging("console", "WARNING")
    assert unknown.status is RefundStatus.PROCESSING
    finished = exporter.get_finished_spans()
    names = [s.name for s in finished]
    assert names == ["channel wechatpay submit", "refund_gateway refund",
                     "channel wechatpay query", "refund_gateway sync",
                     "channel wechatpay submit", "refund_gateway refund"]
    attrs = [dict(s.attributes or {}) for s in finished]
    assert attrs[0]["refund_gateway.outcome"] == "processing"
    assert attrs[1] == {"refund_gateway.operation": "refund", "refund_gateway.kind": "operation",
                        "refund_gateway.route": "wechatpay", "refund_gateway.outcome": "processing",
                        "refund_gateway.refund_id": refund.id}
    assert attrs[2]["refund_gateway.operation"] == "query"
    assert attrs[3]["refund_gateway.outcome"] == "succeeded"
    # each channel call is a child of its operation, in the same trace
    for child, parent in ((0, 1), (2, 3), (4, 5)):
        assert finished[child].parent is not None
        assert finished[child].parent.span_id == finished[parent].context.span_id
        assert finished[child].context.trace_id == finished[parent].context.trace_id
    # unknown is an error on the channel call, not on the refund (it is stored, followed)
    assert attrs[4]["refund_gateway.outcome"] == "OutcomeUnknown"
    assert finished[4].status.status_code is StatusCode.ERROR
    assert finished[4].events and finished[4].events[0].name == "exception"
    assert finished[5].status.status_code is StatusCode.UNSET
    # log lines inside a span carry its trace id
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    reserved = [e for e in logged if e["event"] == "refund.reserved"]
    assert [e["trace_id"] for e in reserved] == [
        format(finished[i].context.trace_id, "032x") for i in (1, 5)]
    error = next(e for e in logged if e["event"] == "channel.error")
    assert error["trace_id"] == format(finished[5].context.trace_id, "032x")
    assert error["span_id"] == format(finished[5].context.span_id, "016x")
    outside = [e for e in logged if "trace_id" not in e]
    assert all(not e["event"].startswith("refund.") for e in outside)


def test_metrics_and_tracing_stacked_count_notifications_by_reason(
        gw: RefundGateway, channel: FakeChannel,
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    metrics = gateway_metrics.instrument(gw, cache_seconds=0)
    tracing.instrument(gw, provider)
    gateway_metrics.instrument(gw, metrics)      # again: observed once
    refund = gw.refund(request("k1"))
    body = f"{refund.channel_refund_no}:succeeded:2500".encode()
    good = {"x-signature": "good", "x-nonce": "n1"}
    assert gw.handle_notification(Route.WECHATPAY, good, body).accepted
    assert not gw.handle_notification(Route.WECHATPAY, good, body).accepted      # replayed
    assert not gw.handle_notification(Route.WECHATPAY, {"x-signature": "bad"},
                                      body).accepted
    assert not gw.handle_notification(Route.WECHATPAY, {"x-signature": "good",
                                                        "x-nonce": "n2"},
                                      b"NOSUCHREFUND:succeeded:1").accepted
    assert not gw.handle_notification("paypal", {}, b"").accepted
    assert not gw.handle_notification(Route.BALANCE, {}, b"").accepted
    text = generate_latest(metrics.registry).decode()
    counted = {(s.labels["route"], s.labels["result"], s.labels["reason"]): s.value
               for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "refund_gateway_notifications_total"}
    assert counted == {("wechatpay", "accepted", "accepted"): 1,
                       ("wechatpay", "rejected", "replayed"): 1,
                       ("wechatpay", "rejected", "unknown_refund"): 1,
                       ("wechatpay", "rejected", "signature_invalid"): 1,
                       ("unknown", "rejected", "unknown_route"): 1,
                       ("balance", "rejected", "route_sends_none"): 1}
    notified = [s for s in exporter.get_finished_spans()
                if s.name == "refund_gateway handle_notification"]
    assert [dict(s.attributes or {}).get("refund_gateway.reason") for s in notified] == [
        "accepted", "replayed", "signature_invalid", "unknown_refund", "unknown_route",
        "route_sends_none"]
