"""Persistence: SQLAlchemy Core schema, engines for SQLite and PostgreSQL, Alembic
migrations, and ``RefundStore``, the only code that reads or writes refund tables."""

from gateway.store.engine import make_engine, upgrade
from gateway.store.repository import (
    NotificationBatch,
    NotificationWork,
    RefundStore,
    UnitOfWork,
)

__all__ = ["NotificationBatch", "NotificationWork", "RefundStore", "UnitOfWork", "make_engine",
           "upgrade"]
