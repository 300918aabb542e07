"""Pacing the resolver's channel calls: a rate and a concurrency cap per route and
merchant account, slowed down by the channel's own "too many requests" answers.

Owns: ``AdaptiveRate`` (a GCRA token bucket whose rate moves AIMD-style: cut on a
rate-limited answer, grown back linearly), ``Lane`` (one route and account: its rate,
its in-flight cap, its counters), ``Pacer`` (the lanes of one gateway, from
``ResolverSettings.limits``) and ``rate_limited`` (which ``ChannelError`` means "slow
down"). A resolver worker marks its thread with ``Pacer.pacing(...)``; only calls made
under that mark wait for the lane's rate: ``refund()`` and ``sync()`` never wait here.
Must not decide anything about a refund, touch the store or retry: a rate-limited
answer stays an unknown outcome, recorded and rescheduled by the lifecycle as before.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from gateway.errors import ChannelError
from gateway.models import ChannelResult, Refund, Route
from gateway.ports import ChannelAdapter
from gateway.settings import ResolverSettings

log = structlog.get_logger("gateway.ratelimit")

# The channels' "too many requests" answers (CH §5.3 WeChat 429 FREQUENCY_LIMITED,
# addendum §9; the wallet's 429 RATE_LIMITED; Alipay's isv.app-call-limited family, CH
# §4.3). UnionPay's 37 过于频繁 ("too frequent", NOT_ACCEPTED in adapters/bankcard/
# translate.py) is the bank-card route's.
RATE_LIMIT_CODES = frozenset({"FREQUENCY_LIMITED", "RATE_LIMITED", "isv.app-call-limited",
                              "isv.method-call-limited", "app-call-limited"})
UNIONPAY_TOO_FREQUENT = "37"

# AIMD (Jacobson's congestion avoidance, applied to a call rate): a limited answer cuts
# the rate to DECREASE of itself, at most once per COOLDOWN (the calls already in flight
# answer 429 too; one cut per burst of them); then it grows by ceiling/RECOVER_SECONDS
# per second, so a full recovery from one cut takes about RECOVER_SECONDS x 0.3.
DECREASE = 0.7
COOLDOWN_SECONDS = 1.0
RECOVER_SECONDS = 10.0
# The least rate a lane is cut to (calls/s): a channel that limits everything is still
# asked now and then, so the lane notices when it recovers.
FLOOR = 0.5
# Calls a lane may send back to back before its rate spaces them (GCRA's tolerance, in
# seconds of the current rate): small, so a burst cannot trip a per-second limit.
BURST_SECONDS = 0.1


def rate_limited(exc: BaseException, route: Route) -> bool:
    """True when ``exc`` is the channel saying "too many requests": HTTP 429, WeChat's
    FREQUENCY_LIMITED, the wallet's RATE_LIMITED, Alipay's isv.app-call-limited family,
    UnionPay's 37 on the bank-card route."""
    if not isinstance(exc, ChannelError):
        return False
    if exc.http_status == 429 or (exc.code or "") in RATE_LIMIT_CODES:
        return True
    return route is Route.BANKCARD and exc.code == UNIONPAY_TOO_FREQUENT


