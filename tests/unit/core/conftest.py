"""The service against a scripted channel (tests/fakes.py) and a scripted wallet, on
every store: the fixtures test_service.py and test_money_safety.py share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway import RefundGateway, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def balance() -> FakeBalance:
    return FakeBalance(Ledger())


@pytest.fixture
def gw(database_url: str, clock: FakeClock, channel: FakeChannel,
       balance: FakeBalance) -> Iterator[RefundGateway]:
    gateway = build_gateway(load_settings(database_url=database_url), clock=clock,
                            sleep=lambda _: None, configure_logs=False,
                            adapters={Route.WECHATPAY: channel, Route.BALANCE: balance})
    yield gateway
    gateway.close()
