"""Receipts are immutable versions: the same receipt twice is the same bytes; a change
(finance resolving the item) issues version 2 naming version 1, and version 1, printed
or as JSON, still verifies. A refund matched by a real reconciliation run quotes the
statement line (file, line, amount, time) instead of "not yet reconciled"."""

from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select

from gateway.clock import BEIJING
from gateway.models import Route
from reconciliation.items import list_items, resolve_item
from reconciliation.job import beijing_day, reconcile
from reconciliation.platform import from_store
from reconciliation.receipts import build_receipt, issue, key_ring, render, verify
from reconciliation.receipts.layout import main_rows
from reconciliation.receipts.schema import receipt_versions
from reconciliation.receipts.signing import signer_from_settings
from reconciliation.receipts.versions import by_digest, history
from reconciliation.statements import Source
from reconciliation.statements.balance import HEADER
from tests.integration.receipts.conftest import World


def test_a_closed_case_issues_a_new_version_and_the_old_one_still_verifies(
        world: World) -> None:
    store, signer = world.gw.store, signer_from_settings(world.settings)
    refund = world.not_received
    first = issue(store, refund.id, signer)
    assert first.created and first.receipt.version == 1 and first.receipt.previous is None
    again = issue(store, refund.id, signer)
    assert not again.created and again.body == first.body      # nothing changed: same bytes
    assert render(again.receipt, "json") == first.body
    assert first.receipt.guidance.situation.value == "not_received"

    [item] = [i for i in list_items(store.engine) if i["refund_id"] == refund.id]
    resolve_item(store.engine, item["id"], by="alice", note="bank confirmed arrival")
    world.clock.advance(hours=1)
    second = issue(store, refund.id, signer)
    assert second.created and second.receipt.version == 2
    assert second.receipt.previous is not None
    assert second.receipt.previous.version == 1
    assert second.receipt.previous.sha256 == first.receipt.digest
    assert second.receipt.reconciliation is not None
    assert second.receipt.reconciliation.state == "resolved"
    assert second.receipt.digest != first.receipt.digest

    ring = key_ring(world.settings)
    assert verify(first.body, ring).ok                # the receipt handed out before
    assert verify(second.body, ring).ok
    stored = by_digest(store.engine, first.receipt.digest or "")
    assert stored is not None and stored.body == first.body and stored.version == 1
    assert [v.version for v in history(store.engine, refund.id)] == [1, 2]
    doc = json.loads(second.body)
    assert doc["previous"] == {"version": 1, "sha256": first.receipt.digest,
                               "issued_at": doc["previous"]["issued_at"]}
    printed = {r.label: r.value for r in main_rows(second.receipt)}
    assert printed["对账结果 Reconciliation"].endswith("已处理 resolved")
    # Stored rows are never rewritten: version 1's row is byte for byte what was issued.
    with store.engine.connect() as conn:
        bodies = [r.body for r in conn.execute(
            select(receipt_versions.c.body).where(receipt_versions.c.refund_id == refund.id)
            .order_by(receipt_versions.c.version))]
    assert [b.encode() for b in bodies] == [first.body, second.body]


def test_a_matched_refund_quotes_the_statement_line(world: World) -> None:
    refund = world.linked                            # 88.00 to the platform balance
    before = build_receipt(world.gw, refund.id, settings=world.settings)
    assert before.reconciliation is None
    assert {r.label: r.value for r in main_rows(before)}["对账 Reconciliation"] == \
        "尚未对账 not yet reconciled"
    assert refund.succeeded_at is not None
    at = refund.succeeded_at.astimezone(BEIJING).isoformat(timespec="seconds")
    ledger = (f"{HEADER}\nW-OTHER,RFL-OTHER,u-9,ORD-9,100,CNY,SUCCESS,{at}\n"
              f"BAL-000123,{refund.channel_refund_no},u-1,ORD-WX-2,8800,CNY,SUCCESS,{at}\n")
    day = date(2026, 11, 20)
    start, end = beijing_day(day)
    engine = world.gw.store.engine
    with reconcile(run_date=day, routes=[Route.BALANCE],
                   statements=[Source.of(ledger.encode(), name="balance-20261120.csv")],
                   platform=lambda c: from_store(engine, start, end, [Route.BALANCE], c),
                   platform_source="store", engine=engine) as result:
        run_id = result.run_id
    after = build_receipt(world.gw, refund.id, settings=world.settings)
    rec = after.fields()["reconciliation"]
    assert (rec["class"], rec["run_id"], rec["run_date"]) == ("matched", run_id, "2026-11-20")
    assert (rec["statement_file"], rec["statement_line"]) == ("balance-20261120.csv", 3)
    assert rec["statement_amount"] == {"minor": 8800, "currency": "CNY"}
    assert rec["statement_time"] == at
    rows = {r.label: r.value for r in main_rows(after)}
    assert rows["对账结果 Reconciliation"] == "已核对一致 matched"
    assert rows["对账单文件 Statement file"] == "balance-20261120.csv 第 3 行 line 3"
    assert rows["账单行内容 Statement line"] == (
        f"88.00 CNY · {at[:19].replace('T', ' ')} · 退款成功 succeeded")
    html = render(after, "html").decode("utf-8")
    assert "not yet reconciled" not in html and "balance-20261120.csv 第 3 行" in html

