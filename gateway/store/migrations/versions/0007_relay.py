"""The relays: a delivery per (relay, outbox event) and every attempt to deliver it.

Revision ID: 0007_relay
Revises: 0006_outbox
"""
import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0007_relay"
down_revision = "0006_outbox"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "relay_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("relay", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("outbox_cursor", sa.BigInteger, nullable=False),
        sa.Column("refund_id", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("last_error", sa.String(512)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.UniqueConstraint("relay", "event_id", name="uq_relay_deliveries_event"),
    )
    op.create_index("ix_relay_deliveries_due", "relay_deliveries",
                    ["relay", "status", "next_attempt_at"])
    op.create_index("ix_relay_deliveries_refund", "relay_deliveries",
                    ["relay", "refund_id", "outbox_cursor"])
    op.create_table(
        "relay_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", BigId, sa.ForeignKey("relay_deliveries.id"),
                  nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.String(512)),
        sa.Column("response", sa.String(512)),
    )
    op.create_index("ix_relay_attempts_delivery_id", "relay_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_relay_attempts_delivery_id", "relay_attempts")
    op.drop_table("relay_attempts")
    op.drop_index("ix_relay_deliveries_refund", "relay_deliveries")
    op.drop_index("ix_relay_deliveries_due", "relay_deliveries")
    op.drop_table("relay_deliveries")
