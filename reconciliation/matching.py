"""The matching engine: platform refunds x statement refund lines -> one classified row
per refund (and per unknown channel refund). Columnar (polars joins), no per-line Python.

Keys only (DESIGN.md "Reconciliation"): channel refund number, then channel refund id
(a line without a number takes the number of the platform refund with that id). Amounts
and times never decide a match. Partial refunds of one order have distinct numbers, so
they stay apart. Classes are DESIGN.md's table; "paid twice" is a refund the gateway saw
paid after its amount was released (``paid_twice``: the job reads them from the store),
whatever the statement says. "in transit" vs "refunded, not received"
uses the route's arrival window in working days, as its adapter declares it
(``Capabilities.arrival_working_days`` via ``gateway.bootstrap.capabilities_of``: the
window the gateway gives each refund), counted by ``gateway.calendar``.

"matched" is money the channel confirmed: a refund that moved no money (failed, closed,
rerouted or abnormal on the platform, failed or absent on the statement) is "not
refunded", never matched, so a rerouted refund and the refund that took its amount over
are not both counted as paid. A statement line whose refund is not in today's platform
side is handed to ``lookup`` (the job asks the store): a refund known elsewhere is
classified as usual, one matched in an earlier run of another day is a duplicate. Pure
apart from that callback: no I/O.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Final

import polars as pl

from gateway.bootstrap import capabilities_of
from gateway.calendar import arrival_window
from gateway.clock import BEIJING
from gateway.errors import GatewayError
from gateway.models import ChannelStatus, RefundStatus, Route
from reconciliation.rows import RunRows
from reconciliation.spill import RunParts
from reconciliation.statements import empty_batch
from reconciliation.statements.model import engine_lines


class Klass(StrEnum):
    MATCHED = "matched"
    IN_TRANSIT = "in_transit"
    NOT_REFUNDED = "not_refunded"
    NOT_RECEIVED = "refunded_not_received"
    UNKNOWN = "unknown_to_platform"
    AMOUNT = "amount_mismatch"
    DUPLICATE = "duplicate"
    STATUS = "status_mismatch"
    PAID_TWICE = "paid_twice"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def is_discrepancy(self) -> bool:
        return self not in (Klass.MATCHED, Klass.IN_TRANSIT, Klass.NOT_REFUNDED)


_LABELS: Final = {Klass.MATCHED: "matched", Klass.IN_TRANSIT: "in transit",
                  Klass.NOT_REFUNDED: "not refunded (no money moved)",
                  Klass.NOT_RECEIVED: "refunded, not received",
                  Klass.UNKNOWN: "unknown to platform", Klass.AMOUNT: "amount mismatch",
                  Klass.DUPLICATE: "duplicate", Klass.STATUS: "status mismatch",
                  Klass.PAID_TWICE: "paid twice"}
CLASS_ORDER: Final = list(Klass)

# Repeated text (route, currency, status) is categorical, as on the statement side, so
# the join on (route, number) compares integers for the route.
PLATFORM_SCHEMA: Final[dict[str, pl.DataType]] = {
    "refund_id": pl.String(), "route": pl.Categorical(), "merchant_order_no": pl.String(),
    "channel_trade_no": pl.String(), "channel_refund_no": pl.String(),
    "channel_refund_id": pl.String(), "amount_minor": pl.Int64(), "currency": pl.Categorical(),
    "status": pl.Categorical(), "created_at": pl.Datetime("us", "UTC"),
    "succeeded_at": pl.Datetime("us", "UTC"),
}

_S = ChannelStatus
_P = RefundStatus
_CHANNEL_NEGATIVE: Final = [_S.FAILED.value, _S.CLOSED.value, _S.ABNORMAL.value]
_PLATFORM_NO_MONEY: Final = [_P.FAILED.value, _P.CLOSED.value, _P.REROUTED.value,
                             _P.ABNORMAL.value]
_PLATFORM_OPEN: Final = [_P.PENDING.value, _P.PROCESSING.value]


def arrival_latest(platform: pl.DataFrame) -> pl.Series:
    """Latest expected arrival date per refund (computed once per route and day)."""
    moment = pl.coalesce("succeeded_at", "created_at")
    days = platform.select(pl.col("route"), moment.dt.convert_time_zone("Asia/Shanghai")
                           .dt.date().alias("_day"))
    keys = days.unique().drop_nulls()
    table = {(r, d): arrival_window(capabilities_of(Route(r)).arrival_working_days,
                                    datetime.combine(d, time(12), BEIJING)).latest
             for r, d in keys.iter_rows()}
    lookup = pl.DataFrame(
        {"route": [k[0] for k in table], "_day": [k[1] for k in table],
         "arrival_latest": list(table.values())},
        schema={"route": pl.Categorical(), "_day": pl.Date(), "arrival_latest": pl.Date()})
    joined = days.join(lookup, on=["route", "_day"], how="left", maintain_order="left")
    return joined.get_column("arrival_latest")


@dataclass(frozen=True)
class Known:
    """What ``lookup`` found for statement keys missing from the platform side.

    ``platform``: refunds with those keys (``PLATFORM_SCHEMA``), classified as if they
    had been loaded. ``earlier``: ``route`` (String), ``channel_refund_no``,
    ``earlier_run`` (Int64): keys matched in an earlier run of another day; a statement
    line for one again is a duplicate."""

    platform: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema=PLATFORM_SCHEMA))
    earlier: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"route": pl.String(), "channel_refund_no": pl.String(),
                "earlier_run": pl.Int64()}))


# Called with the (route as String, channel_refund_no) of statement rows that have no
# platform refund; once per classified frame (per bucket in a big run).
Lookup = Callable[[pl.DataFrame], Known]


def _known_elsewhere(j: pl.DataFrame, lookup: Lookup) -> pl.DataFrame:
    """``j`` (the joined sides) with the platform columns of rows that had no platform
    refund filled from what ``lookup`` found, and ``_earlier_run`` set on keys matched in
    an earlier run. Only those (normally few) rows are touched."""
    missing = pl.col("refund_id").is_null() & pl.col("statement_lines").is_not_null()
    keys = j.filter(missing).select(pl.col("route").cast(pl.String), "channel_refund_no")
    j = j.with_columns(pl.lit(None, pl.Int64).alias("_earlier_run"))
    if not keys.height:
        return j
    known = lookup(keys)
    found = known.platform
    if found.height:
        found = found.with_columns(arrival_latest(found).alias("arrival_latest")).drop(
            "channel_trade_no", "created_at").unique(["route", "channel_refund_no"],
                                                     keep="first", maintain_order=True)
        hit = missing & pl.col("channel_refund_no").is_in(
            found.get_column("channel_refund_no").implode())
        filled = j.filter(hit).drop([c for c in found.columns
                                     if c not in ("route", "channel_refund_no")])
        filled = filled.join(found, on=["route", "channel_refund_no"], how="left")
        j = pl.concat([j.filter(~hit), filled.select(j.columns)], how="vertical")
    if known.earlier.height:
        earlier = known.earlier.select(pl.col("route").cast(pl.Categorical()),
                                       "channel_refund_no",
                                       pl.col("earlier_run").alias("_e"))
        j = j.join(earlier, on=["route", "channel_refund_no"], how="left",
                   maintain_order="left").with_columns(
            pl.coalesce("_e", "_earlier_run").alias("_earlier_run")).drop("_e")
    return j


def number_by_id(lines: pl.DataFrame, by_id: pl.DataFrame) -> pl.DataFrame:
    """Lines without a refund number take ``_no_by_id`` of the platform refund with their
    (route, id) from ``by_id``, else ``id:<id>`` (unknown to the platform)."""
    return lines.join(by_id, on=["route", "channel_refund_id"], how="left").with_columns(
        pl.coalesce("channel_refund_no", "_no_by_id", pl.lit("id:") +
                    pl.col("channel_refund_id")).alias("channel_refund_no")
    ).drop("_no_by_id")


def _statement_side(statement: pl.DataFrame, platform: pl.DataFrame
                    ) -> tuple[pl.DataFrame, bool]:
    """One row per (route, number) of the statement lines; and whether every number
    was listed once (then the numbers are unique in the result, whatever the route)."""
    st = statement
    # Number missing, id present: borrow the number of the platform refund with that id.
    by_id = platform.filter(pl.col("channel_refund_id").is_not_null()).select(
        "route", "channel_refund_id", pl.col("channel_refund_no").alias("_no_by_id"))
    if st.select(pl.col("channel_refund_no").is_null().any()).item():
        st = number_by_id(st, by_id)
    # Almost every key has one line: those pass through as they are (no copy); only
    # repeated keys go through the grouping below.
    # (A number repeated across routes also takes the grouping path, which keys on both.)
    keys = ["route", "channel_refund_no"]
    many = st.clear()
    unique = st.select(pl.col("channel_refund_no").n_unique()).item() == st.height
    if not unique:
        repeated = st.select(pl.col("channel_refund_no").is_duplicated()).to_series()
        many, st = st.filter(repeated), st.filter(~repeated)
    single = st.select(
        *keys, pl.lit(1, pl.Int64).alias("statement_lines"),
        pl.col("channel_refund_id").alias("_s_id"),
        pl.col("merchant_order_no").alias("_s_order"),
        pl.col("amount_minor").alias("statement_amount_minor"),
        pl.col("status").alias("statement_status"), pl.col("time").alias("statement_time"),
        "source", "line")
    return (pl.concat([single, _repeated_keys(many).select(single.columns)], how="vertical"),
            unique)


def _repeated_keys(st: pl.DataFrame) -> pl.DataFrame:
    """Keys listed more than once. The same movement listed in two different files of a
    route (trade bill and fund-flow bill) is one line; listed twice in one file it is two."""
    # The line reported for a repeated key is its first by (file name, line number), not
    # by arrival: big runs receive parts from parallel parsers in any order. One sort of
    # these (few) rows; ``first`` within a group follows row order.
    st = st.sort(pl.col("source").cast(pl.String), "line")
    grouped = st.group_by("route", "channel_refund_no").agg(
        pl.len().alias("_n"), pl.col("source").n_unique().alias("_files"),
        pl.col("channel_refund_id").first(), pl.col("merchant_order_no").first(),
        pl.col("amount_minor").first().alias("statement_amount_minor"),
        pl.col("status").first().alias("statement_status"),
        pl.col("time").first().alias("statement_time"),
        pl.col("source").first(), pl.col("line").first())
    multi = grouped.filter((pl.col("_n") > 1) & (pl.col("_files") > 1))
    if multi.height:
        keys = multi.select("route", "channel_refund_no")
        counted = (st.join(keys, on=["route", "channel_refund_no"], how="semi")
                   .group_by("route", "channel_refund_no", "channel_refund_id",
                             "amount_minor", "status", "source").len()
                   .group_by("route", "channel_refund_no", "channel_refund_id",
                             "amount_minor", "status").agg(pl.col("len").max())
                   .group_by("route", "channel_refund_no").agg(pl.col("len").sum()
                                                               .alias("_dedup")))
        grouped = grouped.join(counted, on=["route", "channel_refund_no"], how="left"
                               ).with_columns(pl.coalesce("_dedup", "_n").alias("_n")
                                              ).drop("_dedup")
    return grouped.with_columns(pl.col("_n").cast(pl.Int64)).rename(
        {"_n": "statement_lines", "channel_refund_id": "_s_id",
         "merchant_order_no": "_s_order"}).drop("_files")


def _join(held: list[pl.DataFrame], *, st_unique: bool) -> pl.DataFrame:
    """Full join on (route, number) of ``held`` = [platform, statement side], which it
    takes out of the list (so their memory can go as the joined columns are built).

    The platform side never repeats a number (it is the refund's key); a repeat is a
    broken export and stops the run. Refund numbers are normally unique across routes
    too (the gateway's are refund ids), and then the join is on the number alone, by
    its 64-bit hash (``_pairs_by_number_hash``); a collision or a number under two routes
    takes the two-column string join instead. ``st_unique``: the statement side's
    numbers are known to be unique (``_statement_side``)."""
    platform, st = held
    held.clear()
    keys = ["route", "channel_refund_no"]
    if platform.select(pl.col("channel_refund_no").n_unique()).item() != platform.height:
        numbers = platform.get_column("channel_refund_no")
        twice = numbers.filter(numbers.is_duplicated()).item(0)
        raise DuplicateRefundNumber(f"channel_refund_no {twice} appears twice in the "
                                    "platform refunds")
    pairs = _pairs_by_number_hash(platform, st) if st_unique else None
    if pairs is None:
        return platform.join(st, on=keys, how="full", coalesce=True)
    # Late materialisation: the pairs are two row-index columns; each side's columns
    # are gathered (all at once: polars gathers them in parallel) and that side is
    # freed before the other is gathered, so memory never holds both inputs and the
    # whole joined copy of them (+350 MB at 1M x 1M).
    gathered = platform.select(pl.all().gather(pairs.get_column("_pi")))
    del platform
    j = gathered.hstack(st.rename({"route": "_s_route", "channel_refund_no": "_s_no"})
                        .select(pl.all().gather(pairs.get_column("_si"))).get_columns())
    del gathered, st
    return j.with_columns(pl.coalesce("route", "_s_route").alias("route"),
                          pl.coalesce("channel_refund_no", "_s_no").alias("channel_refund_no")
                          ).drop("_s_route", "_s_no")


def _pairs_by_number_hash(platform: pl.DataFrame, st: pl.DataFrame) -> pl.DataFrame | None:
    """The full join of the two sides on the hash of the number, as row indices
    (``_pi``, ``_si``; null where a side has no row), after checking every pair it made
    (same number, same route). An integer key joins in a third of the time and a
    fraction of the memory of a string one. None when the hash cannot stand for the
    number: two numbers of one side share it, or a pair differs in number or route."""
    p = platform.select(number_hash().alias("_h")).with_row_index("_pi")
    s = st.select(number_hash().alias("_h")).with_row_index("_si")
    for side in (p, s):
        if side.select(pl.col("_h").n_unique()).item() != side.height:
            return None
    pairs = p.join(s, on="_h", how="full", coalesce=True).drop("_h")
    del p, s
    both = pairs.drop_nulls()
    # eq_missing: a null number paired with a value is a mismatch, not "unknown".
    same = (platform.get_column("channel_refund_no").gather(both.get_column("_pi"))
            .eq_missing(st.get_column("channel_refund_no").gather(both.get_column("_si")))
            ).all()
    same_route = (platform.get_column("route").gather(both.get_column("_pi"))
                  .eq_missing(st.get_column("route").gather(both.get_column("_si")))).all()
    return pairs if same and same_route else None


def number_hash() -> pl.Expr:
    """The join key standing for ``channel_refund_no`` (a test swaps in a colliding one)."""
    return pl.col("channel_refund_no").hash(seed=11)


def paid_twice_flag(paid_twice: Mapping[str, str] | None) -> pl.Expr:
    """Whether a row's (route, number) is one of ``paid_twice`` (number -> route): one
    membership test per route that has any (normally none: then a constant). Also used
    for open duplicate items."""
    by_route: dict[str, list[str]] = {}
    for number, route in sorted((paid_twice or {}).items()):
        by_route.setdefault(route, []).append(number)
    flag = pl.lit(False)
    for route, numbers in sorted(by_route.items()):
        flag = flag | ((pl.col("route").cast(pl.String) == route)
                       & pl.col("channel_refund_no").is_in(numbers)).fill_null(False)
    return flag


def classify(platform: pl.DataFrame, statement: pl.DataFrame, as_of: date, *,
             sort: bool = True, paid_twice: Mapping[str, str] | None = None,
             lookup: Lookup | None = None,
             duplicates: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Classify. ``platform`` has ``PLATFORM_SCHEMA``; ``statement`` ``ENGINE_SCHEMA``.
    ``as_of`` is the statement day: a refund is late once ``as_of`` > its latest arrival.
    ``sort=False`` leaves report order to the caller (``classify_spilled``).
    ``paid_twice``: channel refund number -> route of the platform refunds paid after
    their amount was released; each is "paid twice" whatever the statement says.
    ``lookup``: asked about statement keys with no platform refund (``Known``).
    ``duplicates``: number -> route of open duplicate items: money that may have moved
    twice stays a duplicate until a person resolves it, whatever later lines say."""
    # The trade number and the creation time are not in the result (the latter only
    # decides the arrival date): dropped before the join, which copies every column.
    platform = platform.with_columns(arrival_latest(platform).alias("arrival_latest")).drop(
        "channel_trade_no", "created_at")
    st, st_unique = _statement_side(statement, platform)
    del statement
    held = [platform, st]
    del platform, st
    j = _join(held, st_unique=st_unique)
    if lookup is not None:
        j = _known_elsewhere(j, lookup)
    # The inputs are freed as they are joined (callers that hand them over without
    # keeping a reference, like ``job.reconcile``, get the memory back there).
    has_p, has_s = pl.col("refund_id").is_not_null(), pl.col("statement_lines").is_not_null()
    p, s = pl.col("status"), pl.col("statement_status")
    late = pl.lit(as_of) > pl.col("arrival_latest")
    succeeded_p = p == _P.SUCCEEDED.value
    not_refunded = pl.lit(Klass.NOT_REFUNDED.value)
    # Matched in an earlier run of another day, and on this statement again.
    earlier = (has_s & pl.col("_earlier_run").is_not_null() if lookup is not None
               else pl.lit(False))
    k = (pl.when(paid_twice_flag(paid_twice) & has_p).then(pl.lit(Klass.PAID_TWICE.value))
         .when(earlier | paid_twice_flag(duplicates)).then(pl.lit(Klass.DUPLICATE.value))
         .when(~has_p).then(pl.lit(Klass.UNKNOWN.value))
         .when(has_s & (pl.col("statement_lines") > 1)).then(pl.lit(Klass.DUPLICATE.value))
         .when(has_s & (pl.col("statement_amount_minor") != pl.col("amount_minor")))
         .then(pl.lit(Klass.AMOUNT.value))
         .when(has_s & (s == _S.SUCCEEDED.value))
         .then(pl.when(succeeded_p).then(pl.lit(Klass.MATCHED.value))
               .otherwise(pl.lit(Klass.STATUS.value)))
         # A line saying failed is never "matched": either the platform thinks the money
         # went (not received) or both sides agree none did (not refunded).
         .when(has_s & s.is_in(_CHANNEL_NEGATIVE))
         .then(pl.when(succeeded_p).then(pl.lit(Klass.NOT_RECEIVED.value))
               .when(p.is_in(_PLATFORM_NO_MONEY)).then(not_refunded)
               .otherwise(pl.lit(Klass.STATUS.value)))
         .when(has_s)  # channel still processing
         .then(pl.when(succeeded_p & late).then(pl.lit(Klass.NOT_RECEIVED.value))
               .when(succeeded_p | p.is_in(_PLATFORM_OPEN)).then(pl.lit(Klass.IN_TRANSIT.value))
               .otherwise(pl.lit(Klass.STATUS.value)))
         # no statement line at all
         .when(succeeded_p & late).then(pl.lit(Klass.NOT_RECEIVED.value))
         .when(succeeded_p | p.is_in(_PLATFORM_OPEN)).then(pl.lit(Klass.IN_TRANSIT.value))
         .otherwise(not_refunded))
    out = j.with_columns(k.alias("class")).select(
        "class", "route", "refund_id", "channel_refund_no",
        pl.coalesce("channel_refund_id", "_s_id").alias("channel_refund_id"),
        pl.coalesce("merchant_order_no", "_s_order").alias("merchant_order_no"),
        pl.col("amount_minor").alias("platform_amount_minor"), "statement_amount_minor",
        pl.col("currency").fill_null("CNY"), pl.col("status").alias("platform_status"),
        "statement_status", "succeeded_at", "statement_time", "arrival_latest",
        pl.col("statement_lines").fill_null(0), "source", "line")
    if not sort:
        return out
    holder = [out]
    del out
    return sort_rows(holder)


class DuplicateRefundNumber(GatewayError):
    """The platform side lists one refund number twice (a broken export)."""


def classify_parts(platform: list[pl.DataFrame], statement: list[pl.DataFrame],
                   as_of: date, partitions: int, directory: Path | None = None, *,
                   paid_twice: Mapping[str, str] | None = None) -> pl.DataFrame:
    """``classify`` through ``partitions`` hash buckets on disk (``spill.RunParts``),
    as ``job.reconcile`` does for big runs. Consumes both lists."""
    parts = RunParts(PLATFORM_SCHEMA, spill_rows=0, buckets=partitions, directory=directory)
    try:
        while platform:
            parts.add("platform", platform.pop(0))
        while statement:
            parts.add("statement", statement.pop(0))
        rows, _ = classify_spilled(parts, as_of, directory, paid_twice=paid_twice)
        try:
            return rows.frame()
        finally:
            rows.close()
    finally:
        parts.close()


def classify_spilled(parts: RunParts, as_of: date, directory: Path | None = None, *,
                     paid_twice: Mapping[str, str] | None = None,
                     lookup: Lookup | None = None,
                     duplicates: Mapping[str, str] | None = None
                     ) -> tuple[RunRows, pl.DataFrame]:
    """Classify a run whose parts went to buckets on disk; returns the rows (in report
    order, kept in files under a new directory in ``directory``) and their summary.

    Memory holds one bucket, then one key range, never the whole result: each bucket is
    read, classified and cut into ``parts.buckets`` ranges of the report order, each
    piece written to disk; then each range is read, sorted (``sort_rows``) and written
    as one result file. The files in range order are the rows in report order. The range
    bounds are quantiles of the first bucket's sort keys: buckets are cut by a hash of
    the refund number, so any bucket is a fair sample of the whole run."""
    _number_unnumbered(parts)
    ranges = parts.buckets
    bounds: pl.Series | None = None
    pieces: dict[int, list[Path]] = {}
    tallies = []
    for k in range(parts.buckets):
        rows = classify(parts.take("platform", k), parts.take("statement", k), as_of,
                        sort=False, paid_twice=paid_twice, lookup=lookup,
                        duplicates=duplicates)
        tallies.append(tally(rows))
        keys = rows.select(_sort_key().alias("_key")).to_series()
        if bounds is None:
            ordered = keys.sort()
            bounds = ordered.gather([len(ordered) * i // ranges for i in range(1, ranges)]
                                    if len(ordered) else [])
        which = bounds.search_sorted(keys, side="right").alias("_range")
        del keys
        split = rows.with_columns(which).partition_by("_range", as_dict=True,
                                                      include_key=False)
        del rows
        for (r, *_), piece in split.items():
            pieces.setdefault(int(str(r)), []).append(parts.keep(piece))
        del split
    result_dir = Path(tempfile.mkdtemp(prefix="recon-rows-", dir=directory))
    files = []
    schema: pl.Schema | None = None
    try:
        for r in range(ranges):
            if r not in pieces:
                continue
            frame = pl.concat([pl.read_ipc(f) for f in pieces.pop(r)], how="vertical")
            schema = frame.schema
            path = result_dir / f"rows-{r:04d}.arrow"
            sort_rows([frame]).write_ipc(path, compression="lz4")
            del frame
            files.append(path)
    except BaseException:
        shutil.rmtree(result_dir, ignore_errors=True)
        raise
    if schema is None:   # nothing to classify at all
        schema = classify(pl.DataFrame(schema=PLATFORM_SCHEMA),
                          engine_lines(empty_batch()), as_of, sort=False).schema
    return (RunRows(files=files, directory=result_dir, schema=schema),
            summary_grid(pl.concat(tallies, how="vertical")))


def _sort_key() -> pl.Expr:
    """One string that sorts as the report order does (``report_order``: class, route,
    then the refund number with nulls last), for cutting the rows into ranges."""
    number = pl.col("channel_refund_no").fill_null("\U0010ffff")
    return _group().cast(pl.String).str.zfill(4) + number


def _number_unnumbered(parts: RunParts) -> None:
    """Give lines without a refund number (id only) the number of the platform refund
    with that id, then bucket them (``_statement_side`` does this within one bucket,
    where the platform refund could be in another). Reads three columns of the platform
    side, for those ids only."""
    if not parts.unnumbered:
        return
    lines = pl.concat(parts.unnumbered, how="vertical")
    parts.unnumbered = []
    ids = lines.select("route", "channel_refund_id").unique()
    found = (parts.scan("platform")
             .select("route", "channel_refund_id",
                     pl.col("channel_refund_no").alias("_no_by_id"))
             .join(ids.lazy(), on=["route", "channel_refund_id"], how="semi")
             .collect())
    parts.add("statement", number_by_id(lines, found))


def sort_rows(holder: list[pl.DataFrame]) -> pl.DataFrame:
    """Report order: class (table order), route, channel refund number. One string sort
    on the number, then a stable sort on a small integer (class, route): a multi-column
    sort with a string key costs ~15x more at 1M rows. (route, number) is unique.
    Takes the frame out of ``holder`` and moves it a column at a time, so the sort never
    holds two copies of the rows."""
    rows = holder.pop()
    order = report_order(rows)
    columns = []
    for name in rows.columns:
        column = rows.get_column(name)
        rows = rows.drop(name)
        columns.append(column.gather(order))
        del column
    return pl.DataFrame(columns)


def _group() -> pl.Expr:
    """Class (table order) and route as one small integer: the first sort key."""
    classes = {c.value: i for i, c in enumerate(CLASS_ORDER)}
    routes = {r: i for i, r in enumerate(sorted(r.value for r in Route))}
    return (pl.col("class").replace_strict(classes, return_dtype=pl.Int16) * 16
            + pl.col("route").cast(pl.String).replace_strict(routes, default=15,
                                                             return_dtype=pl.Int16))


def report_order(rows: pl.DataFrame) -> pl.Series:
    """The row indices of ``rows`` (columns class, route, channel_refund_no at least) in
    report order (``sort_rows``)."""
    by_no = rows.select(pl.arg_sort_by("channel_refund_no", nulls_last=True)).to_series()
    groups = rows.select(_group().gather(by_no).alias("g"))
    return by_no.gather(groups.select(pl.arg_sort_by("g", maintain_order=True)).to_series())


def tally(result: pl.DataFrame) -> pl.DataFrame:
    """Count and amount of ``result``'s rows by class and route (rows present only)."""
    amount = pl.coalesce("platform_amount_minor", "statement_amount_minor")
    return result.group_by("class", "route").agg(
        pl.len().cast(pl.Int64).alias("count"), amount.sum().alias("amount_minor")
    ).with_columns(pl.col("route").cast(pl.String))


def summary_grid(tallies: pl.DataFrame) -> pl.DataFrame:
    """``tally`` rows (possibly several per class and route, from parts of a run) ->
    counts and amounts by class and route, in fixed order, every class present."""
    got = tallies.group_by("class", "route").agg(pl.col("count").sum(),
                                                 pl.col("amount_minor").sum())
    routes = sorted(got.get_column("route").unique().to_list())
    grid = pl.DataFrame({"class": [c.value for c in CLASS_ORDER for _ in routes],
                         "route": [r for _ in CLASS_ORDER for r in routes]},
                        schema={"class": pl.String(), "route": pl.String()})
    order = {c.value: i for i, c in enumerate(CLASS_ORDER)}
    return (grid.join(got, on=["class", "route"], how="left")
            .with_columns(pl.col("count").fill_null(0).cast(pl.Int64),
                          pl.col("amount_minor").fill_null(0).cast(pl.Int64))
            .sort(pl.col("class").replace_strict(order, return_dtype=pl.Int8), "route"))


def summarise(result: pl.DataFrame) -> pl.DataFrame:
    """Counts and amounts by class and route (fixed order, every class present)."""
    return summary_grid(tally(result))
