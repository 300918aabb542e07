"""A WeChat Pay adapter (public-key mode, real SDK) wired to ``responses``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from adapters.wechatpay.adapter import WechatPayAdapter
from adapters.wechatpay.client import WechatPayClient
from tests.helpers import FakeClock
from tests.unit.adapters.wechatpay.canned import (
    APIV3,
    APPID,
    BASE,
    CERT_SERIAL,
    MCHID,
    NOW,
    PUB_ID,
    keys,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def client() -> Iterator[WechatPayClient]:
    k = keys()
    c = WechatPayClient(mchid=MCHID, appid=APPID, private_key_pem=k.merchant_pem,
                        cert_serial_no=CERT_SERIAL, apiv3_key=APIV3, base_url=BASE,
                        connect_timeout=1, read_timeout=2,
                        public_key_pem=k.platform_public_pem, public_key_id=PUB_ID,
                        notify_url="https://gw.example.com/notify/wechatpay")
    yield c
    c.close()


@pytest.fixture
def adapter(client: WechatPayClient, clock: FakeClock) -> WechatPayAdapter:
    return WechatPayAdapter(client, clock=clock, max_skew_seconds=300)


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps
