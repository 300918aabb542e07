"""Reconciliation tables (SQLAlchemy Core) on the gateway's MetaData: runs, the
discrepancies they found, each discrepancy's history, and the statement line that matched
each refund. Created by migrations ``0002_reconciliation``, ``0004_recon_history`` and
``0009_recon_run_accounts``; this module is what queries are written against. Amounts
are integer minor units, times aware UTC.

``recon_item_events`` is append-only: every opening, reclassification, closing by a
statement line, resolution and reopening of an item is a row (who, when, note, class and
state before and after); nothing updates or deletes one. The item row holds its current
state only (``resolved_by``/``resolved_at``: the current resolution, cleared on reopening;
the history keeps every one).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, ForeignKey, Index, String, Table, Text

from gateway.store.schema import BigId, metadata
from gateway.store.types import UTCDateTime

recon_runs = Table(
    "recon_runs", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_date", Date, nullable=False),
    Column("routes", String(64), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("platform_source", String(256), nullable=False),
    Column("statements", Text, nullable=False),      # JSON list of source names
    Column("totals", Text, nullable=False),          # JSON {class: count}
    Column("bad_lines", Text, nullable=False),       # JSON list of "file:line: reason"
    Column("outcome", String(16), nullable=False),   # clean | discrepancies | failed
    # JSON list of {code, message, count, source} (input warnings: lines of other days...);
    # NULL reads as [] (runs recorded before 0004_recon_history)
    Column("warnings", Text),
    # JSON list of the merchant accounts a run was scoped to (``reconcile --account``);
    # NULL: every account (and every run recorded before 0009_recon_run_accounts).
    # Carry-over reads it for the items with no refund of their own (job.py).
    Column("accounts", Text),
    Index("ix_recon_runs_date", "run_date"),
)

recon_items = Table(
    "recon_items", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("route", String(16), nullable=False),
    Column("item_key", String(80), nullable=False),  # channel refund number
    Column("refund_id", String(32)),
    Column("class", String(32), nullable=False),
    Column("state", String(16), nullable=False),     # open | resolved
    Column("platform_amount_minor", BigInteger),
    Column("statement_amount_minor", BigInteger),
    Column("currency", String(3), nullable=False),
    Column("platform_status", String(16)),
    Column("statement_status", String(16)),
    Column("channel_refund_id", String(64)),
    Column("merchant_order_no", String(64)),
    Column("first_seen_run", BigId, ForeignKey("recon_runs.id"), nullable=False),
    Column("last_seen_run", BigId, ForeignKey("recon_runs.id"), nullable=False),
    Column("resolved_by", String(64)),
    Column("resolved_at", UTCDateTime),
    # What a later run judges the item by when its refund is not in that day's export
    # (carry-over): when the platform says it succeeded and when it should have arrived.
    Column("succeeded_at", UTCDateTime),
    Column("arrival_latest", Date),
    # The statement line the item was last seen on (file, 1-based line, its time).
    Column("source", String(256)),
    Column("line", BigInteger),
    Column("statement_time", UTCDateTime),
    # JSON list of refund ids: a paid-twice refund's release, a reroute chain.
    Column("linked_refunds", Text),
    Index("uq_recon_items_key", "route", "item_key", unique=True),
    Index("ix_recon_items_state", "state"),
)

recon_item_events = Table(
    "recon_item_events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("item_id", BigId, ForeignKey("recon_items.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),     # a person's --by, or "reconcile"
    # opened | reclassified | closed | resolved | reopened
    Column("action", String(16), nullable=False),
    Column("class_before", String(32)),
    Column("class_after", String(32), nullable=False),
    Column("state_before", String(16)),
    Column("state_after", String(16), nullable=False),
    Column("run_id", BigId, ForeignKey("recon_runs.id")),
    Column("note", Text, nullable=False),
    Index("ix_recon_item_events_item", "item_id", "id"),
)

recon_matches = Table(
    "recon_matches", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("route", String(16), nullable=False),
    Column("item_key", String(80), nullable=False),  # channel refund number
    Column("refund_id", String(32)),
    Column("run_id", BigId, ForeignKey("recon_runs.id"), nullable=False),
    Column("run_date", Date, nullable=False),
    Column("merchant_order_no", String(64)),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("succeeded_at", UTCDateTime),
    # The statement line that confirmed the money (receipts quote it).
    Column("statement_time", UTCDateTime),
    Column("source", String(256)),
    Column("line", BigInteger),
    Index("uq_recon_matches_key", "route", "item_key", unique=True),
    Index("ix_recon_matches_refund", "refund_id"),
)
