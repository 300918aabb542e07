"""Reads for receipts: where reconciliation stands on a refund (its discrepancy item in
``recon_items``, and the statement line that matched it in ``recon_matches``), and the
refunds of a day's class for the batch form. Read-only; a database without the tables
(migrations 0002 / 0004 not applied) or columns simply has nothing to say.

The later run's word wins: the match, or the item of a later run (a refund matched and
then listed again on a statement is a duplicate); a match and an item of the same run
are one fact (the item closed by that line). A caller holding a run's rows
(``RunResult.rows``) can pass the exact line with ``statement_ref_from_row``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, and_, inspect, or_, select
from sqlalchemy.orm import aliased

from gateway.clock import to_beijing
from gateway.models import Refund
from reconciliation.receipts.model import StatementRef
from reconciliation.schema import recon_items, recon_matches, recon_runs


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return to_beijing(value).isoformat(timespec="seconds")
    return None


def _ref(row: Mapping[str, Any], run_date: date | None) -> StatementRef:
    line = row.get("line")
    amount = row.get("statement_amount_minor", row.get("amount_minor"))
    return StatementRef(
        klass=str(row["class"]), state=row.get("state"),
        run_id=int(row["last_seen_run"]) if row.get("last_seen_run") is not None else None,
        run_date=run_date.isoformat() if run_date else None,
        file=row.get("source") or row.get("statement_file"),
        line=int(line) if line else None,
        statement_status=row.get("statement_status"),
        amount_minor=int(amount) if amount is not None else None,
        currency=row.get("currency"), statement_time=_iso(row.get("statement_time")))


def statement_ref_from_row(row: Mapping[str, Any], *, run_id: int | None = None,
                           run_date: date | None = None) -> StatementRef:
    """A ``reconciliation.matching.classify`` result row (it has ``source`` and ``line``)."""
    return _ref({**row, "last_seen_run": run_id, "state": row.get("state")}, run_date)


def _item(engine: Engine, refund: Refund) -> dict[str, Any] | None:
    q = (select(recon_items, recon_runs.c.run_date)
         .join(recon_runs, recon_runs.c.id == recon_items.c.last_seen_run)
         .where(or_(recon_items.c.refund_id == refund.id,
                    and_(recon_items.c.route == refund.route.value,
                         recon_items.c.item_key == refund.channel_refund_no)))
         .order_by(recon_items.c.id.desc()))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return dict(row._mapping) if row is not None else None


def _match(engine: Engine, refund: Refund) -> dict[str, Any] | None:
    m = recon_matches.c
    q = (select(recon_matches)
         .where(or_(m.refund_id == refund.id,
                    and_(m.route == refund.route.value, m.item_key == refund.channel_refund_no)))
         .order_by(m.run_id.desc(), m.id.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return dict(row._mapping) if row is not None else None


def reconciliation_for(engine: Engine, refund: Refund) -> StatementRef | None:
    """Where reconciliation stands on ``refund`` (by id, else by channel number)."""
    names = _tables(engine)
    item = _item(engine, refund) if {"recon_items", "recon_runs"} <= names else None
    match = _match(engine, refund) if "recon_matches" in names else None
    if match is not None and (item is None or match["run_id"] >= item["last_seen_run"]):
        same_run = item is not None and item["last_seen_run"] == match["run_id"]
        return _ref({**match, "class": "matched", "last_seen_run": match["run_id"],
                     "statement_status": "succeeded",
                     "state": item["state"] if same_run and item else None},
                    match["run_date"])
    if item is None:
        return None
    return _ref(item, item.get("run_date"))


def refund_ids_for(engine: Engine, day: date, klass: str) -> list[str]:
    """Refunds whose item of ``klass`` was seen by a run of ``day`` (first to last seen),
    sorted. Items without a platform refund (unknown to platform) have no receipt."""
    if not {"recon_items", "recon_runs"} <= _tables(engine):
        return []
    first, last = aliased(recon_runs), aliased(recon_runs)
    q = (select(recon_items.c.refund_id)
         .join(first, first.c.id == recon_items.c.first_seen_run)
         .join(last, last.c.id == recon_items.c.last_seen_run)
         .where(recon_items.c["class"] == klass, recon_items.c.refund_id.is_not(None),
                first.c.run_date <= day, last.c.run_date >= day)
         .order_by(recon_items.c.refund_id))
    with engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(q)]
