"""A payment is (route, channel trade number); refunds remember reroute chains, abnormal-
refund applications and money that moved after release (gateway/lifecycle.py).

Why: the over-refund cap was per (route, merchant order number), so the same channel
trade under another order string (a case change, a typo) was a second payment, refunded
in full twice. The channel's trade number is what the money is; one merchant order may
legitimately have two trades (a duplicate charge, 重复扣款), so the order number is no
longer unique.

Revision ID: 0003_payment_identity
Revises: 0002_reconciliation
"""
import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0003_payment_identity"
down_revision = "0002_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    clashes = conn.execute(sa.text(
        "SELECT route, channel_trade_no, COUNT(*) FROM payments "
        "GROUP BY route, channel_trade_no HAVING COUNT(*) > 1")).fetchall()
    if clashes:
        listed = ", ".join(f"{r[0]}:{r[1]} ({r[2]} orders)" for r in clashes[:20])
        raise RuntimeError(
            "these channel trades are stored under several merchant order numbers, so "
            f"their refunds were capped separately: {listed}. Check them with finance "
            "(the refunds may exceed what was paid), merge each into one payment row, "
            "then run the upgrade again.")
    with op.batch_alter_table("payments") as batch:
        batch.drop_constraint("uq_payments_route_order", type_="unique")
        batch.create_unique_constraint("uq_payments_route_trade",
                                       ["route", "channel_trade_no"])
        batch.create_index("ix_payments_route_order", ["route", "merchant_order_no"])
    with op.batch_alter_table("refunds") as batch:
        # JSON list; NULL reads as [] (a TEXT default is not portable to MySQL 8)
        batch.add_column(sa.Column("linked_refunds", sa.Text))
        batch.add_column(sa.Column("abnormal_applied_at", UTCDateTime))
        batch.add_column(sa.Column("paid_after_release_at", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("paid_after_release_at")
        batch.drop_column("abnormal_applied_at")
        batch.drop_column("linked_refunds")
    with op.batch_alter_table("payments") as batch:
        batch.drop_index("ix_payments_route_order")
        batch.drop_constraint("uq_payments_route_trade", type_="unique")
        batch.create_unique_constraint("uq_payments_route_order",
                                       ["route", "merchant_order_no"])
