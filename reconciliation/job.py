"""One reconciliation run, persisted: load statements and platform refunds, carry open
items over from earlier runs, classify, record the run and its discrepancies.

Carry-over: an item left open (in transit, not received, unknown...) is re-matched in
later runs: its refund is loaded again by key, and for an unknown-to-platform item the
stored statement line stands in for today's. A later match closes it (state resolved,
note "matched in run N"). A person's resolution is kept unless the class changes.

Paid twice: every run with a store also reads the refunds the gateway saw paid after
their amount was released (``platform.paid_twice``) and classifies each "paid twice",
whatever the statement says and whatever day it was made, until a person resolves its
item; the item's note names the other refunds of the release. No report formatting here
(``reports``), no CLI (``cli``).
"""

from __future__ import annotations

import json
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
from sqlalchemy import CursorResult, Engine, insert, select, update

from gateway.clock import BEIJING, utcnow
from gateway.errors import GatewayError, StatementError
from gateway.models import Route
from reconciliation.matching import (
    PLATFORM_SCHEMA,
    Klass,
    classify,
    classify_spilled,
    summarise,
)
from reconciliation.platform import PaidTwice, paid_twice
from reconciliation.rows import RunRows
from reconciliation.schema import recon_items, recon_runs
from reconciliation.spill import RunParts
from reconciliation.statements import BadLines, Source, empty_batch, read_batches
from reconciliation.statements.model import BATCH_SCHEMA, LineKind, engine_lines

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
        c = self.counts()
        return bool(self.bad_lines) or any(c[k.value] for k in Klass if k.is_discrepancy)

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
                    sink: Callable[[pl.DataFrame], None] | None = None) -> list[pl.DataFrame]:
    """Every refund line of every source in ``ENGINE_SCHEMA``, one frame per parsed batch
    (payments and parser-only columns are dropped as each batch arrives). With ``sink``,
    each frame is handed to it as it is parsed (from the parsing threads) and the list
    returned is empty."""
    lock = threading.Lock()

    def one(src: Source) -> list[pl.DataFrame]:
        parts = []
        for batch in read_batches(src, bad):
            lines = engine_lines(batch)
            del batch
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


