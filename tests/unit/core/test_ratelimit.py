"""The resolver's pace per route and account (gateway.ratelimit): a token bucket that
spaces calls at the rate, cut by a rate-limited answer once per burst of them and grown
back to the ceiling; which channel answers mean "too many requests"; the settings."""

from __future__ import annotations

import math

import pytest

from gateway.errors import ChannelAuthError, ChannelUnavailable, OutcomeUnknown
from gateway.models import Route
from gateway.ratelimit import (
    COOLDOWN_SECONDS,
    DECREASE,
    FLOOR,
    RECOVER_SECONDS,
    AdaptiveRate,
    rate_limited,
)
from gateway.settings import load_settings


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def waits(rate: AdaptiveRate, n: int) -> list[float]:
    return [round(rate.reserve(), 4) for _ in range(n)]


def test_calls_are_spaced_at_the_rate_after_a_small_burst() -> None:
    ticks = Ticks()
    rate = AdaptiveRate(100, monotonic=ticks)
    booked = waits(rate, 15)
    assert booked[:11] == [0.0] * 11               # 0.1 s of tolerance: 10 at once (+1)
    assert booked[11:] == [0.01, 0.02, 0.03, 0.04]  # then one every 1/100 s
    ticks.t += 10                                  # idle time is not saved up as a burst
    assert waits(rate, 12)[-1] == 0.01


def test_a_limited_answer_cuts_the_rate_once_per_cooldown_and_it_grows_back() -> None:
    ticks = Ticks()
    rate = AdaptiveRate(150, monotonic=ticks)
    assert rate.limited() is True
    assert rate.rate == pytest.approx(150 * DECREASE)
    assert rate.limited() is False                 # the same burst of 429s: one cut
    ticks.t += COOLDOWN_SECONDS / 2
    assert rate.limited() is False and rate.rate == pytest.approx(105)
    ticks.t += COOLDOWN_SECONDS
    assert rate.limited() is True and rate.rate == pytest.approx(150 * DECREASE ** 2)
    cut = rate.rate
    ticks.t += COOLDOWN_SECONDS + 1                # one second of growth after the cooldown
    rate.reserve()
    assert rate.rate == pytest.approx(cut + 150 / RECOVER_SECONDS)
    ticks.t += RECOVER_SECONDS                     # recovered, never above the ceiling
    rate.reserve()
    assert rate.rate == 150


def test_the_rate_never_falls_below_the_floor() -> None:
    ticks = Ticks()
    rate = AdaptiveRate(2, monotonic=ticks)
    for _ in range(30):
        rate.limited()
        ticks.t += COOLDOWN_SECONDS
    assert rate.rate == FLOOR


def test_an_unlimited_lane_is_cut_from_what_it_was_sending_and_lifted_again() -> None:
    ticks = Ticks()
    rate = AdaptiveRate(None, monotonic=ticks)
    assert waits(rate, 200) == [0.0] * 200         # no limit until the channel says so
    ticks.t += 0.5
    assert rate.limited() is True
    assert rate.rate == pytest.approx(200 * DECREASE)   # 200 sent in the last second
    ticks.t += COOLDOWN_SECONDS + RECOVER_SECONDS * 1.3
    rate.reserve()
    assert math.isinf(rate.rate)                   # grown to twice the anchor: unlimited


def test_what_a_lane_remembers_of_its_calls_is_one_second_of_them() -> None:
    ticks = Ticks()
    rate = AdaptiveRate(None, monotonic=ticks)
    for _ in range(5_000):                         # 5,000 calls over 50 s, 100 a second
        rate.reserve()
        ticks.t += 0.01
    assert len(rate._recent) <= 101


@pytest.mark.parametrize(("exc", "route", "expected"), [
    (OutcomeUnknown("429", channel="wechatpay", operation="query", http_status=429,
                    code="FREQUENCY_LIMITED"), Route.WECHATPAY, True),
    (OutcomeUnknown("429", channel="balance", operation="query", http_status=429),
     Route.BALANCE, True),
    (OutcomeUnknown("limited", channel="balance", operation="query", code="RATE_LIMITED"),
     Route.BALANCE, True),
    (OutcomeUnknown("40004", channel="alipay", operation="query",
                    code="isv.app-call-limited"), Route.ALIPAY, True),
    (ChannelUnavailable("37", channel="bankcard", operation="query", http_status=200,
                        code="37"), Route.BANKCARD, True),
    (ChannelUnavailable("37", channel="alipay", operation="query", code="37"),
     Route.ALIPAY, False),
    (OutcomeUnknown("500", channel="wechatpay", operation="query", http_status=500,
                    code="SYSTEM_ERROR"), Route.WECHATPAY, False),
    (OutcomeUnknown("read timed out", channel="wechatpay", operation="query"),
     Route.WECHATPAY, False),
    (ChannelAuthError("401", channel="wechatpay", operation="query", http_status=401),
     Route.WECHATPAY, False),
    (RuntimeError("429"), Route.WECHATPAY, False),
])
def test_which_answers_mean_too_many_requests(exc: BaseException, route: Route,
                                              expected: bool) -> None:
    assert rate_limited(exc, route) is expected


def test_limits_per_route_and_account_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_GATEWAY_RESOLVER__CONCURRENCY", "8")
    monkeypatch.setenv("REFUND_GATEWAY_RESOLVER__LIMITS__WECHATPAY__MAX_IN_FLIGHT", "16")
    monkeypatch.setenv(
        "REFUND_GATEWAY_RESOLVER__LIMITS__WECHATPAY__ACCOUNTS__SHOP2__CALLS_PER_SECOND", "50")
    monkeypatch.setenv("REFUND_GATEWAY_RESOLVER__LIMITS__ALIPAY__CALLS_PER_SECOND", "20")
    resolver = load_settings(database_url="sqlite://").resolver
    assert resolver.concurrency == 8
    default = resolver.limits_for(Route.WECHATPAY, "default")
    assert (default.calls_per_second, default.max_in_flight) == (150, 16)  # 150: WeChat's
    shop2 = resolver.limits_for(Route.WECHATPAY, "shop2")
    assert (shop2.calls_per_second, shop2.max_in_flight) == (50, 16)  # the rest: the route's
    assert resolver.limits_for(Route.ALIPAY, "default").calls_per_second == 20
    assert resolver.limits_for(Route.BALANCE, "default").calls_per_second is None
