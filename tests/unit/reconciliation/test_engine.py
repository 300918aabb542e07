"""Engine paths the benchmark made: the streamed platform CSV (line numbers and duplicate
numbers across chunks, the ISO fast path and its general fallback), the single-key join
with its two-key fallback when one refund number appears under two routes, and the
bucketed engine (same rows as the whole, numbers borrowed by id across buckets)."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from gateway.clock import BEIJING
from gateway.models import Route
from reconciliation import job, matching
from reconciliation.job import load_statements
from reconciliation.matching import (
    PLATFORM_SCHEMA,
    DuplicateRefundNumber,
    classify,
    classify_parts,
    classify_spilled,
    summarise,
)
from reconciliation.platform import PlatformInputError, from_csv, from_csv_parts
from reconciliation.reports import write_csv
from reconciliation.rows import RunRows
from reconciliation.spill import RunParts
from reconciliation.statements import Source
from reconciliation.statements.base import BadLines
from reconciliation.statements.model import BATCH_SCHEMA, engine_lines
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


GOLDEN = Path(__file__).resolve().parents[2] / "golden"
PLANTED = ["statements/alipay_trade_20240611.zip", "statements/wechat_refund_20240611.csv.gz",
           "statements/wechat_fundflow_20240611.csv", "statements/balance_20240611.csv",
           "reconciliation/unionpay_duplicate_20240611.zip"]


def _planted(monkeypatch: pytest.MonkeyPatch, partition_rows: int,
             spill_dir: Path | None = None) -> job.RunResult:
    monkeypatch.setattr(job, "PARTITION_ROWS", partition_rows)
    result = job.reconcile(
        run_date=date(2024, 6, 11), routes=list(Route),
        statements=[Source.of(GOLDEN / s) for s in PLANTED],
        platform=lambda _c: from_csv_parts(GOLDEN / "reconciliation/platform.csv",
                                           chunk_bytes=300),
        platform_source="csv", engine=None, spill_dir=spill_dir)
    return result


def test_bucketed_engine_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    whole = _planted(monkeypatch, 10_000, tmp_path)
    assert list(tmp_path.iterdir()) == []      # small: never spilled
    assert not whole.stored.on_disk
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(**kwargs: object) -> str:
        made.append(Path(real_mkdtemp(**kwargs)))  # type: ignore[arg-type]
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    bucketed = _planted(monkeypatch, 3, tmp_path)   # spilled to 16 buckets on disk
    assert bucketed.stored.on_disk
    assert bucketed.rows.equals(whole.rows)
    assert bucketed.summary.equals(whole.summary)
    assert bucketed.counts() == whole.counts() and bucketed.total == whole.rows.height == 12
    spill, kept = made
    assert spill.parent == tmp_path and kept.parent == tmp_path
    assert not spill.exists()                  # the spill is removed after the run
    assert kept.exists() and bucketed.stored.files
    on_disk = write_csv(bucketed, tmp_path / "disk.csv").read_bytes()
    assert on_disk == write_csv(whole, tmp_path / "memory.csv").read_bytes()
    with bucketed:                             # the rows' files live until closed
        assert bucketed.scan().select(pl.len()).collect().item() == 12
    assert not kept.exists()
    with pytest.raises(ValueError, match="closed"):
        bucketed.scan()


def test_rows_on_disk_are_in_report_order_across_ranges(tmp_path: Path) -> None:
    """Many rows over several key ranges: the files, read in order, are exactly the
    in-memory engine's rows (report order: class, route, number)."""
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    n = 3000
    route = ("wechatpay", "alipay")
    plat = pl.DataFrame([{"refund_id": f"rf{i}", "route": route[i % 2],
                          "merchant_order_no": f"O{i}", "channel_trade_no": None,
                          "channel_refund_no": f"N{(i * 7919) % n:05d}",
                          "channel_refund_id": None, "amount_minor": 100 + i,
                          "currency": "CNY",
                          "status": ("succeeded", "processing", "failed")[i % 3],
                          "created_at": at, "succeeded_at": at} for i in range(n)],
                        schema=PLATFORM_SCHEMA)
    lines = [{"route": route[i % 2], "kind": "refund",
              "channel_refund_no": f"N{(i * 7919) % n:05d}" if i < n else f"X{i}",
              "channel_refund_id": None, "merchant_order_no": None, "channel_trade_no": None,
              "amount_minor": 100 + i + (1 if i % 13 == 0 else 0), "currency": "CNY",
              "status": "succeeded" if i % 11 else "processing", "time": at,
              "source": "s.csv", "line": i + 2}
             for i in range(n + 200) if i % 7]   # every 7th missing; 200 unknown
    st = engine_lines(pl.DataFrame(lines, schema=BATCH_SCHEMA))
    whole = classify(plat, st, date(2024, 6, 11))
    parts = RunParts(PLATFORM_SCHEMA, spill_rows=0, buckets=8, directory=tmp_path)
    try:
        parts.add("platform", plat)
        parts.add("statement", st)
        stored, summary = classify_spilled(parts, date(2024, 6, 11), tmp_path)
    finally:
        parts.close()
    with stored:
        assert len(stored.files) > 1
        assert stored.frame().equals(whole)
        assert summary.equals(summarise(whole))
        # The CSV report, written a file at a time: byte for byte the in-memory run's
        # (one BOM, one header).
        day, routes = date(2024, 6, 11), [Route.ALIPAY, Route.WECHATPAY]
        on_disk = write_csv(job.RunResult(None, day, routes, stored, summary),
                            tmp_path / "disk.csv").read_bytes()
        in_memory = write_csv(job.RunResult(None, day, routes, RunRows(whole), summary),
                              tmp_path / "memory.csv").read_bytes()
        assert on_disk == in_memory
        assert on_disk.count("\ufeff".encode()) == 1 and on_disk.count(b"\r\nclass,") == 0
        assert on_disk.count(b"\r\n") == whole.height + 1