def open_items(engine: Engine, routes: Iterable[Route]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        q = select(recon_items).where(recon_items.c.state == "open").where(
            recon_items.c.route.in_([r.value for r in routes]))
        return [dict(r._mapping) for r in conn.execute(q)]


def carried_lines(items: list[dict[str, Any]], statement: pl.DataFrame | None
                  ) -> pl.DataFrame:
    """Stored statement sides of open unknown-to-platform items not on today's statement
    (``statement``: at least today's lines with those items' numbers)."""
    if statement is None or not any(i["refund_id"] is None for i in items):
        return engine_lines(empty_batch())
    today = set(statement.select(pl.concat_str(pl.col("route").cast(pl.String), pl.lit("|"),
                                               "channel_refund_no")
                                 ).to_series().to_list()) if statement.height else set()
    rows = [{"route": i["route"], "kind": LineKind.REFUND.value,
             "channel_refund_no": i["item_key"], "channel_refund_id": i["channel_refund_id"],
             "merchant_order_no": i["merchant_order_no"], "channel_trade_no": None,
             "amount_minor": i["statement_amount_minor"], "currency": i["currency"],
             "status": i["statement_status"] or "succeeded", "time": None,
             "source": f"carried from run {i['first_seen_run']}", "line": 0}
            for i in items if i["statement_amount_minor"] is not None
            and i["refund_id"] is None and f"{i['route']}|{i['item_key']}" not in today]
    return engine_lines(pl.DataFrame(rows, schema=BATCH_SCHEMA))


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT just created (SQLite and PostgreSQL both return it)."""
    pk = result.inserted_primary_key
    if pk is None or pk[0] is None:
        raise GatewayError("the database returned no primary key for an insert")
    return int(pk[0])


def persist(engine: Engine, result: RunResult, *, platform_source: str,
            statements: Sequence[str], started_at: datetime) -> int:
    counts = result.counts()
    outcome = "discrepancies" if result.has_discrepancies else "clean"
    now = utcnow()
    with engine.begin() as conn:
        run_id = _new_id(conn.execute(insert(recon_runs).values(
            run_date=result.run_date, routes=",".join(r.value for r in result.routes),
            started_at=started_at, finished_at=now, platform_source=platform_source[:256],
            statements=json.dumps(list(statements), ensure_ascii=False),
            totals=json.dumps(counts), bad_lines=json.dumps([str(e) for e in result.bad_lines],
                                                            ensure_ascii=False),
            outcome=outcome)))
        existing = {(r.route, r.item_key): dict(r._mapping) for r in conn.execute(
            select(recon_items).where(recon_items.c.route.in_(
                [r.value for r in result.routes])))}
        cols = ["class", "route", "refund_id", "channel_refund_no", "channel_refund_id",
                "merchant_order_no", "platform_amount_minor", "statement_amount_minor",
                "currency", "platform_status", "statement_status"]
        # Matched rows are written only when they close an open item: a 1M-refund day
        # is ~1% discrepancies, and only those (and closures) cost a Python loop.
        open_numbers = [k[1] for k, v in existing.items() if v["state"] == "open"]
        touched = result.scan().filter((pl.col("class") != Klass.MATCHED.value)
                                       | pl.col("channel_refund_no").is_in(open_numbers)
                                       ).select(cols).collect()
        for row in touched.iter_rows(named=True):
            key = (row["route"], row["channel_refund_no"])
            old = existing.get(key)
            values = {"refund_id": row["refund_id"], "class": row["class"],
                      "platform_amount_minor": row["platform_amount_minor"],
                      "statement_amount_minor": row["statement_amount_minor"],
                      "currency": row["currency"], "platform_status": row["platform_status"],
                      "statement_status": row["statement_status"],
                      "channel_refund_id": row["channel_refund_id"],
                      "merchant_order_no": row["merchant_order_no"], "last_seen_run": run_id}
            if row["class"] == Klass.MATCHED.value:
                if old is not None and old["state"] == "open":
                    conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                                 .values(**values, state="resolved", resolved_by="reconcile",
                                         resolved_at=now, note=f"matched in run {run_id}"))
                    result.states[key] = {"state": "resolved", "item_id": old["id"]}
                continue
            # An open paid-twice item names the other refunds of the release in its note
            # (until a person's resolution note replaces it).
            note = ({"note": linked_note(result.linked.get(key, ()))}
                    if row["class"] == Klass.PAID_TWICE.value else {})
            if old is None:
                item_id = _new_id(conn.execute(insert(recon_items).values(
                    **values, **note, route=row["route"], item_key=row["channel_refund_no"],
                    state="open", first_seen_run=run_id)))
                result.states[key] = {"state": "open", "item_id": item_id}
                continue
            reopen = old["state"] == "resolved" and old["class"] != row["class"]
            state = "open" if old["state"] == "open" or reopen else "resolved"
            extra: dict[str, Any] = ({"resolved_by": None, "resolved_at": None, "note": None}
                                     if reopen else {})
            if state == "open":
                extra.update(note)
            conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                         .values(**values, state=state, **extra))
            result.states[key] = {"state": state, "item_id": old["id"]}
    result.run_id = run_id
    return run_id


def linked_note(linked: Sequence[str]) -> str:
    """The note of an open paid-twice item: the other refunds of the release."""
    return f"paid after release; linked refunds: {', '.join(linked) or 'none'}"[:512]


def reconcile(*, run_date: date, routes: Sequence[Route], statements: Sequence[Source],
              platform: Callable[[list[str]], pl.DataFrame | Iterable[pl.DataFrame]],
              platform_source: str,
              engine: Engine | None, max_bad_lines: int = 100,
              progress: Callable[[int], None] | None = None,
              spill_dir: Path | None = None) -> RunResult:
    """Run and (with ``engine``) persist. ``platform(carried_keys)`` loads the refunds.
    A run of more than ``PARTITION_ROWS`` rows spills to a temporary directory under
    ``spill_dir`` (default: the system's), removed at the end, and keeps its classified
    rows in files in another one there, removed by ``RunResult.close``."""
    started = utcnow()
    bad = BadLines(limit=max_bad_lines)
    items = open_items(engine, routes) if engine is not None else []
    twice = paid_twice(engine, routes) if engine is not None else PaidTwice()
    carried = [i["item_key"] for i in items if i["refund_id"] is not None]
    parts = RunParts(PLATFORM_SCHEMA, spill_rows=PARTITION_ROWS, buckets=SPILL_BUCKETS,
                     routes=[r.value for r in routes], directory=spill_dir)
    try:
        # The platform side loads while the statements parse (both release the GIL);
        # both hand each part over as it is read.
        with ThreadPoolExecutor(max_workers=1) as pool:
            loading = pool.submit(_load_platform, platform, carried, parts, twice)
            statement_parts(statements, bad, progress,
                            sink=lambda df: parts.add("statement", df))
            loading.result()
        unknown_keys = [i["item_key"] for i in items if i["refund_id"] is None]
        parts.add("statement", carried_lines(
            items, parts.statement_keys(unknown_keys) if unknown_keys else None))
        if parts.spilled:
            stored, summary = classify_spilled(parts, run_date, spill_dir,
                                               paid_twice=twice.numbers)
        else:
            frames = {"platform": pl.concat([pl.DataFrame(schema=PLATFORM_SCHEMA),
                                             *parts.in_memory("platform")], how="vertical"),
                      "statement": pl.concat([engine_lines(empty_batch()),
                                              *parts.in_memory("statement")],
                                             how="vertical")}
            # Handed over without other references, so ``classify`` frees them once joined.
            rows = classify(frames.pop("platform"), frames.pop("statement"), run_date,
                            paid_twice=twice.numbers)
            stored, summary = RunRows(rows), summarise(rows)
            del rows
    finally:
        parts.close()
    result = RunResult(None, run_date, list(routes), stored, summary, bad.errors,
                       linked=twice.linked)
    if engine is not None:
        try:
            persist(engine, result, platform_source=platform_source,
                    statements=[s.name for s in statements], started_at=started)
        except BaseException:
            result.close()
            raise
    log.info("reconciliation_run", run_id=result.run_id, run_date=run_date.isoformat(),
             counts=result.counts(), bad_lines=len(bad.errors))
    return result


def _load_platform(platform: Callable[[list[str]], pl.DataFrame | Iterable[pl.DataFrame]],
                   carried: list[str], parts: RunParts, twice: PaidTwice) -> None:
    """The platform side, with the store's paid-twice refunds (``twice.rows``) in place
    of the loader's rows for them, so each is there once whatever the source and day."""
    loaded = platform(carried)
    taken = twice.rows.get_column("channel_refund_no").to_list()
    for frame in [loaded] if isinstance(loaded, pl.DataFrame) else loaded:
        parts.add("platform", frame.filter(~pl.col("channel_refund_no").is_in(taken))
                  if taken and frame.height else frame)
    parts.add("platform", twice.rows)


def list_items(engine: Engine, *, state: str | None = "open") -> list[dict[str, Any]]:
    q = select(recon_items).order_by(recon_items.c.route, recon_items.c.item_key)
    if state:
        q = q.where(recon_items.c.state == state)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


class ItemNotFound(GatewayError, LookupError):
    pass


def resolve_item(engine: Engine, item_id: int, *, by: str, note: str) -> dict[str, Any]:
    with engine.begin() as conn:
        row = conn.execute(select(recon_items).where(recon_items.c.id == item_id)).first()
        if row is None:
            raise ItemNotFound(f"no discrepancy with id {item_id}")
        conn.execute(update(recon_items).where(recon_items.c.id == item_id).values(
            state="resolved", resolved_by=by[:64], resolved_at=utcnow(), note=note[:512]))
        return {**dict(row._mapping), "state": "resolved", "resolved_by": by, "note": note}
