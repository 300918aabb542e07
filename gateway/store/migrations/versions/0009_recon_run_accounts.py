"""A reconciliation run names the merchant accounts it was scoped to (``reconcile
--account``): a JSON list, NULL for every account (so every run recorded before this
one reads as it was: unscoped). Carry-over needs it for an item with no refund of its
own (unknown to the platform): such an item belongs to the accounts of its first run.

Revision ID: 0009_recon_run_accounts
Revises: 0008_merchant_accounts
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_recon_run_accounts"
down_revision = "0008_merchant_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recon_runs") as batch:
        # No default: NULL is "every account" (a TEXT default is not portable to MySQL 8).
        batch.add_column(sa.Column("accounts", sa.Text))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch copy of recon_runs would trip the foreign keys
        # of recon_items, recon_item_events and recon_matches that point at it.
        op.execute("ALTER TABLE recon_runs DROP COLUMN accounts")
    else:
        op.drop_column("recon_runs", "accounts")
