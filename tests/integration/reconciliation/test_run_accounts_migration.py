"""Migration ``0009_recon_run_accounts`` on SQLite, PostgreSQL and MariaDB: runs recorded
before it read as unscoped (``accounts`` NULL: every account), so their open items with no
refund stay with the unscoped runs; downgrading drops the column and keeps the runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from gateway.store import make_engine, upgrade
from gateway.store.engine import alembic_config
from reconciliation.items import open_items
from tests.integration.reconciliation.test_history_migration import insert_old_run

ITEMS = sa.table("recon_items", *(sa.column(c) for c in (
    "id", "route", "item_key", "class", "state", "currency", "first_seen_run",
    "last_seen_run")))


def _columns(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns("recon_runs")}


def test_runs_before_it_are_unscoped_and_downgrade_keeps_them(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0008_merchant_accounts")
        with engine.begin() as conn:
            insert_old_run(conn, "bankcard")
            conn.execute(sa.insert(ITEMS).values(
                id=1, route="bankcard", item_key="RFNOBODY", **{"class": "unknown_to_platform"},
                state="open", currency="CNY", first_seen_run=1, last_seen_run=1))
        assert "accounts" not in _columns(engine)

        upgrade(engine)
        assert "accounts" in _columns(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT accounts FROM recon_runs")).scalar_one() is None
        assert [i["item_key"] for i in open_items(engine, ["bankcard"])] == ["RFNOBODY"]
        assert open_items(engine, ["bankcard"], ["default"]) == []

        command.downgrade(alembic_config(engine), "0008_merchant_accounts")
        assert "accounts" not in _columns(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM recon_runs")).scalar_one() == 1
        upgrade(engine)      # and up again to the head
        assert "accounts" in _columns(engine)
    finally:
        engine.dispose()
