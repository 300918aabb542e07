"""Migration ``0004_recon_history`` on SQLite, PostgreSQL and MariaDB: items recorded
before it keep what a person and a run wrote. A resolved item's note becomes its
"resolved" history row (who, when), a run's "matched in run N" a "closed" one, a
paid-twice item's linked refunds move to their column; downgrading puts the latest note
back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import command

from gateway.store import make_engine, upgrade
from gateway.store.engine import alembic_config
from reconciliation.schema import recon_item_events, recon_items

AT = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
OLD_RUNS = sa.table("recon_runs", *(sa.column(c) for c in (
    "id", "run_date", "routes", "started_at", "platform_source", "statements", "totals",
    "bad_lines", "outcome")))
OLD_ITEMS = sa.table("recon_items", *(sa.column(c) for c in (
    "id", "route", "item_key", "class", "state", "currency", "first_seen_run",
    "last_seen_run", "resolved_by", "resolved_at", "note")))


def insert_old_run(conn: sa.Connection, routes: str = "alipay") -> None:
    """Run 1 as every migration since 0002 can store it (only the first columns)."""
    conn.execute(sa.insert(OLD_RUNS).values(
        id=1, run_date=date(2026, 11, 19), routes=routes, started_at=AT,
        platform_source="store", statements="[]", totals="{}", bad_lines="[]",
        outcome="discrepancies"))


def test_notes_become_history_and_come_back_on_downgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0003_payment_identity")
        with engine.begin() as conn:
            insert_old_run(conn)
            conn.execute(sa.insert(OLD_ITEMS), [
                {"id": 1, "route": "alipay", "item_key": "K1", "class": "unknown_to_platform",
                 "state": "resolved", "currency": "CNY", "first_seen_run": 1,
                 "last_seen_run": 1, "resolved_by": "li.na", "resolved_at": AT,
                 "note": "manual refund, ticket FIN-1"},
                {"id": 2, "route": "alipay", "item_key": "K2", "class": "paid_twice",
                 "state": "open", "currency": "CNY", "first_seen_run": 1,
                 "last_seen_run": 1, "resolved_by": None, "resolved_at": None,
                 "note": "paid after release; linked refunds: RF1, RF2"},
                {"id": 3, "route": "alipay", "item_key": "K3", "class": "matched",
                 "state": "resolved", "currency": "CNY", "first_seen_run": 1,
                 "last_seen_run": 1, "resolved_by": "reconcile", "resolved_at": AT,
                 "note": "matched in run 1"}])
        upgrade(engine, "0004_recon_history")
        with engine.connect() as conn:
            items = {r.item_key: r._mapping for r in conn.execute(sa.select(recon_items))}
            events = [r._mapping for r in conn.execute(
                sa.select(recon_item_events).order_by(recon_item_events.c.id))]
            columns = {c["name"] for c in sa.inspect(conn).get_columns("recon_items")}
        assert "note" not in columns and {"linked_refunds", "source", "line"} <= columns
        assert json.loads(items["K2"]["linked_refunds"]) == ["RF1", "RF2"]
        assert items["K1"]["linked_refunds"] is None
        by_item = {i: [(e["action"], e["actor"], e["note"]) for e in events
                       if e["item_id"] == i] for i in (1, 2, 3)}
        assert by_item[1] == [("opened", "reconcile",
                               "opened (recorded before history was kept)"),
                              ("resolved", "li.na", "manual refund, ticket FIN-1")]
        assert by_item[2] == [("opened", "reconcile",
                               "opened (recorded before history was kept)")]
        assert by_item[3][1] == ("closed", "reconcile", "matched in run 1")
        resolved = next(e for e in events if e["action"] == "resolved")
        assert resolved["at"] == AT and resolved["state_after"] == "resolved"

        command.downgrade(alembic_config(engine), "0003_payment_identity")
        with engine.connect() as conn:
            notes = dict(conn.execute(sa.select(OLD_ITEMS.c.item_key, OLD_ITEMS.c.note)).all())
        assert notes == {"K1": "manual refund, ticket FIN-1",
                         "K2": "opened (recorded before history was kept)",
                         "K3": "matched in run 1"}
        upgrade(engine)      # and up again to the head
    finally:
        engine.dispose()
