"""A bank-card adapter wired to ``responses`` with the fixed test key on both sides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from adapters.bankcard import signing
from adapters.bankcard.adapter import BankcardAdapter
from adapters.bankcard.client import UnionPayClient
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.bankcard.canned import BASE, MER_ID, NOW


@pytest.fixture
def trust() -> signing.Trust:
    return signing.load_pin(certs.public_pem())


@pytest.fixture
def adapter(trust: signing.Trust) -> Iterator[BankcardAdapter]:
    client = UnionPayClient(base_url=BASE, mer_id=MER_ID, cert_id="69629715588",
                            private_key=certs.KEY, trust=trust, connect_timeout=1,
                            read_timeout=2)
    yield BankcardAdapter(client, back_url="http://127.0.0.1:9/notify/bankcard",
                          channel_type="07", trust=trust, clock=lambda: NOW)
    client.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps
