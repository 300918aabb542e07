"""One reconciliation run, persisted: check and load the statements and the platform's
refunds, carry open items over from earlier runs, classify, record the run.

Carry-over: an item left open (in transit, not received, unknown...) is judged again in
every later run of its route. Its refund is loaded again by key (from the store), or, when
the day's export does not have it (finance exports each day's refunds only), from what the
open item stored: so an in-transit refund whose arrival deadline passes with no
statement line becomes "refunded, not received" that day, and a later line closes it. An
unknown-to-platform item's stored statement line stands in for today's.

Accounts: a run scoped to some merchant accounts (``accounts``; ``reconcile --account``)
reads those accounts' statements, so its platform side (the loader's, the paid-twice
refunds) and the items it carries are those accounts' only (``items.open_items``: an
item is its refund's payment's account, or its first run's accounts); the run records
its accounts. An unscoped run (None) takes every account, as before accounts existed.

A statement line whose refund is not on the day's platform side is looked up in the
store (``lookup``): a refund of another day is classified as usual, one matched by an
earlier run of another day is a duplicate. Inputs are checked by ``inputs`` (refused or
warned, never ignored); the items and their history are written by ``items``.

Paid twice: every run with a store also reads the refunds the gateway saw paid after
their amount was released (``platform.paid_twice``) and classifies each "paid twice",
whatever the statement says and whatever day it was made, until a person resolves its
item. No report formatting here (``reports``), no CLI (``cli``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import structlog
from sqlalchemy import Engine

from gateway.clock import BEIJING, utcnow
from gateway.errors import StatementError
from gateway.models import RefundStatus, Route
from reconciliation.inputs import (
    DayCheck,
    RunInputError,
    RunWarning,
    StatementInfo,
    check_sources,
    in_platform_day,
)
from reconciliation.items import (
    CARRIED_LINE,
    ItemNotFound,
    ItemStateError,
    earlier_matches,
    items_by_keys,
    list_items,
    open_items,
    persist,
    reopen_item,
    resolve_item,
)
from reconciliation.matching import (
    PLATFORM_SCHEMA,
    Klass,
    Known,
    classify,
    classify_spilled,
    summarise,
)
from reconciliation.platform import (
    LINK_COLUMN,
    PaidTwice,
    known_refunds,
    paid_twice,
    reroute_chains,
)
from reconciliation.rows import RunRows
from reconciliation.spill import RunParts
from reconciliation.statements import BadLines, Source, empty_batch, read_batches
from reconciliation.statements.model import BATCH_SCHEMA, LineKind, engine_lines

__all__ = ["ItemNotFound", "ItemStateError", "RunInputError", "RunResult", "RunWarning",
           "beijing_day", "list_items", "load_statements", "reconcile", "reopen_item",
           "resolve_item"]

log = structlog.get_logger(__name__)
# Above this many rows (both sides) the run goes to hash buckets on disk as it is parsed
# (``spill.RunParts``) and is classified a bucket at a time.
PARTITION_ROWS = 2_000_000
SPILL_BUCKETS = 16


@dataclass
class RunResult:
    """One run's outcome. ``stored`` holds the classified rows in report order (on disk
    for a big run: read them with ``scan()``; ``rows`` loads them all). ``close()``
    removes a big run's files; a ``with`` block does it too."""

    run_id: int | None
    run_date: date
    routes: list[Route]
    stored: RunRows
    summary: pl.DataFrame
    bad_lines: list[StatementError] = field(default_factory=list)
    states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (route, number) -> the other refunds of a paid-twice refund's release
    linked: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Inputs the run reconciled but warns about (counts in each); they make it exit 1.
    warnings: list[RunWarning] = field(default_factory=list)
    statements: list[StatementInfo] = field(default_factory=list)
    # (route, number) -> item id: open items judged from what they stored (their refund
    # was not in this day's export)
    carried: dict[tuple[str, str], int] = field(default_factory=dict)
    # (route, number) -> the earlier match of a refund listed again (a duplicate)
    earlier: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (route, number) -> its reroute chain: the rerouted refund, then those that took its
    # amount over. Only the money that moved is counted: the rerouted refund is "not
    # refunded", the linked one matched (or in transit...).
    chains: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # the open items before the run, and keys of items the lookup found (persist reads)
    open_before: list[dict[str, Any]] = field(default_factory=list)
    known_items: set[tuple[str, str]] = field(default_factory=set)
    # The merchant accounts the run was scoped to, sorted; None: every account.
    accounts: list[str] | None = None

    @property
    def rows(self) -> pl.DataFrame:
        """Every row in memory (a 10M-row run's rows take ~1.3 GB; prefer ``scan``)."""
        return self.stored.frame()

    def scan(self) -> pl.LazyFrame:
        """The rows, lazily, in report order."""
        return self.stored.scan()

    def counts(self) -> dict[str, int]:
        have: dict[str, int] = {}
        for klass, count in self.summary.select("class", "count").iter_rows():
            have[klass] = have.get(klass, 0) + int(count)
        return {k.value: have.get(k.value, 0) for k in Klass}

    @property
    def total(self) -> int:
        """How many rows (refunds and unknown channel refunds) the run classified."""
        return sum(self.counts().values())

    @property
    def has_discrepancies(self) -> bool:
        """Discrepancies, bad lines or input warnings: someone has to look (exit 1)."""
        c = self.counts()
        return (bool(self.bad_lines) or bool(self.warnings)
                or any(c[k.value] for k in Klass if k.is_discrepancy))

    def chain_list(self) -> list[tuple[str, ...]]:
        """Each reroute chain met in the run once, in refund id order."""
        return sorted(set(self.chains.values()))

    def close(self) -> None:
        self.stored.close()

    def __enter__(self) -> RunResult:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def beijing_day(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), BEIJING).astimezone(UTC)
    return start, start + timedelta(days=1)


