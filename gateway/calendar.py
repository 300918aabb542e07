"""Working days in mainland China and when a refund should reach the user.

Chinese working days are not "Monday to Friday": public holidays move, and make-up
Saturdays/Sundays (调休) are working days. The data comes from the maintained
``chinese-calendar`` package; a date outside the years it covers is a
``CalendarRangeError``, never a guess. How many working days a route takes is declared
once, on its adapter (``Capabilities.arrival_working_days``, DOMAIN.md); this module only
counts them.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta

import chinese_calendar

from gateway.clock import to_beijing
from gateway.errors import CalendarRangeError
from gateway.models import ArrivalWindow


@functools.lru_cache(maxsize=4096)
def is_working_day(day: date) -> bool:
    # cached: every succeeded refund asks for its arrival window (a few dates each)
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError as exc:
        years = sorted(d.year for d in chinese_calendar.constants.holidays)
        raise CalendarRangeError(
            f"no holiday data for {day.isoformat()} (chinese-calendar covers "
            f"{years[0]}-{years[-1]}); upgrade chinese-calendar"
        ) from exc


def add_working_days(day: date, n: int) -> date:
    """The n-th working day after ``day`` (n=0: ``day`` itself if it is a working day,
    else the next working day)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    current = day
    if n == 0:
        while not is_working_day(current):
            current += timedelta(days=1)
        return current
    remaining = n
    while remaining:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current


def arrival_window(days: tuple[int, int], moment: datetime) -> ArrivalWindow:
    """Dates (Beijing) between which money sent at ``moment`` should arrive."""
    start = to_beijing(moment).date()
    lo, hi = days
    earliest = start if lo == 0 else add_working_days(start, lo)
    return ArrivalWindow(earliest=earliest, latest=start if hi == 0 else
                         add_working_days(start, hi))
