"""Reads for receipts: reconciliation items (``reconciliation.schema``) by refund, and by
date and class for the batch form. Read-only; a database without the reconciliation
tables (migration 0002 not applied) simply has nothing to say.

``recon_items`` keeps one row per discrepancy, not the statement file and line; when the
table grows ``source``/``line`` columns they are picked up here. A caller holding a run's
rows (``RunResult.rows``) can pass the exact line with ``statement_ref_from_row``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import Engine, and_, inspect, or_, select
from sqlalchemy.orm import aliased

from gateway.models import Refund
from reconciliation.receipts.model import StatementRef
from reconciliation.schema import recon_items, recon_runs


def _has_tables(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    return {"recon_items", "recon_runs"} <= names


def _ref(row: Mapping[str, Any], run_date: date | None) -> StatementRef:
    line = row.get("line")
    return StatementRef(
        klass=str(row["class"]), state=row.get("state"),
        run_id=int(row["last_seen_run"]) if row.get("last_seen_run") is not None else None,
        run_date=run_date.isoformat() if run_date else None,
        file=row.get("source") or row.get("statement_file"),
        line=int(line) if line else None,
        statement_status=row.get("statement_status"))


def statement_ref_from_row(row: Mapping[str, Any], *, run_id: int | None = None,
                           run_date: date | None = None) -> StatementRef:
    """A ``reconciliation.matching.classify`` result row (it has ``source`` and ``line``)."""
    return _ref({**row, "last_seen_run": run_id}, run_date)


def reconciliation_for(engine: Engine, refund: Refund) -> StatementRef | None:
    """The persisted reconciliation item of ``refund`` (by id, else by channel number)."""
    if not _has_tables(engine):
        return None
    q = (select(recon_items, recon_runs.c.run_date)
         .join(recon_runs, recon_runs.c.id == recon_items.c.last_seen_run)
         .where(or_(recon_items.c.refund_id == refund.id,
                    and_(recon_items.c.route == refund.route.value,
                         recon_items.c.item_key == refund.channel_refund_no)))
         .order_by(recon_items.c.id.desc()))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    m = dict(row._mapping)
    return _ref(m, m.get("run_date"))


def refund_ids_for(engine: Engine, day: date, klass: str) -> list[str]:
    """Refunds whose item of ``klass`` was seen by a run of ``day`` (first to last seen),
    sorted. Items without a platform refund (unknown to platform) have no receipt."""
    if not _has_tables(engine):
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
