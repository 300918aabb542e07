"""One masking rule (gateway.masking) seen from the people who read it: one card reads the
same on a receipt and in each report format, and neither masks a time or an id. Issue 18:
WeChat receipts showed ``refund_id ****2742`` and a masked success time; a report showed
the card as 6222****0123 where the receipt showed ****0123."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from adapters.wechatpay import translate as wechat
from gateway.clock import BEIJING
from gateway.models import ChannelResult, ChannelStatus, Refund, Route
from reconciliation.job import beijing_day, reconcile
from reconciliation.platform import from_store
from reconciliation.receipts import build_receipt, render
from reconciliation.reports import write_html, write_json, write_xlsx
from tests.helpers import request
from tests.integration.receipts.conftest import FULL_CARD, UNIONPAY_QUERY_ID, World

WECHAT_REFUND_ID = "50000000382026112009732672742"


def _shown(world: World, refund_id: str) -> dict[str, Any]:
    receipt = build_receipt(world.gw, refund_id, settings=world.settings, now=world.issued_at)
    return receipt.fields()


def test_a_card_reads_the_same_on_the_receipt_and_in_every_report(world: World,
                                                                 tmp_path: Path) -> None:
    card = world.not_received
    on_receipt = _shown(world, card.id)["received_account"]
    assert on_receipt == "****0123"
    # No statement reader quotes a cell any more (the '|' format whose bad-line
    # message did is refused since the real ZM reader): the card must reach no report.
    start, end = beijing_day(date(2026, 11, 20))
    result = reconcile(run_date=date(2026, 11, 20), routes=[Route.BANKCARD],
                       statements=[], platform_source="store", engine=None,
                       platform=lambda c: from_store(world.gw.store.engine, start, end,
                                                     [Route.BANKCARD], c))
    doc = json.loads(write_json(result, tmp_path / "r.json").read_text(encoding="utf-8"))
    html = write_html(result, tmp_path / "r.html").read_text(encoding="utf-8")
    sheet = load_workbook(write_xlsx(result, tmp_path / "r.xlsx"), read_only=True)
    cells = [str(c) for ws in sheet.worksheets for row in ws.iter_rows(values_only=True)
             for c in row if c is not None]
    assert FULL_CARD not in json.dumps(doc) and FULL_CARD not in html
    assert not [c for c in cells if FULL_CARD in c]
    # The refund's row keeps its ids and times whole.
    row = next(r for r in doc["rows"] if r["refund_id"] == card.id)
    assert row["channel_refund_no"] == card.channel_refund_no
    assert row["channel_refund_id"] == UNIONPAY_QUERY_ID
    assert card.succeeded_at is not None
    assert row["succeeded_at"] == card.succeeded_at.isoformat()


@pytest.fixture
def wechat_succeeded(world: World) -> Refund:
    """A WeChat refund answered as CH §5.1 shows it, through the adapter's own bank_ack."""
    at = world.clock.now + timedelta(seconds=5)
    answer = {"refund_id": WECHAT_REFUND_ID, "channel": "ORIGINAL",
              "user_received_account": "工商银行借记卡6222021234567890123",
              "success_time": at.astimezone(BEIJING).isoformat(),
              "funds_account": "AVAILABLE", "status": "SUCCESS"}

    def succeed(refund: Refund) -> ChannelResult:
        return ChannelResult(ChannelStatus.SUCCEEDED, refund.channel_refund_no,
                             channel_refund_id=WECHAT_REFUND_ID, amount=refund.amount,
                             succeeded_at=at,
                             received_account=wechat.mask_account(
                                 answer["user_received_account"]),
                             bank_ack=wechat.bank_ack(answer))
    world.channels[Route.WECHATPAY].answers.append(succeed)
    return world.gw.refund(request("k-wx-ok", 3300, "ORD-WX-3", 3300, Route.WECHATPAY))


def test_a_wechat_receipt_masks_the_account_and_not_times_or_ids(
        world: World, wechat_succeeded: Refund) -> None:
    f = _shown(world, wechat_succeeded.id)
    acks = {a["name"]: a["value"] for a in f["bank_ack"]}
    assert acks["refund_id"] == WECHAT_REFUND_ID
    assert acks["success_time"] == f["channel_success_time"]
    assert acks["success_time"].endswith("+08:00") and "*" not in acks["success_time"]
    assert acks["channel"] == "ORIGINAL" and acks["funds_account"] == "AVAILABLE"
    assert acks["user_received_account"] == f["received_account"] == "工商银行借记卡****0123"
    printed = render(build_receipt(world.gw, wechat_succeeded.id, settings=world.settings,
                                   now=world.issued_at), "html").decode("utf-8")
    assert WECHAT_REFUND_ID in printed and FULL_CARD not in printed
