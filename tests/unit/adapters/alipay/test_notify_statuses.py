"""Notification statuses outside CH §4.4's tables stay PROCESSING (issue 15 item 6).

A genuine, signed notice whose ``trade_status`` or ``dback_status`` no table lists
says nothing we can rely on: PROCESSING with a warning, and the refund query decides.
"""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from adapters.alipay.adapter import AlipayAdapter
from gateway.models import ChannelStatus
from tests.unit.adapters.alipay.conftest import KeyPair
from tests.unit.adapters.alipay.test_notify import depositback, sign_form, trade_sync


@pytest.mark.parametrize("trade_status", ["TRADE_FINISHED", "TRADE_SOMETHING_NEW", ""])
def test_trade_sync_with_an_unlisted_trade_status_is_processing(
        adapter: AlipayAdapter, alipay_keys: KeyPair, trade_status: str) -> None:
    form = trade_sync(trade_status=trade_status)
    with capture_logs() as logs:
        result = adapter.parse_notification({}, sign_form(form, alipay_keys))
    assert (result.status, result.channel_refund_no) == (ChannelStatus.PROCESSING,
                                                         "RFabc123")
    assert result.succeeded_at is None
    assert "alipay.unknown_trade_status" in [e["event"] for e in logs]


def test_trade_sync_full_refund_closes_the_trade_and_succeeds(
        adapter: AlipayAdapter, alipay_keys: KeyPair) -> None:
    form = trade_sync(trade_status="TRADE_CLOSED")
    assert adapter.parse_notification({}, sign_form(form, alipay_keys)).status is \
        ChannelStatus.SUCCEEDED


@pytest.mark.parametrize("dback", ["Z", ""])
def test_depositback_with_an_unlisted_dback_status_is_processing(
        adapter: AlipayAdapter, alipay_keys: KeyPair, dback: str) -> None:
    with capture_logs() as logs:
        result = adapter.parse_notification({}, sign_form(depositback(dback), alipay_keys))
    assert (result.status, result.channel_refund_no) == (ChannelStatus.PROCESSING,
                                                         "RFabc123")
    assert "alipay.depositback_status_not_listed" in [e["event"] for e in logs]


def test_depositback_without_dback_status_is_processing(adapter: AlipayAdapter,
                                                        alipay_keys: KeyPair) -> None:
    form = depositback("S")
    biz = json.loads(form["biz_content"])
    del biz["dback_status"]
    form["biz_content"] = json.dumps(biz, separators=(",", ":"))
    result = adapter.parse_notification({}, sign_form(form, alipay_keys))
    assert result.status is ChannelStatus.PROCESSING
