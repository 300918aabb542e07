"""Each real adapter's declared rules, read by ``gateway.rules.check`` before anything is
written (issue 15 behaviours 1-2). Sources: CH §4.1 (Alipay), §5.1 and addendum §9
(WeChat), §6 and addendum §2 (UnionPay), sandbox/balance.py (the wallet)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.alipay.adapter import AlipayAdapter
from adapters.balance.adapter import BalanceAdapter
from adapters.bankcard.adapter import BankcardAdapter
from adapters.wechatpay.adapter import WechatPayAdapter
from gateway.errors import InvalidRequest
from gateway.models import Payment, RefundRequest, Route
from gateway.money import Money
from gateway.ports import ChannelAdapter
from gateway.rules import check

NOW = datetime(2026, 11, 20, 4, tzinfo=UTC)
ADAPTERS: dict[Route, type[ChannelAdapter]] = {
    Route.ALIPAY: AlipayAdapter, Route.WECHATPAY: WechatPayAdapter,
    Route.BANKCARD: BankcardAdapter, Route.BALANCE: BalanceAdapter}
REFUND_NO = "RF20261120ABCDEF0123456789"   # what service.new_refund_id makes


def req(route: Route, *, currency: str = "CNY", reason: str = "", order: str = "ORD1",
        user_id: str | None = "u-1", paid_at: datetime | None = None) -> RefundRequest:
    return RefundRequest("k", Payment(route, order, "4200000001", Money(10_000, currency),
                                      user_id=user_id, paid_at=paid_at),
                         Money(2_500, currency), reason)


def run(route: Route, request: RefundRequest, refund_no: str = REFUND_NO,
        rerouted_from: Route | None = None) -> None:
    check(route, ADAPTERS[route].capabilities, request, channel_refund_no=refund_no,
          now=NOW, rerouted_from=rerouted_from)


@pytest.mark.parametrize("route", list(Route))
def test_a_gateway_refund_number_and_cny_pass_everywhere(route: Route) -> None:
    run(route, req(route, reason="商品未发货"))


@pytest.mark.parametrize("route", list(Route))
@pytest.mark.parametrize("currency", ["JPY", "HKD", "USD"])
def test_no_route_carries_another_currency(route: Route, currency: str) -> None:
    # Alipay used to send 1000 JPY as refund_amount "1000.00" (yuan of CNY)
    with pytest.raises(InvalidRequest) as err:
        run(route, req(route, currency=currency))
    assert err.value.field == "amount.currency"


@pytest.mark.parametrize("reason,ok", [
    ("商" * 26, True),        # 78 bytes of UTF-8
    ("商" * 27, False),       # 81 bytes: WeChat counts bytes, not characters
    ("x" * 80, True), ("x" * 81, False)])
def test_wechat_counts_the_reason_in_bytes(reason: str, ok: bool) -> None:
    if ok:
        run(Route.WECHATPAY, req(Route.WECHATPAY, reason=reason))
    else:
        with pytest.raises(InvalidRequest, match="80 bytes"):
            run(Route.WECHATPAY, req(Route.WECHATPAY, reason=reason))


def test_alipay_takes_256_characters() -> None:
    run(Route.ALIPAY, req(Route.ALIPAY, reason="商" * 256))
    with pytest.raises(InvalidRequest, match="256 characters"):
        run(Route.ALIPAY, req(Route.ALIPAY, reason="商" * 257))


@pytest.mark.parametrize("refund_no,ok", [
    ("RF2026112012", True), ("RF-2026-1120", False),   # no separators (CH §6)
    ("RF12345", False), ("R" * 33, False)])            # 8-32
def test_unionpay_order_ids(refund_no: str, ok: bool) -> None:
    if ok:
        run(Route.BANKCARD, req(Route.BANKCARD), refund_no)
    else:
        with pytest.raises(InvalidRequest):
            run(Route.BANKCARD, req(Route.BANKCARD), refund_no)


@pytest.mark.parametrize("user_id", [None, "", "alice@example.com", "u" * 65])
def test_the_wallet_needs_a_user_it_can_name(user_id: str | None) -> None:
    with pytest.raises(InvalidRequest) as err:
        run(Route.BALANCE, req(Route.BALANCE, user_id=user_id))
    assert err.value.field == "payment.user_id"


def test_only_the_balance_takes_a_reroute() -> None:
    run(Route.BALANCE, req(Route.WECHATPAY), rerouted_from=Route.WECHATPAY)
    with pytest.raises(InvalidRequest, match="cannot carry"):
        run(Route.BANKCARD, req(Route.WECHATPAY), rerouted_from=Route.WECHATPAY)


@pytest.mark.parametrize("route,days_ago,ok", [
    (Route.WECHATPAY, 364, True), (Route.WECHATPAY, 366, False),     # 1 year (CH §5.1)
    (Route.BANKCARD, 329, True), (Route.BANKCARD, 331, False),       # 11 months (CH §6)
    (Route.ALIPAY, 1000, True)])     # set by the merchant's contract: Alipay decides
def test_refund_windows(route: Route, days_ago: int, ok: bool) -> None:
    request = req(route, paid_at=NOW - timedelta(days=days_ago))
    if ok:
        run(route, request)
    else:
        with pytest.raises(InvalidRequest, match="within"):
            run(route, request)


def test_a_payment_is_refunded_on_its_own_route() -> None:
    with pytest.raises(InvalidRequest, match="own route"):
        run(Route.ALIPAY, req(Route.WECHATPAY))
