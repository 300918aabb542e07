from datetime import UTC, date, datetime

import pytest

from gateway.calendar import add_working_days, expected_arrival, is_working_day
from gateway.errors import CalendarRangeError
from gateway.models import Route


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


def test_zero_days_rolls_to_next_working_day() -> None:
    assert add_working_days(date(2026, 11, 21), 0) == date(2026, 11, 23)  # Sat -> Mon


def test_beyond_data_is_an_error_not_a_guess() -> None:
    with pytest.raises(CalendarRangeError, match="no holiday data"):
        add_working_days(date(2099, 1, 1), 1)
