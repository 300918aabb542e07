"""Several merchant accounts per route: a payment is (route, account, channel trade).

Revision ID: 0008_merchant_accounts
Revises: 0005_receipt_versions
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_merchant_accounts"
down_revision = "0005_receipt_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("merchant_account", sa.String(32), nullable=False,
                                   server_default="default"))
        batch.drop_constraint("uq_payments_route_trade", type_="unique")
        batch.create_unique_constraint("uq_payments_route_account_trade",
                                       ["route", "merchant_account", "channel_trade_no"])


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_constraint("uq_payments_route_account_trade", type_="unique")
        batch.create_unique_constraint("uq_payments_route_trade",
                                       ["route", "channel_trade_no"])
        batch.drop_column("merchant_account")
