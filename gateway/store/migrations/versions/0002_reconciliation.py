"""Reconciliation runs and the discrepancies they track (reconciliation/schema.py).

Revision ID: 0002_reconciliation
Revises: 0001_initial
"""
import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0002_reconciliation"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recon_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("routes", sa.String(64), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("platform_source", sa.String(256), nullable=False),
        sa.Column("statements", sa.Text, nullable=False),
        sa.Column("totals", sa.Text, nullable=False),
        sa.Column("bad_lines", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_recon_runs_date", "recon_runs", ["run_date"])
    op.create_table(
        "recon_items",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("item_key", sa.String(80), nullable=False),
        sa.Column("refund_id", sa.String(32)),
        sa.Column("class", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("platform_amount_minor", sa.BigInteger),
        sa.Column("statement_amount_minor", sa.BigInteger),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("platform_status", sa.String(16)),
        sa.Column("statement_status", sa.String(16)),
        sa.Column("channel_refund_id", sa.String(64)),
        sa.Column("merchant_order_no", sa.String(64)),
        sa.Column("first_seen_run", BigId, sa.ForeignKey("recon_runs.id"), nullable=False),
        sa.Column("last_seen_run", BigId, sa.ForeignKey("recon_runs.id"), nullable=False),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("resolved_at", UTCDateTime),
        sa.Column("note", sa.String(512)),
    )
    op.create_index("uq_recon_items_key", "recon_items", ["route", "item_key"], unique=True)
    op.create_index("ix_recon_items_state", "recon_items", ["state"])


def downgrade() -> None:
    op.drop_table("recon_items")
    op.drop_table("recon_runs")
