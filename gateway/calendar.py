"""Working days in mainland China and when a refund should reach the user.

Chinese working days are not "Monday to Friday": public holidays move, and make-up
Saturdays/Sundays (调休) are working days. Three sources, first that covers a year wins:

1. a holiday schedule file (settings ``holiday_schedule``): the State Council's yearly
   notice (国务院办公厅关于…部分节假日安排的通知), typed in as holidays and make-up working
   days; it extends or overrides the package's data (``load_schedule``, ``configure``);
2. the maintained ``chinese-calendar`` package (its data ends with the last notice it
   has seen: today 2026);
3. neither covers the year: Monday to Friday, logged once per year as a warning, and every
   estimate built on it is *approximate* (``is_approximate``), which reports and receipts
   say. Before this, a refund in late December got no arrival window at all, and its
   deadline could not be judged.

How many working days a route takes is declared once, on its adapter
(``Capabilities.arrival_working_days``, DOMAIN.md); this module only counts them.
"""

from __future__ import annotations

import functools
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import chinese_calendar
import structlog

from gateway.clock import to_beijing
from gateway.errors import ConfigurationError
from gateway.models import ArrivalWindow

log = structlog.get_logger("gateway.calendar")


@dataclass(frozen=True, slots=True)
class HolidaySchedule:
    """One or more years of the State Council's notice: ``holidays`` are days off
    (weekdays included), ``workdays`` are make-up working days (weekends included).
    A year listed here is fully described by it: other days follow Monday to Friday."""

    years: frozenset[int]
    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)
    source: str = ""


def load_schedule(path: str | Path) -> HolidaySchedule:
    """Read a schedule file (TOML), one table per year::

        [2027]
        holidays = ["2027-01-01", "2027-02-06", ...]     # 放假
        workdays = ["2027-02-14", ...]                   # 调休上班

    A bad file is a ``ConfigurationError`` naming the file and the entry."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"holiday schedule {where}: {exc}",
                                 setting="REFUND_GATEWAY_HOLIDAY_SCHEDULE") from None
    return _schedule(data, where)


def _schedule(data: Mapping[str, Any], where: str) -> HolidaySchedule:
    years: set[int] = set()
    holidays: set[date] = set()
    workdays: set[date] = set()
    for key, table in data.items():
        if not (key.isdigit() and len(key) == 4 and isinstance(table, Mapping)):
            raise ConfigurationError(f"holiday schedule {where}: [{key}] is not a year "
                                     "table", setting="REFUND_GATEWAY_HOLIDAY_SCHEDULE")
        year = int(key)
        years.add(year)
        for name, into in (("holidays", holidays), ("workdays", workdays)):
            for raw in table.get(name, []):
                day = _day(raw, f"{where} [{key}] {name}")
                if day.year != year:
                    raise ConfigurationError(
                        f"holiday schedule {where}: {day} is listed under [{key}]",
                        setting="REFUND_GATEWAY_HOLIDAY_SCHEDULE")
                into.add(day)
    both = holidays & workdays
    if both:
        raise ConfigurationError(f"holiday schedule {where}: {sorted(both)[0]} is both a "
                                 "holiday and a working day",
                                 setting="REFUND_GATEWAY_HOLIDAY_SCHEDULE")
    return HolidaySchedule(frozenset(years), frozenset(holidays), frozenset(workdays),
                           where)


def _day(raw: object, where: str) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise ConfigurationError(f"holiday schedule {where}: {raw!r} is not a date "
                                 "(YYYY-MM-DD)",
                                 setting="REFUND_GATEWAY_HOLIDAY_SCHEDULE") from None


_schedule_in_use: HolidaySchedule | None = None
_warned_years: set[int] = set()
_lock = threading.Lock()


def configure(schedule: HolidaySchedule | None) -> None:
    """Use ``schedule`` from now on (the composition root calls it from settings)."""
    global _schedule_in_use  # noqa: PLW0603 - one calendar per process, set at start
    with _lock:
        _schedule_in_use = schedule
        _warned_years.clear()
    _working.cache_clear()


def package_years() -> tuple[int, int]:
    years = sorted({d.year for d in chinese_calendar.constants.holidays})
    return years[0], years[-1]


def covered(day: date) -> bool:
    """Whether a real source (the schedule file or the package) describes ``day``'s year."""
    schedule = _schedule_in_use
    if schedule is not None and day.year in schedule.years:
        return True
    first, last = package_years()
    return first <= day.year <= last


def is_approximate(window: ArrivalWindow | None, start: date | None = None) -> bool:
    """Whether an arrival estimate rests on the Monday-to-Friday fallback."""
    if window is None:
        return False
    days = [window.earliest, window.latest] + ([start] if start else [])
    return any(not covered(d) for d in _span(min(days), max(days)))


def _span(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def reach() -> dict[str, Any]:
    """How far the calendar reaches (``refund-gateway calendar``, doctor)."""
    first, last = package_years()
    schedule = _schedule_in_use
    years = sorted(schedule.years) if schedule else []
    return {"package": {"first_year": first, "last_year": last},
            "schedule_file": {"path": schedule.source if schedule else None,
                              "years": years},
            "covered_through": max([last, *years]),
            "fallback": "Monday to Friday, estimates flagged approximate"}


def is_working_day(day: date) -> bool:
    return _working(day)


@functools.lru_cache(maxsize=4096)
def _working(day: date) -> bool:
    # cached: every succeeded refund asks for its arrival window (a few dates each)
    schedule = _schedule_in_use
    if schedule is not None and day.year in schedule.years:
        if day in schedule.holidays:
            return False
        return day in schedule.workdays or day.weekday() < 5
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        with _lock:
            first_time = day.year not in _warned_years
            _warned_years.add(day.year)
        if first_time:
            first, last = package_years()
            log.warning("calendar.approximate", year=day.year,
                        reason=f"no holiday data for {day.year} (chinese-calendar covers "
                        f"{first}-{last}; no holiday_schedule entry): Monday to Friday, "
                        "estimates flagged approximate")
        return day.weekday() < 5


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
