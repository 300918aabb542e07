"""``gateway.web``: each route's genuine notification answered exactly as its channel
expects, health and readiness, and ``/metrics`` scraped after a run shows the figures
(refunds by status, channel latency, notifications by reason, unknown outcomes and the
oldest's age, resolver lag, discrepancies by class, receipts issued)."""

from __future__ import annotations

from datetime import date

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, inspect
from starlette.testclient import TestClient

from gateway import RefundGateway, RefundStatus, Route
from gateway.web import create_app
from reconciliation.schema import recon_items, recon_runs
from tests.helpers import FakeClock
from tests.integration.web.conftest import NOTIFYING, Sandbox, ask

S = RefundStatus


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(figures: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return figures.get((name, tuple(sorted(labels.items()))))


def test_every_route_notification_is_answered_as_its_channel_expects(
        gw: RefundGateway, sandbox: Sandbox) -> None:
    client = TestClient(create_app(gw, metrics_cache_seconds=0))
    accepted: dict[Route, int] = dict.fromkeys(NOTIFYING, 0)
    for route in NOTIFYING:
        refund = gw.refund(ask(sandbox.payment(route)))
        notes = sandbox.notifications(route, refund.channel_refund_no)
        expected = gw.adapters[route].notification_ack(True)
        for note in notes:
            r = client.post(f"/notify/{route.value}", content=note.body, headers=note.headers)
            assert (r.status_code, r.content, r.headers.get("content-type")) == (
                expected.http_status, expected.body, expected.content_type), route
            accepted[route] += 1
        assert gw.get(refund.id).status is S.SUCCEEDED, route
        # the same notification again: acknowledged or refused, never applied twice
        changes = len(gw.events_since(0, 1000))
        again = client.post(f"/notify/{route.value}", content=notes[0].body,
                            headers=notes[0].headers)
        assert len(gw.events_since(0, 1000)) == changes
        accepted[route] += again.status_code == expected.http_status

        forged = bytearray(notes[0].body)
        forged[len(forged) // 2] ^= 0x01
        r = client.post(f"/notify/{route.value}", content=bytes(forged),
                        headers=notes[0].headers)
        refused = gw.adapters[route].notification_ack(False)
        assert (r.status_code, r.content) == (refused.http_status, refused.body), route

    assert client.post("/notify/paypal", content=b"{}").status_code == 404
    assert client.post("/notify/balance", content=b"{}").status_code == 404   # sends none
    assert client.post("/notify/wechatpay", content=b"x" * (2 << 20)).status_code == 413
    figures = scrape(client)
    name = "refund_gateway_notifications_total"
    for route in NOTIFYING:
        assert value(figures, name, route=route.value, result="accepted",
                     reason="accepted") == accepted[route], route
        assert value(figures, name, route=route.value, result="rejected",
                     reason="signature_invalid") == 1, (route, sorted(
                         k for k in figures if k[0] == name))
    assert value(figures, name, route="unknown", result="rejected",
                 reason="unknown_route") == 1
    assert value(figures, name, route="balance", result="rejected",
                 reason="route_sends_none") == 1


def test_health_and_readiness(gw: RefundGateway) -> None:
    client = TestClient(create_app(gw, metrics_cache_seconds=0))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    # a store that does not answer (nothing listens on port 9): not ready, and /metrics
    # still answers, saying so
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                         connect_args={"connect_timeout": 2})
    live = gw.store.engine
    gw.store.engine = dead
    try:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert client.get("/healthz").status_code == 200
        assert value(scrape(client), "refund_gateway_store_up") == 0
    finally:
        gw.store.engine = live
    assert client.get("/readyz").status_code == 200


def test_metrics_after_a_run(gw: RefundGateway, sandbox: Sandbox, clock: FakeClock) -> None:
    client = TestClient(create_app(gw, metrics_cache_seconds=0))
    settled = {}
    for route in (*NOTIFYING, Route.BALANCE):
        refund = gw.refund(ask(sandbox.payment(route)))
        if route is not Route.BALANCE:
            for note in sandbox.notifications(route, refund.channel_refund_no):
                client.post(f"/notify/{route.value}", content=note.body, headers=note.headers)
        settled[route] = gw.get(refund.id).status
    assert set(settled.values()) == {S.SUCCEEDED}, settled
    # one whose answer never came (a read timeout: outcome unknown)
    sandbox.fault(Route.BANKCARD, "refund", "timeout_after_commit", stall_seconds=3)
    unknown = gw.refund(ask(sandbox.payment(Route.BANKCARD), key="k-unknown"))
    assert unknown.status is S.PROCESSING
    clock.advance(minutes=10)

    figures = scrape(client)
    for route in (*NOTIFYING, Route.BALANCE):
        assert value(figures, "refund_gateway_refunds", route=route.value, account="default",
                     status="succeeded") == 1, route
    assert value(figures, "refund_gateway_refunds", route="bankcard", account="default",
                 status="processing") == 1
    assert value(figures, "refund_gateway_unknown_outcomes", route="bankcard") == 1
    assert value(figures, "refund_gateway_unknown_outcomes", route="wechatpay") == 0
    age = value(figures, "refund_gateway_unknown_outcome_oldest_age_seconds")
    assert age is not None and 599 <= age <= 601
    assert value(figures, "refund_gateway_resolver_due_checks") == 1
    lag = value(figures, "refund_gateway_resolver_lag_seconds")
    assert lag is not None and 0 < lag < 600
    assert value(figures, "refund_gateway_paid_after_release_refunds") == 0
    count = "refund_gateway_channel_call_seconds_count"
    assert value(figures, count, route="bankcard", operation="submit",
                 outcome="OutcomeUnknown") == 1
    assert value(figures, count, route="balance", operation="submit",
                 outcome="succeeded") == 1
    calls = sum(v for (n, labels), v in figures.items() if n == count)
    attempts = sum(len(gw.store.attempts(r.id)) for r in gw.store.list_refunds())
    assert calls == attempts     # every channel call observed, once
    refunds = sum(v for (n, labels), v in figures.items()
                  if n == "refund_gateway_operation_seconds_count"
                  and ("operation", "refund") in labels)
    assert refunds == 5

    # the reconciliation's open discrepancies, and receipts issued, as the store has them
    engine = gw.store.engine
    with engine.begin() as conn:
        run = conn.execute(recon_runs.insert().values(
            run_date=date(2026, 11, 20), routes="wechatpay", started_at=clock(),
            platform_source="store", statements="[]", totals="{}", bad_lines="[]",
            outcome="discrepancies")).inserted_primary_key[0]
        for n, (klass, state) in enumerate([("paid_twice", "open"),
                                            ("amount_mismatch", "open"),
                                            ("amount_mismatch", "open"),
                                            ("duplicate", "resolved")]):
            conn.execute(recon_items.insert().values(
                route="wechatpay", item_key=f"K{n}", **{"class": klass}, state=state,
                currency="CNY", first_seen_run=run, last_seen_run=run))
    if "receipt_versions" not in inspect(engine).get_table_names():
        Table("receipt_versions", MetaData(), Column("id", Integer, primary_key=True)
              ).create(engine)
    with engine.begin() as conn:
        receipts = Table("receipt_versions", MetaData(), autoload_with=conn)
        before = conn.execute(receipts.select()).all()
    figures = scrape(client)
    assert value(figures, "refund_gateway_discrepancies_open", **{"class": "paid_twice"}) == 1
    assert value(figures, "refund_gateway_discrepancies_open",
                 **{"class": "amount_mismatch"}) == 2
    assert value(figures, "refund_gateway_discrepancies_open", **{"class": "duplicate"}) is None
    assert value(figures, "refund_gateway_receipts_issued_total") == len(before)
