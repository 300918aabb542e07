"""The receipt table (SQLAlchemy Core) on the gateway's MetaData, created by migration
``0005_receipt_versions``.

``receipt_versions``: every receipt ever issued, immutable, as the exact signed bytes
(``body``) with its SHA-256 (``sha256``, what a printed receipt shows); a later change to
the refund issues version N+1 naming version N's digest. Rows are inserted, never updated
or deleted, so a printed receipt keeps verifying after its case is closed.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, Text, UniqueConstraint

from gateway.store.schema import BigId, metadata
from gateway.store.types import UTCDateTime

receipt_versions = Table(
    "receipt_versions", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("refund_id", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),            # of the signed fields
    Column("content_sha256", String(64), nullable=False),    # without version/issued_at
    Column("previous_sha256", String(64)),
    Column("alg", String(16), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),                    # the JSON receipt, verbatim
    UniqueConstraint("refund_id", "version", name="uq_receipt_versions_version"),
    UniqueConstraint("sha256", name="uq_receipt_versions_sha256"),
)
