"""A big run (hash buckets on disk) with a store classifies as a small one: the store's
lookup of statement lines missing from the day's platform side, the open items judged
from what they stored, the carried lines and the open duplicates, bucket by bucket."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from gateway.clock import BEIJING
from gateway.models import Route
from gateway.store import make_engine, upgrade
from reconciliation import job
from reconciliation.platform import from_csv_parts
from reconciliation.statements import Source
from tests.unit.reconciliation.bills import Line, PlatformRow, platform_csv, wechat_refund_bill

DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 26)


def _at(day: date, hh: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, tzinfo=BEIJING)


def _days(tmp: Path, partition_rows: int, monkeypatch: pytest.MonkeyPatch
          ) -> dict[str, str]:
    monkeypatch.setattr(job, "PARTITION_ROWS", partition_rows)
    engine = make_engine(f"sqlite:///{tmp / 'g.db'}")
    upgrade(engine)
    try:
        day1 = [PlatformRow(f"rf{i}", "wechatpay", f"O{i}", f"RF{i}", 1_000 + i, "succeeded",
                            _at(DAY1, 9), _at(DAY1, 9)) for i in range(40)]
        lines1 = [Line(f"RF{i}", f"O{i}", 1_000 + i, at=_at(DAY1, 10)) for i in range(30)]
        lines1 += [Line("RF30", "O30", 5, at=_at(DAY1, 10))]            # amount mismatch
        lines1 += [Line("RF31", "O31", 1_031, at=_at(DAY1, 10))] * 2    # listed twice
        day2 = [PlatformRow("rfX", "wechatpay", "OX", "RFX", 700, "succeeded", _at(DAY2, 9),
                            _at(DAY2, 9))]
        lines2 = [Line("RFX", "OX", 700, at=_at(DAY2, 10)),
                  Line("RF3", "O3", 1_003, at=_at(DAY2, 10)),            # matched on day 1
                  Line("RF32", "O32", 1_032, at=_at(DAY2, 10))]          # late: closes it
        for day, rows, lines in ((DAY1, day1, lines1), (DAY2, day2, lines2)):
            export = platform_csv(rows, tmp / f"p-{day}-{partition_rows}.csv")
            with job.reconcile(run_date=day, routes=[Route.WECHATPAY],
                               statements=[Source.of(wechat_refund_bill(lines), "wx.csv")],
                               platform=lambda _c, e=export: from_csv_parts(e),
                               platform_source="csv", engine=engine,
                               spill_dir=tmp) as result:
                last = result.rows
        return dict(last.select("channel_refund_no", pl.col("class").cast(pl.String))
                    .iter_rows())
    finally:
        engine.dispose()


def test_bucketed_run_with_a_store_matches_the_whole(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("whole", "spill"):
        (tmp_path / name).mkdir()
    whole = _days(tmp_path / "whole", 1_000_000, monkeypatch)
    bucketed = _days(tmp_path / "spill", 0, monkeypatch)
    assert whole == bucketed
    assert whole["RF3"] == "duplicate"                    # matched on day 1, listed again
    assert whole["RF30"] == "amount_mismatch"             # its stored line stands in
    assert whole["RF31"] == "duplicate"                   # open duplicate stays one
    assert whole["RF32"] == "matched" and whole["RFX"] == "matched"
    # the rest of day 1's unlisted refunds: past their deadline (3 working days)
    assert {whole[f"RF{i}"] for i in range(33, 40)} == {"refunded_not_received"}
    assert len(whole) == 12
