"""A run's inputs checked before and while they are read: wrong input is refused or
reported with counts, never reconciled in silence.

Refused (``RunInputError``; the CLI exits 2): a statement of a route the run is not for;
the same file given twice (same path, or the same bytes under another name); a statement
none of whose refund lines is within an hour of the run's day (another day's file).
Reported (``RunWarning``; the run exits 1): some refund lines of a statement outside the
day; platform refunds of other days in the export (judged with the day's statements,
except those an earlier run already matched, which are left out).

The day is the statement day as each channel cuts it, in Beijing time: UnionPay clears
from 23:00 the day before to 23:00 (CHANNELS-ADDENDUM §1: the ZM reader puts a 06-10
23:30 refund in the 06-11 file); Alipay, WeChat and the wallet bill the Beijing calendar
day (CH §4.6 and §5.7 ``bill_date``). A platform refund belongs to the day by either cut
(the refund service exports by Beijing day). Checks only: no matching, no store.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import polars as pl

from gateway.clock import BEIJING
from gateway.errors import GatewayError
from gateway.models import Route
from reconciliation.statements import Source, detect

# Where a route's statement day starts, from Beijing midnight of the statement date (the
# day is 24 hours long): UnionPay's clearing day starts at 23:00 the day before.
DAY_START: Final = {Route.BANKCARD: timedelta(hours=-1)}
# A statement is refused only when none of its lines is within this of its day: a refund
# applied before midnight and paid just after may be listed on either side of it.
REFUSE_MARGIN: Final = timedelta(hours=1)


class RunInputError(GatewayError):
    """An input the run must not reconcile (the CLI exits 2)."""


@dataclass(frozen=True)
class RunWarning:
    """Something wrong with an input that the run still reconciled, with counts."""

    code: str           # lines_outside_day | platform_other_days | platform_matched_before
    message: str
    count: int
    source: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StatementInfo:
    """One statement of a run: its name, format, route and digest."""

    name: str
    format: str
    route: Route
    sha256: str


def channel_day(route: Route | str, day: date) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of ``route``'s statement day ``day``."""
    start = datetime.combine(day, time(0), BEIJING) + DAY_START.get(Route(route),
                                                                    timedelta(0))
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def platform_day(route: Route | str, day: date) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) in which a refund belongs to ``day``: the Beijing
    calendar day, widened by the route's clearing day."""
    bj = datetime.combine(day, time(0), BEIJING).astimezone(UTC)
    start, end = channel_day(route, day)
    return min(start, bj), max(end, bj + timedelta(days=1))


def _beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _digest(source: Source) -> str:
    h = hashlib.sha256()
    with source.open() as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_sources(sources: Sequence[Source], routes: Sequence[Route]) -> list[StatementInfo]:
    """Each statement's format and route, refusing one of another route than the run's
    and a file given twice (by path, then by content: only files of equal size are
    read for it)."""
    infos: list[StatementInfo] = []
    seen_paths: dict[str, str] = {}
    sizes: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
        fmt = detect(src)
        if fmt.route not in routes:
            raise RunInputError(
                f"{src.name} is a {fmt.route.value} statement ({fmt.name}); this run is for "
                f"{', '.join(r.value for r in routes)} (--route): not reconciled")
        if src.path is not None:
            where = str(src.path.resolve())
            if where in seen_paths:
                raise RunInputError(f"{src.name} is given twice (as {seen_paths[where]} "
                                    "too): each statement once")
            seen_paths[where] = src.name
        sizes.setdefault(src.size() or 0, []).append(i)
        infos.append(StatementInfo(src.name, fmt.name, fmt.route, ""))
    for same_size in sizes.values():
        if len(same_size) < 2:
            continue
        by_digest: dict[str, int] = {}
        for i in same_size:
            digest = _digest(sources[i])
            infos[i] = StatementInfo(infos[i].name, infos[i].format, infos[i].route, digest)
            if digest in by_digest:
                raise RunInputError(
                    f"{sources[i].name} has the same content as "
                    f"{sources[by_digest[digest]].name} (sha256 {digest[:12]}...): the same "
                    "statement given twice")
            by_digest[digest] = i
    return infos


@dataclass
class _Seen:
    route: str
    lines: int = 0
    outside: int = 0
    near: int = 0          # within REFUSE_MARGIN of the day (inside counts too)
    first: datetime | None = None
    last: datetime | None = None


class DayCheck:
    """Counts each statement's refund lines inside and outside the run's day as the
    parsers hand them over (thread-safe: statements parse in parallel)."""

    def __init__(self, day: date) -> None:
        self.day = day
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def observe(self, source: str, lines: pl.DataFrame) -> None:
        """``lines``: refund lines in ``ENGINE_SCHEMA`` from one statement."""
        if not lines.height:
            return
        route = str(lines.item(0, "route"))
        start, end = channel_day(route, self.day)
        t = pl.col("time")
        got = lines.select(
            pl.len().alias("n"),
            ((t < start) | (t >= end)).sum().alias("outside"),
            ((t >= start - REFUSE_MARGIN) & (t < end + REFUSE_MARGIN)).sum().alias("near"),
            t.min().alias("first"), t.max().alias("last")).row(0, named=True)
        with self._lock:
            seen = self._seen.setdefault(source, _Seen(route))
            seen.lines += int(got["n"])
            seen.outside += int(got["outside"] or 0)
            seen.near += int(got["near"] or 0)
            for name, pick in (("first", min), ("last", max)):
                value = got[name]
                if value is not None:
                    old = getattr(seen, name)
                    setattr(seen, name, value if old is None else pick(old, value))

    def warnings(self) -> list[RunWarning]:
        """Raises ``RunInputError`` for a statement of another day; a warning for each
        statement with some lines outside the day."""
        out = []
        for source, seen in sorted(self._seen.items()):
            if not seen.outside:
                continue
            start, end = channel_day(seen.route, self.day)
            span = (f"lines from {_beijing(seen.first)} to {_beijing(seen.last)}"
                    if seen.first and seen.last else "lines without a time")
            window = (f"{seen.route}'s statement day {self.day.isoformat()} is "
                      f"{_beijing(start)} to {_beijing(end)} Beijing time")
            if not seen.near and seen.first is not None:
                raise RunInputError(
                    f"{source}: none of its {seen.lines} refund lines is of "
                    f"{self.day.isoformat()} ({window}; {span}): a statement of another "
                    "day? Not reconciled")
            out.append(RunWarning(
                "lines_outside_day",
                f"{source}: {seen.outside} of {seen.lines} refund lines fall outside "
                f"{self.day.isoformat()} ({window}; {span}); reconciled, check the file",
                seen.outside, source,
                {"lines": seen.lines, "first": seen.first.isoformat() if seen.first else None,
                 "last": seen.last.isoformat() if seen.last else None}))
        return out


def in_platform_day(day: date) -> pl.Expr:
    """Whether a platform row (``PLATFORM_SCHEMA``) belongs to ``day``: it succeeded in
    it, or was created in it and has not succeeded (the store's window), by either cut."""
    moment = pl.coalesce("succeeded_at", "created_at")
    route = pl.col("route").cast(pl.String)
    inside = pl.lit(False)
    for r in Route:
        start, end = platform_day(r, day)
        inside = inside | ((route == r.value) & (moment >= start) & (moment < end))
    return inside.fill_null(False)
