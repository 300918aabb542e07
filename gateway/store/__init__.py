"""Persistence: SQLAlchemy Core schema, engines for SQLite and PostgreSQL, Alembic
migrations, and ``RefundStore``, the only code that reads or writes refund tables."""

from gateway.store.engine import make_engine, upgrade
from gateway.store.repository import Decision, RefundStore

__all__ = ["Decision", "RefundStore", "make_engine", "upgrade"]
