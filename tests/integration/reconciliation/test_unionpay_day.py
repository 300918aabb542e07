"""A bank-card reconciliation day from UnionPay's real file: the real-layout settlement ZIP
of tests/fixtures/statements/unionpay (ZM records, GBK, byte positions; README.md there)
against a platform export, through ``refund-gateway reconcile``. Every refund lands in its
class: matched (one across the 23:00 clearing cut-off, one of a single fen), an amount
mismatch, in transit, refunded but not received, a 消费撤销 unknown to the platform, and a
refund that failed on the platform and is rightly absent from the file (not refunded: no
money moved, never "matched"). The export's three-week-old refund is judged and reported
as a refund of another day."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.clock import BEIJING
from tests.unit.reconciliation.bills import PlatformRow, platform_csv

FILE = (Path(__file__).resolve().parents[2] / "fixtures" / "statements" / "unionpay"
        / "777290058110048_20240611.zip")


def _bj(month: int, day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2024, month, day, hh, mm, tzinfo=BEIJING)


PLATFORM = [
    PlatformRow("rf1", "bankcard", "ORD3001", "RFB0001", 4_500, "succeeded",
                _bj(6, 11, 10), _bj(6, 11, 10)),
    PlatformRow("rf4", "bankcard", "ORD3004", "RFB0004", 1_300, "succeeded",   # file: 12.50
                _bj(6, 11, 11, 30), _bj(6, 11, 11, 30)),
    PlatformRow("rf5", "bankcard", "ORD3005", "RFB0005", 1, "succeeded",
                _bj(6, 11, 12), _bj(6, 11, 12)),
    PlatformRow("rf6", "bankcard", "ORD3006", "RFB0006", 3_000, "succeeded",   # 06-10 23:30
                _bj(6, 10, 23, 30), _bj(6, 10, 23, 30)),
    PlatformRow("rf2", "bankcard", "ORD3002", "RFB0002", 1_000, "succeeded",   # not yet
                _bj(6, 11, 11), _bj(6, 11, 11)),
    PlatformRow("rf7", "bankcard", "ORD3007", "RFB0007", 500, "succeeded",     # 3 weeks
                _bj(5, 20, 9), _bj(5, 20, 9)),
    PlatformRow("rf3", "bankcard", "ORD3003", "RFB0003", 2_000, "failed",      # no money
                _bj(6, 11, 9), None),
]


def test_a_real_layout_bank_card_day_classifies_every_refund(tmp_path: Path) -> None:
    csv = platform_csv(PLATFORM, tmp_path / "platform.csv")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "reconcile", "--date", "2024-06-11", "--platform-csv", str(csv),
        "--statement", str(FILE), "--out", str(out), "--format", "json", "--json"],
        env={"REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}"})
    assert result.exit_code == 1, (result.output, repr(result.exception))
    doc = json.loads((out / "reconciliation-2024-06-11.json").read_text(encoding="utf-8"))
    rows = {r["channel_refund_no"]: r for r in doc["rows"]}       # all but matched
    assert {k: r["class"] for k, r in rows.items()} == {
        "RFB0004": "amount_mismatch", "RFB0002": "in_transit",
        "RFB0007": "refunded_not_received", "RVB0001": "unknown_to_platform",
        "RFB0003": "not_refunded"}
    assert doc["counts"]["matched"] == 3        # RFB0001, RFB0005, RFB0006
    # RFB0006 (06-10 23:30) is of the day by UnionPay's 23:00 cut-off; RFB0007 is not.
    (warning,) = json.loads(result.stdout)["warnings"]
    assert (warning["code"], warning["count"], warning["details"]) == (
        "platform_other_days", 1, {"by_day": {"2024-05-20": 1}})
    assert doc["bad_lines"] == []
    assert (rows["RFB0004"]["platform_amount"], rows["RFB0004"]["statement_amount"]) == (
        "13.00", "12.50")
    unknown = rows["RVB0001"]
    assert (unknown["statement_amount"], unknown["channel_refund_id"]) == (
        "20.00", "762406111300000000010")
    assert unknown["source"] == "777290058110048_20240611.zip!INN24061188ZM_777290058110048"
    assert unknown["line"] == 6
