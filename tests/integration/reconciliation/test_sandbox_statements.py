"""``refund-gateway reconcile`` with no ``--statement``: the statement is downloaded through
the route's adapter (``gateway.bootstrap.build_adapters``) from the running sandbox, with
the sandbox's statement faults planted (a line missing, a line twice, an amount drifted),
against refunds made through ``RefundGateway`` with the real adapter. Each fault must come
out in its class; the untouched refund is matched."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("sandbox.pytest_plugin", reason="sandbox plugin not landed yet")

from gateway import Money, Payment, RefundRequest, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.cli import main
from gateway.clock import to_beijing
from gateway.settings import load_settings
from tests.helpers import FakeClock

ROUTES = [pytest.param(r, id=r.value) for r in Route]


def _control(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data,  # noqa: S310 - local
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local sandbox
        return json.loads(resp.read() or b"null")


@pytest.mark.parametrize("route", ROUTES)
def test_reconcile_downloads_through_the_adapter(
        route: Route, refund_sandbox: Any, sandbox_settings: Mapping[str, str],
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = {Route.BANKCARD: "unionpay"}.get(route, route.value)
    pytest.importorskip(f"sandbox.{module}", reason=f"sandbox {module} not landed")
    prefix = f"REFUND_GATEWAY_{route.value.upper()}__"
    for key, value in sandbox_settings.items():
        if key.startswith(prefix):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv(prefix + "NOTIFY_URL", raising=False)
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", sqlite_url)
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    gw = build_gateway(load_settings(), clock=clock, sleep=lambda _: None,
                       configure_logs=False)
    base = refund_sandbox.url
    refunds = []
    try:
        for i in range(4):
            doc = _control(base, "POST", "/_sandbox/payments",
                           {"route": route.value, "amount_fen": 10_000, "user_id": f"u-{i}"})
            payment = Payment(route, doc["merchant_order_no"], doc["channel_trade_no"],
                              Money(10_000), user_id=doc.get("user_id", f"u-{i}"))
            rf = gw.refund(RefundRequest(f"k{i}", payment, Money(1_000 + i), "sandbox"))
            for _ in range(20):
                if gw.get(rf.id).status.is_final:
                    break
                clock.advance(seconds=40)
                gw.resolve_due()
            rf = gw.get(rf.id)
            assert rf.status is RefundStatus.SUCCEEDED, rf
            refunds.append(rf)
    finally:
        gw.close()
    # Statement faults are taken by the refund lines in order: first missing, second
    # twice, third drifted; the fourth is exact.
    for kind in ("missing_from_statement", "duplicate_in_statement", "amount_drift"):
        _control(base, "POST", "/_sandbox/faults", {"route": route.value,
                                                    "operation": "statement", "kind": kind,
                                                    "count": 1, "drift": 7})
    day = to_beijing(refunds[0].created_at).date()
    assert all(to_beijing(r.succeeded_at).date() == day for r in refunds if r.succeeded_at)

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["reconcile", "--date", day.isoformat(), "--route",
                                       route.value, "--out", str(out), "--format", "json"])
    assert result.exit_code == 1, (result.output, repr(result.exception))
    doc = json.loads((out / f"reconciliation-{day.isoformat()}.json").read_text())
    got = {r["channel_refund_no"]: r["class"] for r in doc["rows"]}   # all but matched
    assert got == {refunds[0].channel_refund_no: "in_transit",
                   refunds[1].channel_refund_no: "duplicate",
                   refunds[2].channel_refund_no: "amount_mismatch"}, result.output
    assert doc["counts"]["matched"] == 1
    # stdout is the command's output; the run's log line goes to stderr.
    assert "reconciliation_run" not in result.stdout
    assert "reconciliation_run" in result.stderr
    drifted = next(r for r in doc["rows"] if r["channel_refund_no"] ==
                   refunds[2].channel_refund_no)
    assert (drifted["platform_amount"], drifted["statement_amount"]) == ("10.02", "10.09")
    assert doc["bad_lines"] == []
