"""Receipts as immutable versions (reconciliation/receipts/schema.py): every receipt
handed out is kept as its exact signed JSON with its SHA-256, never updated, so a printed
receipt keeps verifying after the refund or its reconciliation item moves on.

Chained after 0007_relay, the head when this was written (0004 -> 0006 -> 0007), so
the schema keeps one head; the number only says when it was planned.

Revision ID: 0005_receipt_versions
Revises: 0007_relay
"""
import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0005_receipt_versions"
down_revision = "0007_relay"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "receipt_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("refund_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("previous_sha256", sa.String(64)),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.UniqueConstraint("refund_id", "version", name="uq_receipt_versions_version"),
        sa.UniqueConstraint("sha256", name="uq_receipt_versions_sha256"),
    )


def downgrade() -> None:
    op.drop_table("receipt_versions")