class AdaptiveRate:
    """Calls per second for one lane: a GCRA (virtual scheduling) token bucket whose rate
    is cut on a limited answer and grown back to ``ceiling``.

    ``reserve()`` books the next slot and says how long to wait for it (the caller
    sleeps, so no lock is held while waiting). With ``ceiling`` None the lane is not
    limited until the channel says so; a cut then starts from the rate measured over the
    last second, and once grown to twice that the lane is unlimited again.
    """

    def __init__(self, ceiling: float | None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = ceiling
        self._now = monotonic
        self._lock = threading.Lock()
        self.rate = math.inf if ceiling is None else float(ceiling)
        self._tat = monotonic()             # GCRA's theoretical arrival time
        self._last_cut = -math.inf
        self._grown_at = monotonic()
        self._anchor = 0.0                  # unlimited lanes: the rate measured at a cut
        self._recent: deque[float] = deque(maxlen=100_000)   # calls of the last second
        self.cuts = 0

    def reserve(self) -> float:
        """Book one call; returns the seconds to wait before making it (0: now)."""
        with self._lock:
            now = self._now()
            self._grow(now)
            self._measured(now)             # keeps only the last second's calls
            self._recent.append(now)
            if math.isinf(self.rate):
                return 0.0
            interval = 1.0 / self.rate
            start = max(self._tat - BURST_SECONDS, now)
            self._tat = max(self._tat, now) + interval
            return start - now

    def limited(self) -> bool:
        """The channel answered "too many": cut the rate (once per cooldown); True when
        this answer cut it."""
        with self._lock:
            now = self._now()
            if now - self._last_cut < COOLDOWN_SECONDS:
                return False
            if math.isinf(self.rate):
                self._anchor = max(self._measured(now), FLOOR)
                self.rate = self._anchor
            self.rate = max(FLOOR, self.rate * DECREASE)
            self._last_cut = self._grown_at = now
            self._tat = max(self._tat, now + 1.0 / self.rate)   # no burst right after it
            self.cuts += 1
            return True

    def _measured(self, now: float) -> float:
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        return float(len(self._recent))

    def _grow(self, now: float) -> None:
        """Additive increase since the last growth, once a cut's cooldown is over."""
        if math.isinf(self.rate):
            return
        since = max(self._grown_at, self._last_cut + COOLDOWN_SECONDS)
        if now <= since:
            return
        top = self.ceiling if self.ceiling is not None else self._anchor
        self.rate += top / RECOVER_SECONDS * (now - since)
        self._grown_at = now
        if self.ceiling is not None:
            self.rate = min(self.rate, self.ceiling)
        elif self.rate >= 2 * self._anchor:
            self.rate = math.inf


@dataclass(eq=False)
class Lane:
    """One route and merchant account's share of the resolver: its rate, how many of its
    refunds are checked at once (``max_in_flight``) and what it saw."""

    route: Route
    account: str
    rate: AdaptiveRate
    max_in_flight: int
    calls: int = 0
    limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def called(self, exc: BaseException | None) -> bool:
        """Count a call; a rate-limited answer cuts the rate. True when it was one."""
        with self._lock:
            self.calls += 1
            hit = exc is not None and rate_limited(exc, self.route)
            self.limited += hit
        if hit and self.rate.limited():
            log.warning("resolver.rate_limited", route=self.route.value,
                        account=self.account, rate_per_second=round(self.rate.rate, 1),
                        code=getattr(exc, "code", None))
        return hit


@dataclass(slots=True)
class Mark:
    """A resolver worker's thread: its lane, the adapter it paces, whether the slot for
    its next call was already reserved (the worker waits for it before taking a refund,
    so a stop is never held up by a refund waiting for its slot), and how many of its
    calls the channel refused as too many."""

    lane: Lane
    adapter: ChannelAdapter
    wait: Callable[[float], None]
    reserved: bool = False
    limited: int = 0
    last_limited: str | None = None        # the call refused last: submit or query
    inside: bool = False                   # in a paced call (a wrapper around a wrapper)


_MARK: contextvars.ContextVar[Mark | None] = contextvars.ContextVar(
    "refund_gateway_pacing", default=None)

PACED_CALLS = ("submit", "query")


class _Paced:
    """An adapter's ``submit``/``query`` that waits for the lane's rate when called on a
    resolver worker's thread (``Pacer.pacing``), and passes straight through otherwise."""

    __slots__ = ("_adapter", "_call", "_name")
    paced = True

    def __init__(self, adapter: ChannelAdapter, call: Callable[[Refund], ChannelResult],
                 name: str) -> None:
        self._adapter, self._call, self._name = adapter, call, name

    def __call__(self, refund: Refund) -> ChannelResult:
        mark = _MARK.get()
        if mark is None or mark.adapter is not self._adapter or mark.inside:
            return self._call(refund)
        if mark.reserved:
            mark.reserved = False
        else:                       # a second call in one check (a resend)
            mark.wait(mark.lane.rate.reserve())
        mark.inside = True
        try:
            result = self._call(refund)
        except BaseException as exc:
            if mark.lane.called(exc):
                mark.limited += 1
                mark.last_limited = self._name
            raise
        finally:
            mark.inside = False
        mark.lane.called(None)
        return result


def _paced(call: object) -> bool:
    """Whether ``call`` is, or wraps (``__wrapped__``, e.g. gateway.instrument's
    observers), a pace-able call already."""
    for _ in range(16):
        if getattr(call, "paced", False):
            return True
        call = getattr(call, "__wrapped__", None)
        if call is None:
            return False
    return False


class Pacer:
    """The lanes of one gateway: one per (route, merchant account), built on first use
    from ``ResolverSettings.limits`` (the route's limits, with the account's own where
    set)."""

    def __init__(self, settings: ResolverSettings,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self._lanes: dict[tuple[Route, str], Lane] = {}
        self._lock = threading.Lock()

    def lane(self, route: Route, account: str) -> Lane:
        with self._lock:
            found = self._lanes.get((route, account))
            if found is None:
                limits = self._settings.limits_for(route, account)
                found = self._lanes[(route, account)] = Lane(
                    route, account, AdaptiveRate(limits.calls_per_second,
                                                 monotonic=self._monotonic),
                    max_in_flight=limits.max_in_flight or self._settings.concurrency)
            return found

    def lanes(self) -> list[Lane]:
        with self._lock:
            return list(self._lanes.values())

    @staticmethod
    def attach(adapter: ChannelAdapter) -> None:
        """Make ``adapter``'s channel calls pace-able (idempotent; a method replaced
        since, e.g. by a test double, is wrapped again). Outside a resolver worker the
        wrapper only passes the call on."""
        for name in PACED_CALLS:
            current = getattr(adapter, name)
            if not _paced(current):
                setattr(adapter, name, _Paced(adapter, current, name))

    @staticmethod
    @contextmanager
    def pacing(lane: Lane, adapter: ChannelAdapter, wait: Callable[[float], None],
               *, reserved: bool) -> Iterator[Mark]:
        """Within the block, this thread's calls to ``adapter`` wait for ``lane``'s
        rate; ``reserved``: the first one's slot was reserved (and waited for) already.
        The mark yielded counts the calls refused as too many (``limited``)."""
        mark = Mark(lane, adapter, wait, reserved)
        token = _MARK.set(mark)
        try:
            yield mark
        finally:
            _MARK.reset(token)