def load_statements(sources: Sequence[Source], bad: BadLines,
                    progress: Callable[[int], None] | None = None) -> pl.DataFrame:
    """Every refund line of every source in ``ENGINE_SCHEMA``, as one frame."""
    return pl.concat([engine_lines(empty_batch()), *statement_parts(sources, bad, progress)],
                     how="vertical")


def statement_parts(sources: Sequence[Source], bad: BadLines,
                    progress: Callable[[int], None] | None = None,
                    sink: Callable[[pl.DataFrame], None] | None = None,
                    check: DayCheck | None = None) -> list[pl.DataFrame]:
    """Every refund line of every source in ``ENGINE_SCHEMA``, one frame per parsed batch
    (payments and parser-only columns are dropped as each batch arrives). With ``sink``,
    each frame is handed to it as it is parsed (from the parsing threads) and the list
    returned is empty. ``check`` counts each source's lines outside the run's day."""
    lock = threading.Lock()

    def one(src: Source) -> list[pl.DataFrame]:
        parts = []
        for batch in read_batches(src, bad):
            lines = engine_lines(batch)
            del batch
            if check is not None:
                check.observe(src.name, lines)
            if sink is not None:
                sink(lines)
            else:
                parts.append(lines)
            if progress:
                with lock:
                    progress(lines.height)
        return parts

    # One thread per file: decompression, byte scans and polars all release the GIL, so
    # two statements parse in about the time of one on two cores. Results keep the
    # order of ``sources``; the bad-line log is sorted afterwards.
    workers = max(1, min(len(sources), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parsed = list(pool.map(one, sources))
    bad.sort()
    return [p for ps in parsed for p in ps]


def carried_lines(items: list[dict[str, Any]], statement: pl.DataFrame | None
                  ) -> pl.DataFrame:
    """The stored statement lines of open items that today's statement does not list
    (``statement``: at least today's lines with those items' numbers), standing in for
    today's: an amount or status mismatch, an unknown refund, a failure the channel
    reported stay judged on that evidence, against the platform as it is now. Marked
    with line 0 and the run that last saw them."""
    with_line = [i for i in items if i["statement_amount_minor"] is not None]
    if statement is None or not with_line:
        return engine_lines(empty_batch())
    today = set(statement.select(pl.concat_str(pl.col("route").cast(pl.String), pl.lit("|"),
                                               "channel_refund_no")
                                 ).to_series().to_list()) if statement.height else set()
    rows = [{"route": i["route"], "kind": LineKind.REFUND.value,
             "channel_refund_no": i["item_key"], "channel_refund_id": i["channel_refund_id"],
             "merchant_order_no": i["merchant_order_no"], "channel_trade_no": None,
             "amount_minor": i["statement_amount_minor"], "currency": i["currency"],
             "status": i["statement_status"] or "succeeded", "time": None,
             "source": f"carried from run {i['last_seen_run']}", "line": CARRIED_LINE}
            for i in with_line if f"{i['route']}|{i['item_key']}" not in today]
    return engine_lines(pl.DataFrame(rows, schema=BATCH_SCHEMA))


def carried_rows(items: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """The platform side of open items as they stored it (``PLATFORM_SCHEMA``), for items
    whose refund the day's platform source did not have. The creation time stands in as
    the first run's day (noon, Beijing) for items recorded before the success time was
    kept: the refund was in that day's export."""
    rows = [(i["refund_id"], i["route"], i["merchant_order_no"], None, i["item_key"],
             i["channel_refund_id"], i["platform_amount_minor"], i["currency"],
             i["platform_status"] or RefundStatus.SUCCEEDED.value,
             datetime.combine(i["first_seen_date"], time(12), BEIJING).astimezone(UTC),
             i["succeeded_at"])
            for i in items if i["refund_id"] is not None
            and i["platform_amount_minor"] is not None]
    return pl.DataFrame(rows, schema=PLATFORM_SCHEMA, orient="row")


@dataclass
class _Loaded:
    """What ``_load_platform`` saw besides the rows it handed to the run."""

    warnings: list[RunWarning] = field(default_factory=list)
    carried: dict[tuple[str, str], int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)      # refund -> rerouted_from
    rerouted: set[str] = field(default_factory=set)          # refunds in status rerouted
    other_days: set[tuple[str, str]] = field(default_factory=set)


class StoreLookup:
    """``matching.Lookup`` against the store: for statement keys with no platform refund
    today, an earlier match of another day (a duplicate), else the store's refund, else
    the item that recorded it. Remembers what it found for the run's records."""

    def __init__(self, engine: Engine, run_date: date) -> None:
        self.engine, self.run_date = engine, run_date
        self.earlier: dict[tuple[str, str], dict[str, Any]] = {}
        self.items: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, keys: pl.DataFrame) -> Known:
        wanted = [(str(r), str(n)) for r, n in keys.iter_rows() if n is not None
                  and not str(n).startswith("id:")]
        if not wanted:
            return Known()
        earlier = earlier_matches(self.engine, wanted, self.run_date)
        store = known_refunds(self.engine, wanted)
        in_store = set(store.select(pl.col("route").cast(pl.String),
                                    "channel_refund_no").iter_rows())
        items = items_by_keys(self.engine, wanted)
        from_items = carried_rows([{**i, "first_seen_date": self.run_date}
                                   for k, i in items.items() if k not in in_store])
        got_items = set(from_items.select(pl.col("route").cast(pl.String),
                                          "channel_refund_no").iter_rows())
        from_matches = pl.DataFrame(
            [(m["refund_id"], r, m["merchant_order_no"], None, n, None, m["amount_minor"],
              m["currency"], RefundStatus.SUCCEEDED.value, m["succeeded_at"],
              m["succeeded_at"]) for (r, n), m in earlier.items()
             if (r, n) not in in_store and (r, n) not in got_items
             and m["refund_id"] is not None],
            schema=PLATFORM_SCHEMA, orient="row")
        with self._lock:
            self.earlier.update(earlier)
            self.items.update(items)
        return Known(
            platform=pl.concat([store, from_items, from_matches], how="vertical"),
            earlier=pl.DataFrame(
                [(r, n, int(m["run_id"])) for (r, n), m in earlier.items()],
                schema={"route": pl.String(), "channel_refund_no": pl.String(),
                        "earlier_run": pl.Int64()}, orient="row"))


def reconcile(*, run_date: date, routes: Sequence[Route], statements: Sequence[Source],
              platform: Callable[[list[str]], pl.DataFrame | Iterable[pl.DataFrame]],
              platform_source: str,
              engine: Engine | None, max_bad_lines: int = 100,
              progress: Callable[[int], None] | None = None,
              spill_dir: Path | None = None,
              accounts: Iterable[str] | None = None) -> RunResult:
    """Run and (with ``engine``) persist. ``platform(carried_keys)`` loads the refunds
    (of ``accounts`` only, when given: the loader's to scope; carried items and
    paid-twice refunds are scoped here).
    A run of more than ``PARTITION_ROWS`` rows spills to a temporary directory under
    ``spill_dir`` (default: the system's), removed at the end, and keeps its classified
    rows in files in another one there, removed by ``RunResult.close``. Wrong input is a
    ``RunInputError`` (``inputs``) before anything is recorded."""
    started = utcnow()
    infos = check_sources(statements, routes)
    bad = BadLines(limit=max_bad_lines)
    day_check = DayCheck(run_date)
    scope = None if accounts is None else sorted(set(accounts))
    items = (open_items(engine, [r.value for r in routes], scope) if engine is not None
             else [])
    twice = paid_twice(engine, routes, scope) if engine is not None else PaidTwice()
    carried = [i["item_key"] for i in items if i["refund_id"] is not None]
    lookup = StoreLookup(engine, run_date) if engine is not None else None
    parts = RunParts(PLATFORM_SCHEMA, spill_rows=PARTITION_ROWS, buckets=SPILL_BUCKETS,
                     routes=[r.value for r in routes], directory=spill_dir)
    try:
        # The platform side loads while the statements parse (both release the GIL);
        # both hand each part over as it is read.
        with ThreadPoolExecutor(max_workers=1) as pool:
            loading = pool.submit(_load_platform, platform, carried, parts, twice, items,
                                  run_date, engine)
            statement_parts(statements, bad, progress,
                            sink=lambda df: parts.add("statement", df), check=day_check)
            loaded = loading.result()
        warnings = [*day_check.warnings(), *loaded.warnings]
        line_keys = [i["item_key"] for i in items if i["statement_amount_minor"] is not None]
        parts.add("statement", carried_lines(
            items, parts.statement_keys(line_keys) if line_keys else None))
        duplicates = {i["item_key"]: i["route"] for i in items
                      if i["class"] == Klass.DUPLICATE.value}
        if parts.spilled:
            stored, summary = classify_spilled(parts, run_date, spill_dir,
                                               paid_twice=twice.numbers, lookup=lookup,
                                               duplicates=duplicates)
        else:
            frames = {"platform": pl.concat([pl.DataFrame(schema=PLATFORM_SCHEMA),
                                             *parts.in_memory("platform")], how="vertical"),
                      "statement": pl.concat([engine_lines(empty_batch()),
                                              *parts.in_memory("statement")],
                                             how="vertical")}
            # Handed over without other references, so ``classify`` frees them once joined.
            rows = classify(frames.pop("platform"), frames.pop("statement"), run_date,
                            paid_twice=twice.numbers, lookup=lookup, duplicates=duplicates)
            stored, summary = RunRows(rows), summarise(rows)
            del rows
    finally:
        parts.close()
    result = RunResult(None, run_date, list(routes), stored, summary, bad.errors,
                       linked=twice.linked, warnings=warnings, statements=infos,
                       carried=loaded.carried, open_before=items, accounts=scope)
    if lookup is not None:
        result.earlier = lookup.earlier
        result.known_items = lookup.items | loaded.other_days
    try:
        result.chains = _chains(result, loaded, engine)
        if engine is not None:
            persist(engine, result, platform_source=platform_source,
                    statements=[s.name for s in statements], started_at=started)
    except BaseException:
        result.close()
        raise
    log.info("reconciliation_run", run_id=result.run_id, run_date=run_date.isoformat(),
             counts=result.counts(), bad_lines=len(bad.errors),
             warnings=[w.code for w in warnings], carried=len(result.carried))
    return result


def _keys(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(frame.select(pl.col("route").cast(pl.String), "channel_refund_no")
               .iter_rows())


def _load_platform(platform: Callable[[list[str]], pl.DataFrame | Iterable[pl.DataFrame]],
                   carried: list[str], parts: RunParts, twice: PaidTwice,
                   items: Sequence[dict[str, Any]], run_date: date,
                   engine: Engine | None) -> _Loaded:
    """The platform side, checked and completed as it is handed over:

    * the store's paid-twice refunds (``twice.rows``) in place of the loader's rows for
      them, so each is there once whatever the source and day;
    * refunds of other days (an export of more than the day) reported with counts; those
      an earlier run matched are left out (already reconciled), the rest are judged;
    * open items whose refund the loader did not give, from what the item stored;
    * the ``rerouted_from`` column, when the loader gives one, taken off for the chains.
    """
    got = _Loaded()
    loaded = platform(carried)
    taken = twice.rows.get_column("channel_refund_no").to_list()
    carried_set = set(carried)
    seen: set[tuple[str, str]] = set()
    others: list[pl.DataFrame] = []
    for part in [loaded] if isinstance(loaded, pl.DataFrame) else loaded:
        frame = part
        if LINK_COLUMN in frame.columns:
            got.links.update(frame.filter(pl.col(LINK_COLUMN).is_not_null())
                             .select("refund_id", LINK_COLUMN).iter_rows())
            frame = frame.drop(LINK_COLUMN)
        if not frame.height:
            parts.add("platform", frame)
            continue
        if taken:
            frame = frame.filter(~pl.col("channel_refund_no").is_in(taken))
        got.rerouted.update(frame.filter(pl.col("status") == RefundStatus.REROUTED.value)
                            .get_column("refund_id").to_list())
        if carried_set:
            seen |= _keys(frame.filter(pl.col("channel_refund_no").is_in(carried)))
        day = frame.select(in_platform_day(run_date)
                           | pl.col("channel_refund_no").is_in(carried)).to_series()
        if not day.all():
            others.append(frame.filter(~day))
            frame = frame.filter(day)
        parts.add("platform", frame)
    if others:
        other = pl.concat(others, how="vertical")
        got.other_days = _keys(other)
        before = (earlier_matches(engine, sorted(got.other_days), run_date)
                  if engine is not None else {})
        if before:
            other = other.filter(~pl.concat_str(pl.col("route").cast(pl.String), pl.lit("|"),
                                                "channel_refund_no")
                                 .is_in([f"{r}|{n}" for r, n in before]))
            got.warnings.append(RunWarning(
                "platform_matched_before",
                f"{len(before)} platform refunds of other days were matched by earlier "
                "runs; left out of this one", len(before), None,
                {"refunds": sorted(n for _, n in before)[:20]}))
        if other.height:
            days = (other.select(pl.coalesce("succeeded_at", "created_at")
                                 .dt.convert_time_zone("Asia/Shanghai").dt.date().alias("d"))
                    .group_by("d").len().sort("d"))
            by_day = {str(d): int(n) for d, n in days.iter_rows()}
            got.warnings.append(RunWarning(
                "platform_other_days",
                f"{other.height} platform refunds are not of {run_date.isoformat()} ("
                + ", ".join(f"{d}: {n}" for d, n in by_day.items())
                + "); judged against this day's statements", other.height, None,
                {"by_day": by_day}))
            parts.add("platform", other)
    missing = [i for i in items if i["refund_id"] is not None
               and i["item_key"] not in taken and (i["route"], i["item_key"]) not in seen]
    stored = carried_rows(missing)
    if stored.height:
        got.carried = {(i["route"], i["item_key"]): int(i["id"]) for i in missing
                       if i["platform_amount_minor"] is not None}
        parts.add("platform", stored)
    parts.add("platform", twice.rows)
    return got


def _chains(result: RunResult, loaded: _Loaded, engine: Engine | None
            ) -> dict[tuple[str, str], tuple[str, ...]]:
    """Reroute chains of the run's rows, from the store (``reroute_chains``) or, without
    one, from the loader's ``rerouted_from`` column."""
    ids = loaded.rerouted | set(loaded.links) | set(loaded.links.values())
    if not ids:
        return {}
    if engine is not None:
        by_id = reroute_chains(engine, ids)
    else:
        linked: dict[str, list[str]] = {}
        for refund_id, root in sorted(loaded.links.items()):
            linked.setdefault(root, []).append(refund_id)
        by_id = {}
        for root, ls in linked.items():
            for i in (root, *ls):
                by_id[i] = (root, *ls)
    rows = result.scan().filter(pl.col("refund_id").is_in(sorted(by_id))).select(
        pl.col("route").cast(pl.String), "channel_refund_no", "refund_id").collect()
    return {(r, n): by_id[i] for r, n, i in rows.iter_rows()}
