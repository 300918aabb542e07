"""The relays' tables (SQLAlchemy Core, on the gateway's MetaData), created by migration
``0007_relay``: one delivery per (relay, event) and every attempt made to deliver it.

``relay_deliveries.status``: ``pending`` (due at ``next_attempt_at``), ``delivered``, or
``dead`` (the retry schedule ran out: the dead-letter list, until ``relay replay``).
``failures`` counts the failed attempts since it was last queued (the schedule's
position); ``attempts`` every attempt ever made. Attempts are only ever inserted.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from gateway.store.schema import BigId, metadata
from gateway.store.types import UTCDateTime

relay_deliveries = Table(
    "relay_deliveries", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("relay", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("outbox_cursor", BigInteger, nullable=False),   # the outbox event's cursor
    Column("refund_id", String(32), nullable=False),
    Column("body", Text, nullable=False),                  # the JSON sent, verbatim
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("last_error", String(512)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    UniqueConstraint("relay", "event_id", name="uq_relay_deliveries_event"),
    Index("ix_relay_deliveries_due", "relay", "status", "next_attempt_at"),
    Index("ix_relay_deliveries_refund", "relay", "refund_id", "outbox_cursor"),
)

relay_attempts = Table(
    "relay_attempts", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("delivery_id", BigId, ForeignKey("relay_deliveries.id"), nullable=False,
           index=True),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    # delivered | http_error | timeout | connect_error | error
    Column("outcome", String(16), nullable=False),
    Column("http_status", Integer),
    Column("error", String(512)),
    Column("response", String(512)),                       # the first bytes answered
)