def test_a_hash_collision_falls_back_to_the_string_join(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The join on the number's hash checks every pair it made: with a key that collides
    across the sides (last character), the rows are exactly the real hash's rows."""
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    plat = pl.DataFrame([{"refund_id": f"rf{i}", "route": "wechatpay",
                          "merchant_order_no": f"O{i}", "channel_trade_no": None,
                          "channel_refund_no": f"N{i}", "channel_refund_id": None,
                          "amount_minor": 100 + i, "currency": "CNY", "status": "succeeded",
                          "created_at": at, "succeeded_at": at} for i in range(1, 10)],
                        schema=PLATFORM_SCHEMA)
    lines = [{"route": "wechatpay", "kind": "refund", "channel_refund_no": no,
              "channel_refund_id": None, "merchant_order_no": None, "channel_trade_no": None,
              "amount_minor": amount, "currency": "CNY", "status": "succeeded", "time": at,
              "source": "s.csv", "line": 2 + k}
             for k, (no, amount) in enumerate([("N1", 101), ("N2", 102), ("N3", 999),
                                               ("X6", 106), ("X7", 107)])]
    st = engine_lines(pl.DataFrame(lines, schema=BATCH_SCHEMA))
    real = classify(plat.clone(), st.clone(), date(2024, 6, 11))

    def last_char() -> pl.Expr:   # unique within each side, N6 ~ X6 across them
        return pl.col("channel_refund_no").str.slice(-1).cast(pl.UInt64)

    monkeypatch.setattr(matching, "number_hash", last_char)
    side, unique = matching._statement_side(st.clone(), plat)
    assert unique and matching._pairs_by_number_hash(plat, side) is None
    colliding = classify(plat, st, date(2024, 6, 11))
    assert colliding.equals(real)
    classes = dict(zip(real["channel_refund_no"], real["class"], strict=True))
    assert classes["X6"] == classes["X7"] == "unknown_to_platform"
    assert classes["N3"] == "amount_mismatch" and classes["N1"] == "matched"


def test_a_null_number_paired_by_the_hash_is_a_mismatch(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A refund without a number never matches a statement line, even when the join key
    pairs them (here a key that maps null and "X1" alike)."""
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    plat = pl.DataFrame([{"refund_id": "rf1", "route": "wechatpay", "merchant_order_no": "O1",
                          "channel_trade_no": None, "channel_refund_no": None,
                          "channel_refund_id": None, "amount_minor": 100, "currency": "CNY",
                          "status": "succeeded", "created_at": at, "succeeded_at": at}],
                        schema=PLATFORM_SCHEMA)
    st = engine_lines(pl.DataFrame([{
        "route": "wechatpay", "kind": "refund", "channel_refund_no": "X1",
        "channel_refund_id": None, "merchant_order_no": None, "channel_trade_no": None,
        "amount_minor": 100, "currency": "CNY", "status": "succeeded", "time": at,
        "source": "s.csv", "line": 2}], schema=BATCH_SCHEMA))

    def null_like_x1() -> pl.Expr:
        return pl.col("channel_refund_no").fill_null("X1").hash(seed=11)

    monkeypatch.setattr(matching, "number_hash", null_like_x1)
    side, _ = matching._statement_side(st.clone(), plat)
    assert matching._pairs_by_number_hash(plat, side) is None
    rows = classify(plat, st, date(2024, 6, 11))
    assert set(rows.select("refund_id", "class").rows()) == {
        (None, "unknown_to_platform"), ("rf1", "in_transit")}


def test_bucketed_engine_borrows_numbers_across_buckets() -> None:
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    plat = pl.DataFrame([{"refund_id": f"rf{i}", "route": "wechatpay",
                          "merchant_order_no": f"O{i}", "channel_trade_no": None,
                          "channel_refund_no": f"RN{i}", "channel_refund_id": f"ID{i}",
                          "amount_minor": 100 + i, "currency": "CNY", "status": "succeeded",
                          "created_at": at, "succeeded_at": at} for i in range(40)],
                        schema=PLATFORM_SCHEMA)
    lines = pl.DataFrame([{"route": "wechatpay", "kind": "refund",
                           "channel_refund_no": None if i % 2 else f"RN{i}",
                           "channel_refund_id": f"ID{i}", "merchant_order_no": None,
                           "channel_trade_no": None, "amount_minor": 100 + i,
                           "currency": "CNY", "status": "succeeded", "time": at,
                           "source": "s.csv", "line": i + 2} for i in range(40)]
                         + [{"route": "wechatpay", "kind": "refund", "channel_refund_no": None,
                             "channel_refund_id": "NOBODY", "merchant_order_no": None,
                             "channel_trade_no": None, "amount_minor": 5, "currency": "CNY",
                             "status": "succeeded", "time": at, "source": "s.csv",
                             "line": 99}], schema=BATCH_SCHEMA)
    st = engine_lines(lines)
    whole = classify(plat, st, date(2024, 6, 11))
    parts = classify_parts([plat[:13], plat[13:]], [st[:20], st[20:]], date(2024, 6, 11),
                           partitions=7)
    assert parts.equals(whole)
    classes = dict(zip(whole["channel_refund_no"], whole["class"], strict=True))
    assert classes.pop("id:NOBODY") == "unknown_to_platform"
    assert set(classes.values()) == {"matched"} and len(classes) == 40


def test_reported_line_of_a_repeated_key_does_not_depend_on_arrival_order() -> None:
    """Big runs receive parts from parallel parsers in any order; the line reported for
    a key listed twice is the first by (file, line) either way."""
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    plat = pl.DataFrame([{"refund_id": "rf1", "route": "bankcard",
                          "merchant_order_no": "O1", "channel_trade_no": None,
                          "channel_refund_no": "RN1", "channel_refund_id": None,
                          "amount_minor": 100, "currency": "CNY", "status": "succeeded",
                          "created_at": at, "succeeded_at": at}], schema=PLATFORM_SCHEMA)

    def line(source: str, n: int, amount: int) -> pl.DataFrame:
        return engine_lines(pl.DataFrame([{
            "route": "bankcard", "kind": "refund", "channel_refund_no": "RN1",
            "channel_refund_id": None, "merchant_order_no": None, "channel_trade_no": None,
            "amount_minor": amount, "currency": "CNY", "status": "succeeded", "time": at,
            "source": source, "line": n}], schema=BATCH_SCHEMA))

    parts = [line("b.txt", 3, 100), line("a.txt", 9, 100), line("a.txt", 7, 100)]
    rows = {classify(plat, pl.concat(order), date(2024, 6, 11)).select(
                "class", "source", "line", "statement_lines").row(0)
            for order in (parts, parts[::-1])}
    rows.add(classify_parts([plat.clone()], parts[::-1], date(2024, 6, 11), partitions=3)
             .select("class", "source", "line", "statement_lines").row(0))
    assert len(rows) == 1
    klass, source, first_line, _ = rows.pop()
    assert (klass, source, first_line) == ("duplicate", "a.txt", 7)


def test_repeated_platform_number_stops_the_bucketed_run() -> None:
    at = datetime(2024, 6, 11, 1, 0, tzinfo=UTC)
    row = {"refund_id": "rf1", "route": "alipay", "merchant_order_no": "O1",
           "channel_trade_no": None, "channel_refund_no": "RN1", "channel_refund_id": None,
           "amount_minor": 100, "currency": "CNY", "status": "succeeded", "created_at": at,
           "succeeded_at": at}
    plat = pl.DataFrame([row, {**row, "refund_id": "rf2"}], schema=PLATFORM_SCHEMA)
    with pytest.raises(DuplicateRefundNumber, match="RN1 appears twice"):
        classify_parts([plat], [engine_lines(pl.DataFrame(schema=BATCH_SCHEMA))],
                       date(2024, 6, 11), partitions=3)


def test_carry_over_into_a_run_whose_statements_have_no_lines(tmp_path: Path) -> None:
    from gateway.bootstrap import build_store
    from gateway.settings import load_settings

    engine = build_store(load_settings(database_url=f"sqlite:///{tmp_path / 'g.db'}")).engine
    try:
        def run(bill: bytes, day: date) -> job.RunResult:
            return job.reconcile(run_date=day, routes=[Route.WECHATPAY],
                                 statements=[Source.of(bill, "wx.csv")],
                                 platform=lambda _c: [], platform_source="none",
                                 engine=engine)
        first = run(wechat_refund_bill([Line("GHOST1", "ORD1", 500)]), date(2024, 6, 11))
        assert first.counts()["unknown_to_platform"] == 1
        second = run(wechat_refund_bill([]), date(2024, 6, 12))   # header + summary only
        assert [r["channel_refund_no"] for r in second.rows.iter_rows(named=True)] == [
            "GHOST1"]
        assert second.rows.item(0, "source") == f"carried from run {first.run_id}"
    finally:
        engine.dispose()
