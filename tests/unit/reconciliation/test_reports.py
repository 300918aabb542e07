"""The CSV report's cell rendering, vectorised, against the per-row rendering it must equal
(``datetime.isoformat`` in Beijing time for times; ``neutralise`` for text a spreadsheet
would run)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from gateway.clock import BEIJING
from reconciliation.reports import _as_text, _neutralised, neutralise


def test_times_render_as_isoformat_with_and_without_a_fraction() -> None:
    times = [datetime(2024, 6, 11, 1, 2, 3, tzinfo=UTC),
             datetime(2024, 6, 11, 1, 2, 3, 120_000, tzinfo=UTC),
             datetime(2024, 6, 11, 1, 2, 3, 1, tzinfo=UTC), None]
    df = pl.DataFrame({"t": times}, schema={"t": pl.Datetime("us", "UTC")})
    got = df.select(_as_text(df.schema, "t")).to_series().to_list()
    assert got == [t.astimezone(BEIJING).isoformat() if t else None for t in times]
    assert got[0] == "2024-06-11T09:02:03+08:00"      # Beijing time, as a person reads it


def test_formula_like_text_is_quoted_as_neutralise_does() -> None:
    cells = ["=HYPERLINK(1)", "+1", "-2", "@x", "\tA", "\rB", "ORD1", "", "a=b", None]
    df = pl.DataFrame({"c": cells}, schema={"c": pl.String()})
    got = df.select(_neutralised("c")).to_series().to_list()
    assert got == [neutralise(c) if c is not None else None for c in cells]
