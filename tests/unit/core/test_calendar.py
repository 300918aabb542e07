from datetime import UTC, date, datetime

import pytest

from adapters.alipay.adapter import AlipayAdapter
from adapters.balance.adapter import BalanceAdapter
from adapters.bankcard.adapter import BankcardAdapter
from adapters.wechatpay.adapter import WechatPayAdapter
from gateway.bootstrap import adapter_class, capabilities_of
from gateway.calendar import add_working_days, arrival_window, is_working_day
from gateway.models import ArrivalWindow, Route


def expected_arrival(route: Route, moment: datetime) -> ArrivalWindow:
    """The window reconciliation and receipts use: the route's declared working days."""
    return arrival_window(capabilities_of(route).arrival_working_days, moment)


def test_make_up_saturday_is_a_working_day() -> None:
    # 2026 National Day: Oct 1-7 off, Saturday Oct 10 is a make-up working day (调休).
    assert not is_working_day(date(2026, 10, 5))
    assert is_working_day(date(2026, 10, 10))


def test_bank_card_arrival_over_national_day() -> None:
    window = expected_arrival(Route.BANKCARD, datetime(2026, 9, 30, 4, tzinfo=UTC))
    assert window.earliest == date(2026, 10, 8)
    assert window.latest == date(2026, 10, 13)   # 8, 9, 10 (Sat, make-up), 12, 13


def test_balance_is_same_day_and_uses_beijing_date() -> None:
    # 17:00 UTC on the 20th is 01:00 on the 21st in Beijing.
    window = expected_arrival(Route.BALANCE, datetime(2026, 11, 20, 17, tzinfo=UTC))
    assert window.earliest == window.latest == date(2026, 11, 21)


@pytest.mark.parametrize("route,cls,days", [
    (Route.ALIPAY, AlipayAdapter, (0, 3)), (Route.WECHATPAY, WechatPayAdapter, (0, 3)),
    (Route.BANKCARD, BankcardAdapter, (1, 5)), (Route.BALANCE, BalanceAdapter, (0, 0))])
def test_arrival_days_are_the_adapters_declaration(
        route: Route, cls: type, days: tuple[int, int]) -> None:
    """One source: the entry point's adapter class, read without settings or building;
    the days are DOMAIN.md's "Routes and how long money takes"."""
    assert adapter_class(route) is cls
    assert capabilities_of(route) is cls.capabilities
    assert capabilities_of(route).arrival_working_days == days


def test_zero_days_rolls_to_next_working_day() -> None:
    assert add_working_days(date(2026, 11, 21), 0) == date(2026, 11, 23)  # Sat -> Mon


def test_beyond_data_is_counted_monday_to_friday_and_flagged() -> None:
    """Issue 18: past the data, a window still exists (an error left late-December
    refunds without one); it is flagged approximate (more in test_calendar_reach)."""
    from gateway.calendar import is_approximate

    day = add_working_days(date(2099, 1, 2), 1)       # a Friday -> the next Monday
    assert day == date(2099, 1, 5)
    assert is_approximate(ArrivalWindow(date(2099, 1, 2), day))
