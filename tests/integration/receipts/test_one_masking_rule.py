"""One masking rule (gateway.masking) seen from the people who read it: one card reads the
same on a receipt and in each report format, and neither masks a time or an id. Issue 18:
WeChat receipts showed ``refund_id ****2742`` and a masked success time; a report showed
the card as 6222****0123 where the receipt showed ****0123."""

from __future__ import annotations

import json
import re
import subprocess
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
    assert row["succeeded_at"] == card.succeeded_at.astimezone(BEIJING).isoformat()


def _wechat_refund(world: World, key: str, order: str, extra: dict[str, str]) -> Refund:
    """A WeChat refund answered as CH §5.1 shows it, through the adapter's own bank_ack
    (plus ``extra``: fields a later API version might add)."""
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
                             bank_ack={**wechat.bank_ack(answer), **extra})
    world.channels[Route.WECHATPAY].answers.append(succeed)
    return world.gw.refund(request(key, 3300, order, 3300, Route.WECHATPAY))


@pytest.fixture
def wechat_succeeded(world: World) -> Refund:
    return _wechat_refund(world, "k-wx-ok", "ORD-WX-3", {})


def test_a_wechat_receipt_masks_the_account_and_not_times_or_ids(
        world: World, wechat_succeeded: Refund) -> None:
    f = _shown(world, wechat_succeeded.id)
    fields = {c["name"]: c for c in f["channel_fields"]}
    assert fields["refund_id"]["value"] == WECHAT_REFUND_ID
    assert fields["success_time"]["value"].endswith("+08:00")
    assert "*" not in fields["success_time"]["value"]
    assert fields["user_received_account"]["value"] == f["received_account"] == \
        "工商银行借记卡****0123"
    printed = render(build_receipt(world.gw, wechat_succeeded.id, settings=world.settings,
                                   now=world.issued_at), "html").decode("utf-8")
    assert WECHAT_REFUND_ID in printed and FULL_CARD not in printed


def test_a_wechat_receipt_prints_labels_not_field_names(world: World, tmp_path: Path
                                                        ) -> None:
    """Issue 18: every WeChat receipt showed ``channel channel ORIGINAL``. Each channel
    field is printed with its Chinese and English label and a code as its words; a field
    the route's table does not know stays in the JSON's evidence, not in print."""
    refund = _wechat_refund(world, "k-wx-new", "ORD-WX-4", {"promotion_hint": "PROMO-7781"})
    receipt = build_receipt(world.gw, refund.id, settings=world.settings, now=world.issued_at)
    f = receipt.fields()
    fields = {c["name"]: (c["label_zh"], c["label_en"], c["text"]) for c in f["channel_fields"]}
    assert fields["channel"] == ("退款渠道", "Refund channel",
                                 "原路退款 back the way it came (ORIGINAL)")
    assert fields["funds_account"] == ("退款出资账户", "Refund paid from",
                                       "可用余额 available balance (AVAILABLE)")
    assert f["evidence"] == {"promotion_hint": "PROMO-7781"}
    html = render(receipt, "html").decode("utf-8")
    rows = re.findall(r'<td class="k">(.*?)</td><td[^>]*>(.*?)</td>', html)
    labels = [k for k, _ in rows]
    assert "退款渠道 Refund channel" in labels and "退款出资账户 Refund paid from" in labels
    assert dict(rows)["退款渠道 Refund channel"] == "原路退款 back the way it came (ORIGINAL)"
    for shown in (html, _pdf_text(render(receipt, "pdf"), tmp_path)):
        assert "channel channel" not in shown and "funds_account" not in shown
        assert "promotion_hint" not in shown and "PROMO-7781" not in shown
        assert "user_received_account" not in shown
    # The fields that repeat a main row (refund id, success time, account) print once.
    assert [k for k, v in rows if v == WECHAT_REFUND_ID] == [
        "渠道退款流水号 Channel refund ID"]
    assert [k for k, v in rows if "工商银行借记卡****0123" in v] == ["收款账户 Received by"]


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "wechat.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                          capture_output=True, timeout=60).stdout.decode("utf-8")
