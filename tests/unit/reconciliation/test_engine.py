"""Engine paths the benchmark made: the streamed platform CSV (line numbers and duplicate
numbers across chunks, the ISO fast path and its general fallback) and the single-key join
with its two-key fallback when one refund number appears under two routes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import BEIJING
from reconciliation.job import load_statements
from reconciliation.matching import classify
from reconciliation.platform import PlatformInputError, from_csv
from reconciliation.statements import Source
from reconciliation.statements.base import BadLines
from tests.unit.reconciliation.bills import (
    Line,
    PlatformRow,
    alipay_detail,
    platform_csv,
    wechat_refund_bill,
)

AT = datetime(2024, 6, 11, 9, 0, tzinfo=BEIJING)


def _rows(n: int) -> list[PlatformRow]:
    return [PlatformRow(f"rf{i}", "wechatpay", f"ORD{i}", f"RF{i:05d}", 100 + i, "succeeded",
                        AT, AT + timedelta(seconds=4)) for i in range(n)]


def test_streamed_csv_same_as_one_chunk_and_times_in_utc(tmp_path: Path) -> None:
    path = platform_csv(_rows(500), tmp_path / "p.csv")
    whole = from_csv(path)
    assert from_csv(path, chunk_bytes=1024).equals(whole)
    assert whole.height == 500
    assert whole.item(0, "created_at") == AT.astimezone(UTC)


def test_other_iso_shapes_take_the_general_parser(tmp_path: Path) -> None:
    path = platform_csv(_rows(3), tmp_path / "p.csv")
    text = path.read_text().splitlines()
    text[2] = text[2].replace("2024-06-11T09:00:00+08:00", "2024-06-11T01:00:00.250Z")
    path.write_text("\n".join(text) + "\n")
    got = from_csv(path).get_column("created_at").to_list()
    assert got[1] == datetime(2024, 6, 11, 1, 0, 0, 250_000, tzinfo=UTC)
    assert got[0] == AT.astimezone(UTC)


def test_bad_row_in_a_later_chunk_names_its_line(tmp_path: Path) -> None:
    path = platform_csv(_rows(300), tmp_path / "p.csv")
    lines = path.read_text().splitlines()
    lines[250] = lines[250].replace("succeeded", "paid")      # file line 251
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PlatformInputError, match=r"p.csv:251: unknown status paid"):
        from_csv(path, chunk_bytes=512)


def test_duplicate_number_across_chunks(tmp_path: Path) -> None:
    rows = _rows(300)
    rows.append(rows[3])
    path = platform_csv(rows, tmp_path / "p.csv")
    with pytest.raises(PlatformInputError, match="RF00003 appears twice"):
        from_csv(path, chunk_bytes=512)


def test_same_number_under_two_routes_is_not_matched_across_them(tmp_path: Path) -> None:
    plat = from_csv(platform_csv([
        PlatformRow("rf1", "alipay", "ORD1", "SAME1", 500, "succeeded", AT, AT),
        PlatformRow("rf2", "wechatpay", "ORD2", "WX2", 700, "succeeded", AT, AT)],
        tmp_path / "p.csv"))
    st = load_statements([Source.of(alipay_detail([]), "a.csv"),
                          Source.of(wechat_refund_bill([Line("SAME1", "ORD9", 500),
                                                        Line("WX2", "ORD2", 700)]), "w.csv")],
                         BadLines())
    rows = classify(plat, st, date(2024, 6, 11))
    got = {(r["route"], r["channel_refund_no"]): r["class"] for r in rows.iter_rows(named=True)}
    assert got == {("alipay", "SAME1"): "in_transit", ("wechatpay", "SAME1"):
                   "unknown_to_platform", ("wechatpay", "WX2"): "matched"}
