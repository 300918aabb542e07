"""The tables, as SQLAlchemy Core. Alembic migrations (``migrations/versions``) create
them; this module is what queries are written against. Money columns are integers of
minor units; timestamps are aware UTC (``UTCDateTime``)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from gateway.store.types import UTCDateTime

# SQLite only autoincrements INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

payments = Table(
    "payments", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("route", String(16), nullable=False),
    Column("merchant_order_no", String(64), nullable=False),
    Column("channel_trade_no", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("user_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("merchant_account", String(32), nullable=False, server_default="default"),
    # The money is the channel's trade of one merchant account; one order may have two
    # trades (a duplicate charge).
    UniqueConstraint("route", "merchant_account", "channel_trade_no",
                     name="uq_payments_route_account_trade"),
    Index("ix_payments_route_order", "route", "merchant_order_no"),
)

refunds = Table(
    "refunds", metadata,
    Column("id", String(32), primary_key=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("payment_id", BigId, ForeignKey("payments.id"), nullable=False),
    Column("route", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("channel_refund_no", String(64), nullable=False, unique=True),
    Column("channel_refund_id", String(64)),
    Column("succeeded_at", UTCDateTime),
    Column("next_check_at", UTCDateTime),
    Column("check_count", Integer, nullable=False, default=0),
    Column("failure_code", String(64)),
    Column("failure_message", String(512)),
    Column("received_account", String(128)),
    Column("bank_ack", Text, nullable=False, default="{}"),
    Column("arrival_earliest", Date),
    Column("arrival_latest", Date),
    Column("rerouted_from", String(32)),
    Column("rerouted_to", String(32)),
    Column("linked_refunds", Text),   # JSON list of linked refund ids; NULL = []
    Column("abnormal_applied_at", UTCDateTime),
    Column("paid_after_release_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    Index("ix_refunds_due", "status", "next_check_at"),
    Index("ix_refunds_payment", "payment_id"),
    Index("ix_refunds_created", "created_at"),
)

refund_events = Table(
    "refund_events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("refund_id", String(32), ForeignKey("refunds.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status_from", String(16)),
    Column("status_to", String(16)),
    Column("data", Text, nullable=False),
    UniqueConstraint("refund_id", "seq", name="uq_refund_events_seq"),
)

attempts = Table(
    "attempts", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("refund_id", String(32), ForeignKey("refunds.id"), nullable=False, index=True),
    Column("operation", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("http_status", Integer),
    Column("code", String(64)),
    Column("request_id", String(128)),
    Column("raw", Text, nullable=False),
)

notifications = Table(
    "notifications", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("route", String(16), nullable=False),
    Column("dedupe_kind", String(16), nullable=False),   # "event" | "nonce"
    Column("dedupe_key", String(128), nullable=False),
    Column("refund_id", String(32)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("outcome", String(32), nullable=False),
    UniqueConstraint("route", "dedupe_kind", "dedupe_key", name="uq_notifications_dedupe"),
)

# The transactional outbox (DESIGN "Events"): one row per status change of a refund,
# written in the same transaction as the change. ``id`` is the cursor consumers follow.
refund_events_outbox = Table(
    "refund_events_outbox", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("refund_id", String(32), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("merchant_order_no", String(64), nullable=False),
    Column("route", String(16), nullable=False),
    Column("status_from", String(16)),
    Column("status_to", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_outbox_at", "at"),
)

# One durable cursor per consumer name; ``owner`` + ``lease_until`` make one process the
# owner of the next batch when several consumers share a name.
outbox_consumers = Table(
    "outbox_consumers", metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False, default=0),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)
