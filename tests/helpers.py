"""Small builders shared by tests."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.models import Payment, RefundRequest, Route
from gateway.money import Money
from reconciliation.matching import Klass

if TYPE_CHECKING:
    from reconciliation.job import RunResult


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def payment(order: str = "ORD1", paid: int = 10_000, route: Route = Route.WECHATPAY,
            user_id: str | None = "u-1") -> Payment:
    return Payment(route=route, merchant_order_no=order, channel_trade_no=f"T{order}",
                   amount=Money(paid), user_id=user_id)


def request(key: str = "k1", amount: int = 2_500, order: str = "ORD1", paid: int = 10_000,
            route: Route = Route.WECHATPAY, reason: str = "goods not delivered"
            ) -> RefundRequest:
    return RefundRequest(idempotency_key=key, payment=payment(order, paid, route),
                         amount=Money(amount), reason=reason)


_SUMMARY_HEADER = re.compile(r"^class\s{2,}count$")
_SUMMARY_ROW = re.compile(r"^(?P<label>\S.*?)\s{2,}(?P<count>\d+)$")


def printed_summaries(output: str) -> list[dict[str, int]]:
    """The class-count tables ``refund-gateway reconcile`` printed, in order, each as
    {class value: count} (the JSON report's ``counts`` keys)."""
    by_label = {k.label: k.value for k in Klass}
    tables: list[dict[str, int]] = []
    rows: dict[str, int] | None = None
    for line in output.splitlines():
        if _SUMMARY_HEADER.match(line):
            rows = {}
            tables.append(rows)
            continue
        row = _SUMMARY_ROW.match(line) if rows is not None else None
        if rows is None or row is None or row["label"] not in by_label:
            rows = None
            continue
        rows[by_label[row["label"]]] = int(row["count"])
    return tables


def records_csv(result: RunResult) -> bytes:
    """The CSV report as the per-row ``reports.records`` rendering gives it: the reference
    the columnar ``write_csv`` must equal byte for byte (formulas neutralised)."""
    from reconciliation.reports import COLUMNS, neutralise, records

    ref = io.StringIO()
    w = csv.writer(ref, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for rec in records(result):
        w.writerow([neutralise(v) if isinstance(v, str) and c not in
                    ("platform_amount", "statement_amount") else ("" if v is None else v)
                    for c, v in rec.items()])
    return ("\ufeff" + ref.getvalue()).encode()


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 5 ms until it holds; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what or predicate}")
        time.sleep(0.005)
