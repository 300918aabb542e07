"""Reconciliation tables (SQLAlchemy Core) on the gateway's MetaData: runs and the
discrepancies they found. Created by migration ``0002_reconciliation``; this module is what
queries are written against. Amounts are integer minor units, times aware UTC.
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
    Column("note", String(512)),
    Index("uq_recon_items_key", "route", "item_key", unique=True),
    Index("ix_recon_items_state", "state"),
)
