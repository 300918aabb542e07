"""Discrepancy items and their history in the store: what a run records, what a person
resolves or reopens, what ``discrepancies list/show`` reads.

A run (``persist``) records itself, opens an item for each new discrepancy, moves open
items on (a changed class is a "reclassified" event with its reason; a matching statement
line closes the item), reopens a resolved item whose class changed, and records the
statement line of every matched refund (``recon_matches``: receipts quote it, and a later
statement listing the refund again makes a duplicate). Every change of an item is an
append-only row of ``recon_item_events`` (who, when, note, class and state before and
after); nothing a person wrote is ever overwritten. Resolving needs a non-empty ``by``
and ``note`` and an open item; reopening a resolved one. No classification here
(``matching``), no input checks (``inputs``), no CLI.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

import polars as pl
from sqlalchemy import Connection, CursorResult, Engine, Table, func, insert, select, update

from gateway.clock import utcnow
from gateway.errors import GatewayError
from gateway.money import Money
from gateway.store.schema import payments, refunds
from reconciliation.matching import Klass
from reconciliation.schema import recon_item_events, recon_items, recon_matches, recon_runs

RECONCILE: Final = "reconcile"          # the actor of a run's own changes
MAX_BY: Final = 64                      # recon_item_events.actor / recon_items.resolved_by
MAX_NOTE: Final = 4000
_ROW_COLUMNS: Final = ["class", "route", "refund_id", "channel_refund_no",
                       "channel_refund_id", "merchant_order_no", "platform_amount_minor",
                       "statement_amount_minor", "currency", "platform_status",
                       "statement_status", "succeeded_at", "statement_time",
                       "arrival_latest", "statement_lines", "source", "line"]
_CHUNK: Final = 500
CARRIED_LINE: Final = 0        # job.carried_lines: a stored line standing in for today's
_NEGATIVE: Final = ("failed", "closed", "abnormal")
_SETTLED: Final = (Klass.MATCHED.value, Klass.NOT_REFUNDED.value)


class ItemNotFound(GatewayError, LookupError):
    pass


class ItemStateError(GatewayError):
    """The item is not in the state the action needs (resolving a resolved item...)."""


class InvalidEntry(GatewayError, ValueError):
    """What a person typed cannot be recorded as is (empty, or longer than stored)."""


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT just created (every supported backend returns it)."""
    pk = result.inserted_primary_key
    if pk is None or pk[0] is None:
        raise GatewayError("the database returned no primary key for an insert")
    return int(pk[0])


def _yuan(minor: int | None) -> str | None:
    return None if minor is None else Money(int(minor)).format()


def _place(row: Mapping[str, Any]) -> str:
    if not row.get("source"):
        return "no statement line"
    if row.get("line") == CARRIED_LINE:
        return f"the line {row['source']}"
    return f"{row['source']}:{row['line']}"


