"""Property: a statement generated from a set of platform refunds with known mutations
(drop, duplicate, change amount, change status on either side, add unknown) is classified
exactly as mutated. The statements are real-format bytes (WeChat REFUND bill, Alipay GBK
detail file) read by the real parsers; the platform side is the CSV export. Partial refunds
of one order share the order number, so a match by order or amount would show up here."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import BEIJING
from gateway.models import Route
from reconciliation.job import reconcile
from reconciliation.matching import Klass
from reconciliation.platform import from_csv
from reconciliation.statements import Source
from tests.unit.reconciliation.bills import (
    Line,
    PlatformRow,
    alipay_detail,
    platform_csv,
    wechat_refund_bill,
)

DAY = date(2024, 6, 11)            # a Tuesday; the statement day
FRESH = datetime.combine(DAY, time(9, 30), BEIJING)
STALE = FRESH - timedelta(days=20)  # past every route's arrival window

MUTATIONS = ["none", "drop", "duplicate", "amount", "channel_status", "platform_status"]


@dataclass(frozen=True)
class Case:
    route: Route
    order: int
    amount: int
    stale: bool
    mutation: str
    delta: int
    channel_word: str


def _expected(c: Case) -> Klass:
    return {
        "none": Klass.MATCHED,
        "drop": Klass.NOT_RECEIVED if c.stale else Klass.IN_TRANSIT,
        "duplicate": Klass.DUPLICATE,
        "amount": Klass.AMOUNT,
        "channel_status": Klass.NOT_RECEIVED,   # platform succeeded, channel closed/abnormal
        "platform_status": Klass.STATUS,        # platform failed, channel succeeded
    }[c.mutation]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    route = draw(st.sampled_from([Route.ALIPAY, Route.WECHATPAY]))
    # The Alipay trade bill lists completed refunds only: no channel status to change.
    muts = [m for m in MUTATIONS if not (route is Route.ALIPAY and m == "channel_status")]
    return Case(route=route, order=draw(st.integers(0, 3)),
                amount=draw(st.integers(1, 5_000_000)), stale=draw(st.booleans()),
                mutation=draw(st.sampled_from(muts)),
                delta=draw(st.sampled_from([-1, 1, 100, 99_999])),
                channel_word=draw(st.sampled_from(["CLOSED", "ABNORMAL"])))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cases(), min_size=1, max_size=10), st.integers(0, 3))
def test_statement_is_classified_exactly_as_mutated(refunds: list[Case], unknown: int
                                                    ) -> None:
    platform: list[PlatformRow] = []
    lines: dict[Route, list[Line]] = {Route.ALIPAY: [], Route.WECHATPAY: []}
    expected: dict[tuple[str, str], Klass] = {}
    for i, c in enumerate(refunds):
        no = f"RF{i:04d}"
        order = f"ORD{c.order}"
        at = STALE if c.stale else FRESH
        failed = c.mutation == "platform_status"
        platform.append(PlatformRow(f"rf{i}", c.route.value, order, no, c.amount,
                                    "failed" if failed else "succeeded", at,
                                    None if failed else at))
        expected[(c.route.value, no)] = _expected(c)
        if c.mutation == "drop":
            continue
        amount = c.amount + c.delta if c.mutation == "amount" else c.amount
        if amount <= 0:
            amount = c.amount + 1
        word = c.channel_word if c.mutation == "channel_status" else "SUCCESS"
        line = Line(no, order, amount, word, at=FRESH)      # listed on the statement day
        lines[c.route] += [line, line] if c.mutation == "duplicate" else [line]
    for j in range(unknown):
        route = [Route.ALIPAY, Route.WECHATPAY][j % 2]
        lines[route].append(Line(f"UNK{j}", "ORD0", 100 + j, at=FRESH))
        expected[(route.value, f"UNK{j}")] = Klass.UNKNOWN

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = platform_csv(platform, Path(tmp) / "platform.csv")
        plat = from_csv(csv_path)
        result = reconcile(
            run_date=DAY, routes=[Route.ALIPAY, Route.WECHATPAY],
            statements=[Source.of(alipay_detail(lines[Route.ALIPAY]), "alipay.csv"),
                        Source.of(wechat_refund_bill(lines[Route.WECHATPAY]), "wx.csv")],
            platform=lambda _carried: plat, platform_source="csv", engine=None)
    got = {(r["route"], r["channel_refund_no"]): Klass(r["class"])
           for r in result.rows.iter_rows(named=True)}
    assert result.bad_lines == []
    assert got == expected
    # Old refunds in the day's export are judged, and reported as refunds of other days.
    stale = sum(c.stale for c in refunds)
    assert [(w.code, w.count) for w in result.warnings] == (
        [("platform_other_days", stale)] if stale else [])
    assert result.has_discrepancies == (any(k.is_discrepancy for k in expected.values())
                                        or stale > 0)
