"""Several merchant accounts per route (issue 19): each payment names the account its
money came through; the account is part of the payment's identity, its cap and the
idempotency fingerprint; refunds, checks and notifications go through that account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway import (
    ConfigurationError,
    IdempotencyConflict,
    Money,
    OverRefund,
    Payment,
    RefundGateway,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.bootstrap import build_gateway
from gateway.models import ChannelResult, ChannelStatus
from gateway.settings import GatewaySettings, load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock

S = RefundStatus


class Shop(FakeChannel):
    """A fake WeChat merchant that only accepts notifications signed for it."""

    def parse_notification(self, headers: dict[str, str], body: bytes  # type: ignore[override]
                           ) -> ChannelResult:
        if headers.get("x-mchid") != self.mchid:
            from gateway.errors import SignatureInvalid

            raise SignatureInvalid("another merchant", channel="fake", operation="notify")
        return super().parse_notification(headers, body)

    def __init__(self, mchid: str) -> None:
        super().__init__(Ledger())
        self.mchid = mchid


@pytest.fixture
def shops() -> dict[str, Shop]:
    return {"default": Shop("M1"), "shop2": Shop("M2")}


@pytest.fixture
def gw(database_url: str, shops: dict[str, Shop]) -> Iterator[RefundGateway]:
    g = build_gateway(load_settings(database_url=database_url), clock=FakeClock(),
                      sleep=lambda _: None, configure_logs=False,
                      adapters={Route.WECHATPAY: shops["default"],
                                Route.BALANCE: FakeBalance(Ledger())},
                      accounts={(Route.WECHATPAY, "shop2"): shops["shop2"]})
    yield g
    g.close()


def req(key: str, account: str = "default", trade: str = "T1", amount: int = 10_000
        ) -> RefundRequest:
    return RefundRequest(key, Payment(Route.WECHATPAY, "ORD1", trade, Money(10_000),
                                      user_id="u1", merchant_account=account),
                         Money(amount))


def test_each_account_refunds_through_its_own_merchant(gw: RefundGateway,
                                                       shops: dict[str, Shop]) -> None:
    a = gw.refund(req("k1"))
    b = gw.refund(req("k2", "shop2"))
    assert shops["default"].ledger.executed == {a.channel_refund_no: 1}
    assert shops["shop2"].ledger.executed == {b.channel_refund_no: 1}
    assert gw.get(b.id).payment.merchant_account == "shop2"
    shops["shop2"].ledger.status[b.channel_refund_no] = ChannelStatus.SUCCEEDED
    assert gw.sync(b.id).status is S.SUCCEEDED       # the check goes to shop2 too
    assert [c[0] for c in shops["default"].ledger.calls].count("query") == 0


def test_the_same_trade_number_under_two_accounts_is_two_payments(gw: RefundGateway) -> None:
    gw.refund(req("k1"))
    gw.refund(req("k2", "shop2"))                     # another merchant's trade T1
    with pytest.raises(OverRefund):
        gw.refund(req("k3", "shop2"))


def test_the_account_is_part_of_the_idempotency_fingerprint(gw: RefundGateway) -> None:
    gw.refund(req("k1"))
    with pytest.raises(IdempotencyConflict) as err:
        gw.refund(req("k1", "shop2"))
    assert "merchant_account" in err.value.fields


def test_an_unknown_account_is_a_configuration_error_before_anything_is_stored(
        gw: RefundGateway) -> None:
    with pytest.raises(ConfigurationError, match="shop9"):
        gw.refund(req("k9", "shop9"))
    assert gw.store.find_by_key("k9") is None


def test_notifications_reach_the_account_that_verifies_them(gw: RefundGateway,
                                                            shops: dict[str, Shop]) -> None:
    refund = gw.refund(req("k2", "shop2"))
    body = f"{refund.channel_refund_no}:succeeded:10000".encode()
    ack = gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-mchid": "M2",
                                                   "x-nonce": "n1"}, body)
    assert ack.accepted and gw.get(refund.id).status is S.SUCCEEDED
    # verified by the default merchant, but about shop2's refund: not applied
    other = gw.refund(req("k3", "shop2", trade="T2"))
    body = f"{other.channel_refund_no}:succeeded:10000".encode()
    ack = gw.handle_notification(Route.WECHATPAY, {"x-signature": "good", "x-mchid": "M1",
                                                   "x-nonce": "n2"}, body)
    assert not ack.accepted and gw.get(other.id).status is S.PROCESSING


def test_settings_name_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"BASE_URL": "http://wallet-1", "HMAC_KEY": "k" * 20,
                        "ACCOUNTS__SHOP2__BASE_URL": "http://wallet-2",
                        "ACCOUNTS__SHOP2__HMAC_KEY": "z" * 20}.items():
        monkeypatch.setenv(f"REFUND_GATEWAY_BALANCE__{name}", value)
    accounts = GatewaySettings(_env_file=None).route_accounts("balance")
    assert {k: v.base_url for k, v in accounts.items()} == {  # type: ignore[attr-defined]
        "default": "http://wallet-1", "shop2": "http://wallet-2"}
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__ACCOUNTS__DEFAULT__BASE_URL", "http://x")
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__ACCOUNTS__DEFAULT__HMAC_KEY", "x" * 20)
    with pytest.raises(ConfigurationError, match="default"):
        GatewaySettings(_env_file=None).route_accounts("balance")