def reason(row: Mapping[str, Any], *, run_id: int,
           earlier: Mapping[str, Any] | None = None, carried: bool = False) -> str:
    """Why a run gave ``row`` (a classified row) its class, in a sentence."""
    k = Klass(row["class"])
    when = row.get("arrival_latest")
    due = when.isoformat() if isinstance(when, date) else "?"
    judged = " (judged from the open item: the refund is not in this day's export)" \
        if carried else ""
    if k is Klass.MATCHED:
        return f"matched in run {run_id} ({_place(row)})"
    if k is Klass.IN_TRANSIT:
        return (f"no statement line yet; expected by {due}{judged}"
                if not row.get("statement_lines") else
                f"the channel still processes it ({_place(row)}); expected by {due}")
    if k is Klass.NOT_RECEIVED:
        if not row.get("statement_lines"):
            return f"arrival deadline {due} passed with no statement line{judged}"
        if row.get("statement_status") in _NEGATIVE:
            return f"the statement says {row['statement_status']} ({_place(row)})"
        return f"arrival deadline {due} passed; the channel still processes it " \
               f"({_place(row)})"
    if k is Klass.UNKNOWN:
        return f"on the statement ({_place(row)}) but the platform has no such refund"
    if k is Klass.AMOUNT:
        return (f"platform {_yuan(row['platform_amount_minor'])}, statement "
                f"{_yuan(row['statement_amount_minor'])} ({_place(row)})")
    if k is Klass.DUPLICATE:
        if earlier is not None:
            return (f"matched in run {earlier['run_id']} of {earlier['run_date']} "
                    f"({earlier.get('source') or '?'}:{earlier.get('line') or '?'}) and "
                    f"listed again ({_place(row)})")
        return f"{row.get('statement_lines')} statement lines for one refund ({_place(row)})"
    if k is Klass.STATUS:
        return (f"platform {row.get('platform_status')}, statement "
                f"{row.get('statement_status') or 'no line'} ({_place(row)})")
    if k is Klass.NOT_REFUNDED:
        return (f"no money moved: platform {row.get('platform_status')}, statement "
                f"{row.get('statement_status') or 'no line'} ({_place(row)}), in run {run_id}")
    return "paid after its amount was released"


def _event(conn: Connection, item_id: int, *, at: datetime, actor: str, action: str,
           class_before: str | None, class_after: str, state_before: str | None,
           state_after: str, note: str, run_id: int | None = None) -> dict[str, Any]:
    values = {"item_id": item_id, "at": at, "actor": actor, "action": action,
              "class_before": class_before, "class_after": class_after,
              "state_before": state_before, "state_after": state_after, "run_id": run_id,
              "note": note}
    event_id = _new_id(conn.execute(insert(recon_item_events).values(**values)))
    return {"id": event_id, **values}


def open_items(engine: Engine, routes: Iterable[str],
               accounts: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The open items of ``routes``, each with ``first_seen_date`` (its first run's day).

    ``accounts`` (a run scoped to some merchant accounts; None: every account): only the
    items of those accounts, so a run that did not read an account's statement does not
    judge that account's items (an in-transit refund of another shop would become
    "refunded, not received" for want of a line on a statement nobody read). An item
    belongs to its refund's payment's account; one with no refund in the store (unknown
    to the platform, or a CSV platform's refund) to the accounts of the run that first
    saw it: it is carried when that run was scoped to a subset of ``accounts`` (an
    unscoped run's stays with the unscoped runs)."""
    q = (select(recon_items, recon_runs.c.run_date.label("first_seen_date"))
         .join(recon_runs, recon_runs.c.id == recon_items.c.first_seen_run)
         .where(recon_items.c.state == "open", recon_items.c.route.in_(list(routes))))
    if accounts is None:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
    q = (q.add_columns(payments.c.merchant_account.label("scope_account"),
                       recon_runs.c.accounts.label("scope_run_accounts"))
         .outerjoin(refunds, refunds.c.id == recon_items.c.refund_id)
         .outerjoin(payments, payments.c.id == refunds.c.payment_id))
    kept = []
    with engine.connect() as conn:
        for row in conn.execute(q):
            item = dict(row._mapping)
            if _in_scope(item.pop("scope_account"), item.pop("scope_run_accounts"),
                         accounts):
                kept.append(item)
    return kept


def _in_scope(account: str | None, run_accounts: str | None,
              accounts: Collection[str]) -> bool:
    """Whether an item of ``account`` (its refund's; None: no refund in the store), first
    seen by a run of ``run_accounts`` (JSON list; None: every account), is of
    ``accounts``."""
    if account is not None:
        return account in accounts
    return run_accounts is not None and set(json.loads(run_accounts)) <= set(accounts)


def _by_keys(conn: Connection, table: Table, keys: Sequence[tuple[str, str]]
             ) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of ``table`` (route, item_key) for ``keys``, a chunk of numbers at a time."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    want = set(keys)
    numbers = sorted({k[1] for k in want})
    for i in range(0, len(numbers), _CHUNK):
        for r in conn.execute(select(table).where(
                table.c.item_key.in_(numbers[i:i + _CHUNK]))):
            m = dict(r._mapping)
            if (m["route"], m["item_key"]) in want:
                out[(m["route"], m["item_key"])] = m
    return out


def items_by_keys(engine: Engine, keys: Sequence[tuple[str, str]]
                  ) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as conn:
        return _by_keys(conn, recon_items, keys)


def earlier_matches(engine: Engine, keys: Sequence[tuple[str, str]], run_date: date
                    ) -> dict[tuple[str, str], dict[str, Any]]:
    """The recorded matches of ``keys`` made by runs of another day than ``run_date``
    (a rerun of the same day sees its own lines again: not a duplicate)."""
    with engine.connect() as conn:
        found = _by_keys(conn, recon_matches, keys)
    return {k: m for k, m in found.items() if m["run_date"] != run_date}


_MATCH_COLUMNS: Final = ["route", "item_key", "refund_id", "merchant_order_no",
                         "amount_minor", "currency", "succeeded_at", "statement_time",
                         "source", "line", "run_id", "run_date"]
_LISTED: Final = ", ".join(_MATCH_COLUMNS)
# Built from the constant column list above, never from data.
_PG_STAGE: Final = (f"CREATE TEMP TABLE recon_matches_in AS SELECT {_LISTED} "  # noqa: S608
                    "FROM recon_matches WITH NO DATA")
_PG_COPY: Final = f"COPY recon_matches_in ({_LISTED}) FROM STDIN"
_PG_MERGE: Final = (f"INSERT INTO recon_matches ({_LISTED}) SELECT {_LISTED} "  # noqa: S608
                    "FROM recon_matches_in ON CONFLICT (route, item_key) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in _MATCH_COLUMNS[2:]))


def _upsert_matches(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """One row per matched (route, number), ``rows`` in ``_MATCH_COLUMNS`` order: insert,
    or replace the earlier one (a rerun of the day, or an older day run again). A day of
    1M refunds writes 1M rows: PostgreSQL takes them by COPY into a temporary table and
    one INSERT ... ON CONFLICT (about twice as fast as batched INSERTs); SQLite spends its
    time in the index either way (~16 us a row)."""
    if not rows:
        return
    cols, keep = _MATCH_COLUMNS, _MATCH_COLUMNS[2:]
    name = conn.dialect.name
    if name == "postgresql":
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(_PG_STAGE)
            with cur.copy(_PG_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_PG_MERGE)
            cur.execute("DROP TABLE recon_matches_in")
        finally:
            cur.close()
        return
    dicts = [dict(zip(cols, r, strict=True)) for r in rows]
    for i in range(0, len(dicts), 5_000):
        chunk = dicts[i:i + 5_000]
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

            sq = sqlite_insert(recon_matches)
            conn.execute(sq.on_conflict_do_update(
                index_elements=["route", "item_key"],
                set_={c: sq.excluded[c] for c in keep}), chunk)
        else:   # MySQL / MariaDB
            from sqlalchemy.dialects.mysql import insert as mysql_insert  # noqa: PLC0415

            mq = mysql_insert(recon_matches)
            conn.execute(mq.on_duplicate_key_update(
                {c: mq.inserted[c] for c in keep}), chunk)


def persist(engine: Engine, result: Any, *, platform_source: str,
            statements: Sequence[str], started_at: datetime) -> int:
    """Record ``result`` (a ``job.RunResult``): the run, its items and their events, the
    matched lines. Fills ``result.states`` and ``result.run_id``."""
    counts = result.counts()
    outcome = "discrepancies" if result.has_discrepancies else "clean"
    now = utcnow()
    run_date = result.run_date
    routes = [r.value for r in result.routes]
    with engine.begin() as conn:
        run_id = _new_id(conn.execute(insert(recon_runs).values(
            run_date=run_date, routes=",".join(routes), started_at=started_at,
            finished_at=now, platform_source=platform_source[:256],
            statements=json.dumps(list(statements), ensure_ascii=False),
            totals=json.dumps(counts), bad_lines=json.dumps([str(e) for e in result.bad_lines],
                                                            ensure_ascii=False),
            warnings=json.dumps([w.to_json() for w in result.warnings], ensure_ascii=False,
                                default=str),
            outcome=outcome, accounts=None if result.accounts is None
            else json.dumps(result.accounts))))
        open_keys = [(i["route"], i["item_key"]) for i in result.open_before]
        known = list(result.known_items)
        # Matched rows concern items only when they close one: a 1M-refund day is ~1%
        # discrepancies, and only those (and closures) cost a Python loop here.
        wanted = [*open_keys, *known]
        numbers = sorted({k[1] for k in wanted})
        touched = result.scan().filter(
            ~pl.col("class").is_in(_SETTLED) | pl.col("channel_refund_no").is_in(numbers)
        ).select(_ROW_COLUMNS).collect()
        touched = touched.with_columns(pl.col("route").cast(pl.String),
                                       pl.col("class").cast(pl.String))
        keys = [(r, n) for r, n in touched.select("route", "channel_refund_no").iter_rows()]
        existing = _by_keys(conn, recon_items, keys)
        for row in touched.iter_rows(named=True):
            key = (row["route"], row["channel_refund_no"])
            _persist_row(conn, result, row, existing.get(key), run_id=run_id, now=now)
        matched = result.scan().filter(pl.col("class") == Klass.MATCHED.value).select(
            pl.col("route").cast(pl.String), pl.col("channel_refund_no").alias("item_key"),
            "refund_id", "merchant_order_no",
            pl.coalesce("platform_amount_minor", "statement_amount_minor").alias(
                "amount_minor"), pl.col("currency").cast(pl.String), "succeeded_at",
            "statement_time", pl.col("source").cast(pl.String), "line").collect()
        matched = matched.with_columns(pl.lit(run_id).alias("run_id"),
                                       pl.lit(run_date).alias("run_date")).select(
            _MATCH_COLUMNS)
        found = list(matched.iter_rows())
        carried = matched.with_row_index("_i").filter(pl.col("line") == CARRIED_LINE)
        for i, route, number in carried.select("_i", "route", "item_key").iter_rows():
            old = existing.get((route, number))
            if old is not None:   # matched on the item's stored line: that is the evidence
                row = dict(zip(_MATCH_COLUMNS, found[i], strict=True))
                row.update(source=old["source"], line=old["line"],
                           statement_time=old["statement_time"])
                found[i] = tuple(row[c] for c in _MATCH_COLUMNS)
        _upsert_matches(conn, found)
    result.run_id = run_id
    return run_id


def _persist_row(conn: Connection, result: Any, row: dict[str, Any],
                 old: dict[str, Any] | None, *, run_id: int, now: datetime) -> None:
    key = (row["route"], row["channel_refund_no"])
    klass = row["class"]
    linked = result.linked.get(key) if klass == Klass.PAID_TWICE.value else None
    chain = result.chains.get(key)
    values: dict[str, Any] = {
        "refund_id": row["refund_id"], "class": klass,
        "platform_amount_minor": row["platform_amount_minor"],
        "statement_amount_minor": row["statement_amount_minor"],
        "currency": row["currency"], "platform_status": row["platform_status"],
        "statement_status": row["statement_status"],
        "channel_refund_id": row["channel_refund_id"],
        "merchant_order_no": row["merchant_order_no"], "last_seen_run": run_id,
        "succeeded_at": row["succeeded_at"], "arrival_latest": row["arrival_latest"],
    }
    if row["line"] != CARRIED_LINE:     # a carried line keeps the item's own reference
        values.update({"source": None if row["source"] is None else str(row["source"])[:256],
                       "line": row["line"] if row["source"] is not None else None,
                       "statement_time": row["statement_time"]})
    if linked or chain:
        values["linked_refunds"] = json.dumps(
            list(linked or [i for i in chain or () if i != row["refund_id"]]))
    why = reason(row, run_id=run_id, earlier=result.earlier.get(key),
                 carried=key in result.carried)
    if klass in _SETTLED:
        # Nothing left to do (the money arrived, or both sides agree none moved): no new
        # item; an open one is closed.
        if old is None:
            return
        if old["state"] == "open" or old["class"] != klass:
            # A statement line settles it: closed by the run (a person's resolution,
            # if there was one, stays in the history and on the item).
            extra = ({"state": "resolved", "resolved_by": RECONCILE, "resolved_at": now}
                     if old["state"] == "open" else {})
            conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                         .values(**values, **extra))
            _event(conn, old["id"], at=now, actor=RECONCILE, action="closed",
                   class_before=old["class"], class_after=klass,
                   state_before=old["state"], state_after="resolved", note=why,
                   run_id=run_id)
        else:
            conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                         .values(**values))
        result.states[key] = {"state": "resolved", "item_id": old["id"]}
        return
    if old is None:
        item_id = _new_id(conn.execute(insert(recon_items).values(
            **values, route=row["route"], item_key=row["channel_refund_no"],
            state="open", first_seen_run=run_id)))
        _event(conn, item_id, at=now, actor=RECONCILE, action="opened", class_before=None,
               class_after=klass, state_before=None, state_after="open", note=why,
               run_id=run_id)
        result.states[key] = {"state": "open", "item_id": item_id}
        return
    changed = old["class"] != klass
    if old["state"] == "open":
        conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                     .values(**values))
        if changed:
            _event(conn, old["id"], at=now, actor=RECONCILE, action="reclassified",
                   class_before=old["class"], class_after=klass, state_before="open",
                   state_after="open", note=why, run_id=run_id)
        result.states[key] = {"state": "open", "item_id": old["id"]}
        return
    if changed:
        conn.execute(update(recon_items).where(recon_items.c.id == old["id"])
                     .values(**values, state="open", resolved_by=None, resolved_at=None))
        _event(conn, old["id"], at=now, actor=RECONCILE, action="reopened",
               class_before=old["class"], class_after=klass, state_before="resolved",
               state_after="open", run_id=run_id,
               note=f"reopened: run {run_id} finds it {Klass(klass).label} (was "
                    f"{Klass(old['class']).label}): {why}")
        result.states[key] = {"state": "open", "item_id": old["id"]}
        return
    conn.execute(update(recon_items).where(recon_items.c.id == old["id"]).values(**values))
    result.states[key] = {"state": "resolved", "item_id": old["id"]}


# --- reading and the person's side -------------------------------------------------

def _item_json(m: Mapping[str, Any]) -> dict[str, Any]:
    return {**m, "linked_refunds": json.loads(m["linked_refunds"] or "[]")}


def list_items(engine: Engine, *, state: str | None = "open") -> list[dict[str, Any]]:
    """Items (open only by default), each with its latest event (``last_event``) and
    how many it has (``events``)."""
    q = select(recon_items).order_by(recon_items.c.route, recon_items.c.item_key)
    if state:
        q = q.where(recon_items.c.state == state)
    with engine.connect() as conn:
        items = [_item_json(dict(r._mapping)) for r in conn.execute(q)]
        ids = [i["id"] for i in items]
        latest: dict[int, dict[str, Any]] = {}
        counts: dict[int, int] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            last = (select(recon_item_events.c.item_id,
                           func.max(recon_item_events.c.id).label("last"),
                           func.count().label("n"))
                    .where(recon_item_events.c.item_id.in_(chunk))
                    .group_by(recon_item_events.c.item_id).subquery())
            for r in conn.execute(select(recon_item_events, last.c.n).join(
                    last, last.c.last == recon_item_events.c.id)):
                m = dict(r._mapping)
                counts[m["item_id"]] = int(m.pop("n"))
                latest[m["item_id"]] = m
    for item in items:
        item["last_event"] = latest.get(item["id"])
        item["events"] = counts.get(item["id"], 0)
    return items


def item_history(engine: Engine, item_id: int) -> tuple[dict[str, Any],
                                                         list[dict[str, Any]]]:
    """An item and every event of it, oldest first."""
    with engine.connect() as conn:
        row = conn.execute(select(recon_items).where(recon_items.c.id == item_id)).first()
        if row is None:
            raise ItemNotFound(f"no discrepancy with id {item_id}")
        events = [dict(r._mapping) for r in conn.execute(
            select(recon_item_events).where(recon_item_events.c.item_id == item_id)
            .order_by(recon_item_events.c.id))]
    return _item_json(dict(row._mapping)), events


def _entry(by: str, note: str) -> tuple[str, str]:
    who, what = (by or "").strip(), (note or "").strip()
    if not who:
        raise InvalidEntry("--by is empty: say who resolved it")
    if not what:
        raise InvalidEntry("--note is empty: say what was done")
    if len(who) > MAX_BY:
        raise InvalidEntry(f"--by is {len(who)} characters; at most {MAX_BY} are kept")
    if len(what) > MAX_NOTE:
        raise InvalidEntry(f"--note is {len(what)} characters; at most {MAX_NOTE} are kept")
    return who, what


def _transition(engine: Engine, item_id: int, *, by: str, note: str, action: str,
                need: str, to: str, at: datetime | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    who, what = _entry(by, note)
    now = at or utcnow()
    with engine.begin() as conn:
        row = conn.execute(select(recon_items).where(recon_items.c.id == item_id)).first()
        if row is None:
            raise ItemNotFound(f"no discrepancy with id {item_id}")
        item = dict(row._mapping)
        if item["state"] != need:
            if item["state"] == "resolved":
                last = conn.execute(
                    select(recon_item_events).where(recon_item_events.c.item_id == item_id)
                    .order_by(recon_item_events.c.id.desc()).limit(1)).first()
                by_whom = (f" by {last.actor} at {last.at.astimezone(UTC).isoformat()}"
                           if last is not None else "")
                raise ItemStateError(f"discrepancy {item_id} is already resolved{by_whom}; "
                                     "reopen it first (discrepancies reopen)")
            raise ItemStateError(f"discrepancy {item_id} is {item['state']}, not {need}")
        resolution = ({"resolved_by": who, "resolved_at": now} if to == "resolved"
                      else {"resolved_by": None, "resolved_at": None})
        # Guarded on the state read above: a concurrent resolve changes no row here.
        done = conn.execute(update(recon_items).where(recon_items.c.id == item_id,
                                                      recon_items.c.state == need)
                            .values(state=to, **resolution))
        if done.rowcount != 1:
            raise ItemStateError(f"discrepancy {item_id} changed meanwhile; try again")
        event = _event(conn, item_id, at=now, actor=who, action=action,
                       class_before=item["class"], class_after=item["class"],
                       state_before=need, state_after=to, note=what)
    return _item_json({**item, "state": to, **resolution}), event


def resolve_item(engine: Engine, item_id: int, *, by: str, note: str,
                 at: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolve an open item; returns the item and its new history row."""
    return _transition(engine, item_id, by=by, note=note, action="resolved", need="open",
                       to="resolved", at=at)


def reopen_item(engine: Engine, item_id: int, *, by: str, note: str,
                at: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reopen a resolved item; returns the item and its new history row."""
    return _transition(engine, item_id, by=by, note=note, action="reopened",
                       need="resolved", to="open", at=at)
