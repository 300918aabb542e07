"""Time, injectable. The service and adapters take a ``Clock`` so tests control "now"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

Clock = Callable[[], datetime]

# Channels speak Beijing time (Alipay timestamps, UnionPay txnTime, bill cells).
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_beijing(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the gateway only handles aware timestamps")
    return moment.astimezone(BEIJING)


def from_beijing(naive: datetime) -> datetime:
    """A wall-clock Beijing time (as channels write it) as aware UTC."""
    return naive.replace(tzinfo=BEIJING).astimezone(UTC)
