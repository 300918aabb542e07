"""A reconciliation with every class planted (golden statements + tests/golden/
reconciliation/platform.csv) through `refund-gateway reconcile`: exit 1, each fault in its
class, four outputs written, JSON report equal to the golden file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
STATEMENTS = ["statements/alipay_trade_20240611.zip", "statements/wechat_refund_20240611.csv.gz",
              "statements/wechat_fundflow_20240611.csv", "statements/balance_20240611.csv",
              "reconciliation/unionpay_duplicate_20240611.txt"]


def test_every_planted_fault_in_its_class(tmp_path: Path) -> None:
    args = ["reconcile", "--date", "2024-06-11", "--platform-csv",
            str(GOLDEN / "reconciliation/platform.csv"), "--out", str(tmp_path / "out")]
    for s in STATEMENTS:
        args += ["--statement", str(GOLDEN / s)]
    env = {"REFUND_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}"}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1, (result.output, repr(result.exception))
    assert "unknown to platform" in result.output, (result.output, repr(result.exception))
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == [f"reconciliation-2024-06-11.{e}" for e in ("csv", "html", "json", "xlsx")]
    doc = json.loads((tmp_path / "out/reconciliation-2024-06-11.json").read_text())
    by_key = {r["channel_refund_no"]: r["class"] for r in doc["rows"]}
    assert by_key == {
        "RFA0009": "in_transit", "RFB0002": "in_transit",
        "RFA0008": "refunded_not_received", "RFW0003": "refunded_not_received",
        "RFL0001": "unknown_to_platform", "RFL0003": "unknown_to_platform",
        "RFA0003": "amount_mismatch",
        "RFB0001": "duplicate", "RFW0002": "status_mismatch"}
    assert doc["counts"]["matched"] == 3   # RFA0001, RFA0002 (cut-off), RFW0001 (2 files)
    expected = GOLDEN / "reconciliation/expected_report.json"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not expected.exists():
        expected.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    assert doc == json.loads(expected.read_text())
