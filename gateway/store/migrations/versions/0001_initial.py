"""Initial schema: payments, refunds, append-only refund events, attempts, notifications.

Revision ID: 0001_initial
Revises:
"""
import sqlalchemy as sa
from alembic import op

from gateway.store.types import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("merchant_order_no", sa.String(64), nullable=False),
        sa.Column("channel_trade_no", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("route", "merchant_order_no", name="uq_payments_route_order"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("payment_id", BigId, sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel_refund_no", sa.String(64), nullable=False, unique=True),
        sa.Column("channel_refund_id", sa.String(64)),
        sa.Column("succeeded_at", UTCDateTime),
        sa.Column("next_check_at", UTCDateTime),
        sa.Column("check_count", sa.Integer, nullable=False),
        sa.Column("failure_code", sa.String(64)),
        sa.Column("failure_message", sa.String(512)),
        sa.Column("received_account", sa.String(128)),
        sa.Column("bank_ack", sa.Text, nullable=False),
        sa.Column("arrival_earliest", sa.Date),
        sa.Column("arrival_latest", sa.Date),
        sa.Column("rerouted_from", sa.String(32)),
        sa.Column("rerouted_to", sa.String(32)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_refunds_due", "refunds", ["status", "next_check_at"])
    op.create_index("ix_refunds_payment", "refunds", ["payment_id"])
    op.create_index("ix_refunds_created", "refunds", ["created_at"])
    op.create_table(
        "refund_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("refund_id", sa.String(32), sa.ForeignKey("refunds.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status_from", sa.String(16)),
        sa.Column("status_to", sa.String(16)),
        sa.Column("data", sa.Text, nullable=False),
        sa.UniqueConstraint("refund_id", "seq", name="uq_refund_events_seq"),
    )
    op.create_table(
        "attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("refund_id", sa.String(32), sa.ForeignKey("refunds.id"), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("code", sa.String(64)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("raw", sa.Text, nullable=False),
    )
    op.create_index("ix_attempts_refund_id", "attempts", ["refund_id"])
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("dedupe_kind", sa.String(16), nullable=False),
        sa.Column("dedupe_key", sa.String(128), nullable=False),
        sa.Column("refund_id", sa.String(32)),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.UniqueConstraint("route", "dedupe_kind", "dedupe_key",
                            name="uq_notifications_dedupe"),
    )
    # Evidence is append-only (DESIGN.md invariant 6): the database refuses edits.
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER refund_events_no_{verb.lower()} BEFORE {verb} ON "
                f"refund_events BEGIN SELECT RAISE(ABORT, 'refund_events is append-only'); "
                f"END"
            )
    elif op.get_bind().dialect.name == "mysql":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER refund_events_no_{verb.lower()} BEFORE {verb} ON "
                f"refund_events FOR EACH ROW SIGNAL SQLSTATE '45000' "
                f"SET MESSAGE_TEXT = 'refund_events is append-only'"
            )
    else:
        op.execute(
            "CREATE FUNCTION refund_events_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refund_events is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER refund_events_append_only BEFORE UPDATE OR DELETE ON "
            "refund_events FOR EACH ROW EXECUTE FUNCTION refund_events_append_only()"
        )


def downgrade() -> None:
    for name in ("notifications", "attempts", "refund_events", "refunds", "payments"):
        op.drop_table(name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS refund_events_append_only()")
