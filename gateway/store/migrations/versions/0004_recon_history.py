"""Reconciliation keeps its history (reconciliation/schema.py): an append-only event row
for every opening, reclassification, closing, resolution and reopening of a discrepancy;
the statement line that matched each refund; what carry-over judges an open item by.

Why: a second ``discrepancies resolve`` overwrote the first, a later run erased the note
a person wrote, and a paid-twice item's linked refunds lived in that same note. The note
column is gone: each existing note becomes a history row (a person's resolution, or the
run's closing "matched in run N"), a paid-twice item's linked refunds move to
``linked_refunds``. Downgrade puts the latest note back.

Revision ID: 0004_recon_history
Revises: 0003_payment_identity
"""
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0004_recon_history"
down_revision = "0003_payment_identity"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LINKED_PREFIX = "paid after release; linked refunds: "


def upgrade() -> None:
    with op.batch_alter_table("recon_runs") as batch:
        # JSON list; NULL reads as [] (a TEXT default is not portable to MySQL 8)
        batch.add_column(sa.Column("warnings", sa.Text))
    with op.batch_alter_table("recon_items") as batch:
        batch.add_column(sa.Column("succeeded_at", UTCDateTime))
        batch.add_column(sa.Column("arrival_latest", sa.Date))
        batch.add_column(sa.Column("source", sa.String(256)))
        batch.add_column(sa.Column("line", sa.BigInteger))
        batch.add_column(sa.Column("statement_time", UTCDateTime))
        batch.add_column(sa.Column("linked_refunds", sa.Text))
    history = _read_notes()
    _drop_column("recon_items", "note")
    events = op.create_table(
        "recon_item_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("item_id", BigId, sa.ForeignKey("recon_items.id"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("class_before", sa.String(32)),
        sa.Column("class_after", sa.String(32), nullable=False),
        sa.Column("state_before", sa.String(16)),
        sa.Column("state_after", sa.String(16), nullable=False),
        sa.Column("run_id", BigId, sa.ForeignKey("recon_runs.id")),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_index("ix_recon_item_events_item", "recon_item_events", ["item_id", "id"])
    op.create_table(
        "recon_matches",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("item_key", sa.String(80), nullable=False),
        sa.Column("refund_id", sa.String(32)),
        sa.Column("run_id", BigId, sa.ForeignKey("recon_runs.id"), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("merchant_order_no", sa.String(64)),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("succeeded_at", UTCDateTime),
        sa.Column("statement_time", UTCDateTime),
        sa.Column("source", sa.String(256)),
        sa.Column("line", sa.BigInteger),
    )
    op.create_index("uq_recon_matches_key", "recon_matches", ["route", "item_key"],
                    unique=True)
    op.create_index("ix_recon_matches_refund", "recon_matches", ["refund_id"])
    if history:
        op.get_bind().execute(sa.insert(events), history)


def _drop_column(table: str, column: str) -> None:
    """In place on every backend: SQLite (3.35+) drops an unindexed column itself, where
    a batch copy of the table would trip the foreign keys that point at it."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    else:
        op.drop_column(table, column)


def _read_notes() -> list[dict[str, object]]:
    """Each item's opening (as far as it is known) and its note, as history rows; a
    paid-twice item's linked refunds go to ``linked_refunds`` on the way."""
    conn = op.get_bind()
    items = sa.table("recon_items", sa.column("id"), sa.column("class"), sa.column("state"),
                     sa.column("first_seen_run"), sa.column("resolved_by"),
                     sa.column("resolved_at", UTCDateTime), sa.column("note"),
                     sa.column("linked_refunds"))
    runs = sa.table("recon_runs", sa.column("id"), sa.column("started_at", UTCDateTime))
    started = dict(conn.execute(sa.select(runs.c.id, runs.c.started_at)).all())
    rows = conn.execute(sa.select(items)).mappings().all()
    now = datetime.now(UTC)
    history: list[dict[str, object]] = []
    for item in rows:
        opened_at = started.get(item["first_seen_run"]) or now
        history.append({"item_id": item["id"], "at": opened_at, "actor": "reconcile",
                        "action": "opened", "class_before": None,
                        "class_after": item["class"], "state_before": None,
                        "state_after": "open", "run_id": item["first_seen_run"],
                        "note": "opened (recorded before history was kept)"})
        note = item["note"] or ""
        if note.startswith(LINKED_PREFIX):
            linked = [i for i in note[len(LINKED_PREFIX):].split(", ") if i and i != "none"]
            conn.execute(sa.update(items).where(items.c.id == item["id"])
                         .values(linked_refunds=json.dumps(linked)))
            note = ""
        if item["state"] == "resolved":
            by = item["resolved_by"] or "unknown"
            history.append({"item_id": item["id"], "at": item["resolved_at"] or now,
                            "actor": by[:64],
                            "action": "closed" if by == "reconcile" else "resolved",
                            "class_before": item["class"], "class_after": item["class"],
                            "state_before": "open", "state_after": "resolved",
                            "run_id": None, "note": note or "(no note recorded)"})
    return history


def downgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("recon_items") as batch:
        batch.add_column(sa.Column("note", sa.String(512)))
    items = sa.table("recon_items", sa.column("id"), sa.column("note"))
    events = sa.table("recon_item_events", sa.column("id"), sa.column("item_id"),
                      sa.column("note"))
    latest = conn.execute(sa.select(events.c.item_id, events.c.note)
                          .order_by(events.c.item_id, events.c.id)).all()
    for item_id, note in dict(latest).items():
        conn.execute(sa.update(items).where(items.c.id == item_id).values(note=note[:512]))
    op.drop_table("recon_matches")
    op.drop_table("recon_item_events")
    for name in ("linked_refunds", "statement_time", "line", "source", "arrival_latest",
                 "succeeded_at"):
        _drop_column("recon_items", name)
    _drop_column("recon_runs", "warnings")
