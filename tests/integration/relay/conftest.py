"""Relay fixtures: a gateway on scripted channels (tests.fakes) whose refunds write the
outbox, on SQLite and PostgreSQL (and MariaDB where the suite runs it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway import RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.models import ChannelStatus
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import request


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def gw(database_url: str, channel: FakeChannel) -> Iterator[RefundGateway]:
    g = build_gateway(load_settings(database_url=database_url), sleep=lambda _: None,
                      configure_logs=False,
                      adapters={Route.WECHATPAY: channel, Route.BALANCE: FakeBalance(Ledger())})
    yield g
    g.close()


def settle(gw: RefundGateway, channel: FakeChannel, n: int, *, prefix: str = "r") -> list[str]:
    """``n`` refunds taken to SUCCEEDED (created PENDING, PROCESSING, SUCCEEDED: three
    status changes each); their ids."""
    ids = []
    for i in range(n):
        refund = gw.refund(request(f"{prefix}{i}", order=f"ORD{prefix}{i}"))
        channel.ledger.status[refund.channel_refund_no] = ChannelStatus.SUCCEEDED
        assert gw.sync(refund.id).status is RefundStatus.SUCCEEDED
        ids.append(refund.id)
    return ids
