"""docs/operations/: the alert rules and the Grafana dashboard ask only for what
``/metrics`` really exposes (every metric, every label a matcher or a grouping names,
every value a matcher wants is one the gateway produces), and the alerts the issue asks
for are there with their thresholds: an unknown outcome older than an hour, paid twice
above zero, notifications failing verification."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Column, Integer, MetaData, Table, inspect
from starlette.testclient import TestClient

from gateway import RefundGateway, Route
from gateway.bootstrap import build_gateway
from gateway.relay.payload import event_body
from gateway.relay.store import DEAD, DELIVERED, PENDING, RelayStore
from gateway.settings import load_settings
from gateway.web import create_app
from reconciliation.matching import Klass
from reconciliation.schema import recon_items, recon_runs
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request

DOCS = Path(__file__).resolve().parents[3] / "docs" / "operations"
METRIC = re.compile(r"\b(refund_gateway_[a-z_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# label values the gateway can produce that a short run may not show
POSSIBLE = {
    "reason": {"accepted", "signature_invalid", "unreadable", "refused", "unknown_route",
               "route_sends_none", "store_unavailable", "replayed", "unknown_refund",
               "amount_mismatch", "account_mismatch", "duplicate"},
    "result": {"accepted", "rejected"},
    "class": {k.value for k in Klass},
    "status": {PENDING, DELIVERED, DEAD} | {"pending", "processing", "succeeded", "failed",
                                            "closed", "abnormal", "rerouted"},
}


@pytest.fixture
def scrape(sqlite_url: str) -> Iterator[dict[str, set[str]]]:
    """Metric sample name -> label names, after a short run that touches every figure."""
    channel = FakeChannel()
    gw: RefundGateway = build_gateway(
        load_settings(database_url=sqlite_url), clock=FakeClock(), sleep=lambda _: None,
        configure_logs=False,
        adapters={Route.WECHATPAY: channel, Route.BALANCE: FakeBalance(Ledger())})
    client = TestClient(create_app(gw, metrics_cache_seconds=0))
    refund = gw.refund(request("k1"))
    body = f"{refund.channel_refund_no}:succeeded:2500".encode()
    client.post("/notify/wechatpay", content=body, headers={"x-signature": "good"})
    client.post("/notify/wechatpay", content=body, headers={"x-signature": "forged"})
    engine = gw.store.engine
    with engine.begin() as conn:
        run = conn.execute(recon_runs.insert().values(
            run_date=date(2026, 11, 20), routes="wechatpay", started_at=FakeClock()(),
            platform_source="store", statements="[]", totals="{}", bad_lines="[]",
            outcome="discrepancies")).inserted_primary_key[0]
        conn.execute(recon_items.insert().values(
            route="wechatpay", item_key="K1", **{"class": "paid_twice"}, state="open",
            currency="CNY", first_seen_run=run, last_seen_run=run))
    if "receipt_versions" not in inspect(engine).get_table_names():
        Table("receipt_versions", MetaData(), Column("id", Integer, primary_key=True)
              ).create(engine)
    events = gw.events_since(0, 10)
    RelayStore(engine).enqueue("webhook", [(e, event_body(e)) for e in events],
                               now=FakeClock()())
    families = text_string_to_metric_families(client.get("/metrics").text)
    found: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    yield found
    gw.close()


def expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text(encoding="utf-8"))
    out = [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    out += [(f"panel {p['title']}", t["expr"]) for p in dashboard["panels"]
            for t in p["targets"]]
    return out


def test_every_expression_asks_for_what_metrics_expose(scrape: dict[str, set[str]]) -> None:
    problems = []
    for where, expr in expressions():
        names = METRIC.findall(expr)
        assert names, f"{where}: no refund_gateway metric in {expr!r}"
        for name, selector in names:
            if name not in scrape:
                problems.append(f"{where}: {name} is not exposed")
                continue
            labels = scrape[name] - {"le"} if not name.endswith("_bucket") else scrape[name]
            for label, op, value in MATCHER.findall(selector or ""):
                if label not in labels:
                    problems.append(f"{where}: {name} has no label {label}")
                elif op == "=" and value not in POSSIBLE.get(label, {value}):
                    problems.append(f"{where}: {label}={value!r} never produced")
                elif op == "=~" and not set(value.split("|")) <= POSSIBLE.get(
                        label, set(value.split("|"))):
                    problems.append(f"{where}: {label}=~{value!r} names unknown values")
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                if not any(label in scrape[n] for n, _ in names if n in scrape):
                    problems.append(f"{where}: groups by {label}, which no metric has")
    assert problems == []


def test_the_alerts_the_issue_asks_for() -> None:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text(encoding="utf-8"))
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for rule in by_name.values():
        assert rule["labels"]["severity"] in ("page", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    unknown = by_name["RefundOutcomeUnknownOverAnHour"]["expr"]
    assert "refund_gateway_unknown_outcome_oldest_age_seconds" in unknown
    assert unknown.strip().endswith("> 3600")
    paid = by_name["RefundPaidTwice"]["expr"]
    assert "refund_gateway_paid_after_release_refunds" in paid and "> 0" in paid
    failing = by_name["RefundNotificationsFailingVerification"]["expr"]
    assert "signature_invalid" in failing and "refund_gateway_notifications_total" in failing
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "refund-gateway"
