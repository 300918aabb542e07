"""The resolver works through a batch concurrently, within limits (issue 21): a pool per
route and merchant account, never above the account's in-flight cap, the process's
concurrency or the account's calls per second; a rate-limited answer slows that account
alone. What the sequential resolver promised still holds: the lease is renewed while
every worker waits on a slow channel, a stop hands the rest back, one refund's error
stops nothing, and the report's counts are right."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from gateway import Money, Payment, RefundGateway, RefundRequest, RefundStatus, Route, lanes
from gateway.bootstrap import build_gateway
from gateway.errors import OutcomeUnknown
from gateway.lanes import RETRIES_WHEN_LIMITED
from gateway.models import ChannelResult, ChannelStatus, Refund
from gateway.ports import Capabilities
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request

LEASE = timedelta(seconds=30)


class Gate(FakeChannel):
    """Queries that wait until the test opens the gate, counting how many are inside at
    once (overall and at the peak) and the moment each one started."""

    def __init__(self, ledger: Ledger | None = None, *, open_: bool = False) -> None:
        super().__init__(ledger)
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.inside = self.peak = 0
        self.started: list[float] = []
        self.hold = 0.0                  # real seconds each query takes once let in
        self.fail: set[str] = set()      # refund ids whose query raises a bug
        self.limited: int = 0            # the next n queries answer 429
        self.limited_submits: int = 0    # the next n submits answer 429
        self._count = threading.Lock()

    def query(self, refund: Refund) -> ChannelResult:
        with self._count:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.started.append(time.monotonic())
            limited = self.limited > 0
            self.limited -= limited
        try:
            assert self.gate.wait(30), "the test never opened the gate"
            if self.hold:
                time.sleep(self.hold)
            if refund.id in self.fail:
                raise RuntimeError("a bug in one refund's check")
            if limited:
                raise OutcomeUnknown("HTTP 429 FREQUENCY_LIMITED", channel="fake",
                                     operation="query", http_status=429,
                                     code="FREQUENCY_LIMITED")
            return super().query(refund)
        finally:
            with self._count:
                self.inside -= 1

    def submit(self, refund: Refund) -> ChannelResult:
        with self._count:
            limited = self.limited_submits > 0
            self.limited_submits -= limited
        if limited:                      # refused before anything is executed
            raise OutcomeUnknown("HTTP 429 FREQUENCY_LIMITED", channel="fake",
                                 operation="submit", http_status=429,
                                 code="FREQUENCY_LIMITED")
        return super().submit(refund)


class GateBalance(Gate):
    """The same, as the platform-balance route."""

    route: ClassVar[Route] = Route.BALANCE
    capabilities: ClassVar[Capabilities] = FakeBalance.capabilities


def build(url: str, clock: FakeClock, channel: FakeChannel, *,
          accounts: dict[str, FakeChannel] | None = None, balance: FakeChannel | None = None,
          **resolver: Any) -> RefundGateway:
    settings = load_settings(database_url=url, resolver={"lease_seconds": 30, **resolver})
    return build_gateway(
        settings, clock=clock, sleep=lambda _: None, configure_logs=False,
        adapters={Route.WECHATPAY: channel, Route.BALANCE: balance or FakeBalance(Ledger())},
        accounts={(Route.WECHATPAY, name): a for name, a in (accounts or {}).items()})


def make(gw: RefundGateway, n: int, *, account: str = "default", prefix: str = "k",
         route: Route = Route.WECHATPAY) -> list[str]:
    ids = []
    for i in range(n):
        payment = Payment(route, f"ORD-{prefix}{i}", f"T-{prefix}{i}", Money(1_000),
                          user_id="u1", merchant_account=account)
        ids.append(gw.refund(RefundRequest(f"{prefix}{i}", payment, Money(100))).id)
    return ids


def run_in_background(gw: RefundGateway, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(gw.resolve_due(**kwargs))
        except BaseException as exc:  # surfaced by the test
            out.append(exc)

    worker = threading.Thread(target=go)
    worker.start()
    return worker, out


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def gw(database_url: str, clock: FakeClock, gate: Gate) -> Iterator[RefundGateway]:
    g = build(database_url, clock, gate, concurrency=8)
    yield g
    g.close()


def test_a_batch_is_checked_concurrently_up_to_the_concurrency(
        gw: RefundGateway, clock: FakeClock, gate: Gate) -> None:
    ids = make(gw, 12)
    clock.advance(minutes=5)
    worker, out = run_in_background(gw)
    wait_until(lambda: gate.inside == 8)     # eight slow queries at once, not one
    time.sleep(0.1)
    assert gate.inside == 8                  # and never more than the concurrency
    gate.gate.set()
    worker.join(30)
    assert out[0].claimed == 12 and out[0].errors == 0 and gate.peak == 8
    assert sorted(no for op, no in gate.ledger.calls if op == "query") == sorted(ids)


def test_the_lease_is_renewed_while_every_worker_waits_on_a_slow_channel(
        gw: RefundGateway, clock: FakeClock, gate: Gate) -> None:
    make(gw, 12)                             # 8 in flight, 4 waiting for a worker
    clock.advance(minutes=5)
    worker, out = run_in_background(gw)
    wait_until(lambda: gate.inside == 8)
    clock.advance(seconds=25)                # 5 s of the 30 s lease left, nobody done
    time.sleep(0.6)                          # the caller's thread watches the lease
    clock.advance(seconds=10)                # past the first lease's end
    peer = gw.store.claim_due(clock(), limit=100, lease=LEASE)
    gate.gate.set()
    worker.join(30)
    assert peer == []                        # not one refund for a peer to query again
    assert out[0].claimed == 12 and len(gate.started) == 12


def test_a_stop_finishes_the_refunds_in_hand_and_hands_back_the_rest(
        gw: RefundGateway, clock: FakeClock, gate: Gate) -> None:
    make(gw, 12)
    clock.advance(minutes=5)
    stop = threading.Event()
    worker, out = run_in_background(gw, stop=stop.is_set)
    wait_until(lambda: gate.inside == 8)
    stop.set()
    gate.gate.set()
    worker.join(30)
    report = out[0]
    assert report.stopped and report.claimed == 12
    assert len(gate.started) == 8            # the ones in hand were finished
    again = gw.store.claim_due(clock(), limit=100, lease=LEASE)
    assert len(again) == 4                   # the rest is due at once, not after the lease


def test_one_refunds_error_stops_nothing_and_the_counts_add_up(
        gw: RefundGateway, clock: FakeClock, gate: Gate) -> None:
    ids = make(gw, 10)
    gate.gate.set()
    gate.fail = {ids[3]}
    for no in ids[:4]:                       # four settled on the channel's side
        gate.ledger.status[no] = ChannelStatus.SUCCEEDED
    clock.advance(minutes=5)
    report = gw.resolve_due()
    assert (report.claimed, report.errors, report.changed, report.final) == (10, 1, 3, 3)
    assert report.resent == 0                # every one was found: nothing sent again
    assert [gw.get(i).status for i in ids[:3]] == [RefundStatus.SUCCEEDED] * 3
    assert gw.get(ids[3]).status is RefundStatus.PROCESSING


def test_resends_are_counted_once_each_across_workers(database_url: str,
                                                      clock: FakeClock) -> None:
    channel = Gate(open_=True)
    channel.hold = 0.02                      # the queries overlap
    gw = build(database_url, clock, channel, concurrency=8)
    channel.submit_script = ["unavailable"] * 3 * 16
    ids = make(gw, 16)                       # never reached the channel: PENDING
    assert {gw.get(i).status for i in ids} == {RefundStatus.PENDING}
    clock.advance(minutes=5)
    report = gw.resolve_due()
    assert report.resent == 16 and channel.peak > 1
    assert sorted(channel.ledger.executed) == sorted(ids)
    gw.close()


def test_each_account_has_its_own_in_flight_cap(sqlite_url: str, clock: FakeClock) -> None:
    shops = {"default": Gate(), "shop2": Gate()}
    gw = build(sqlite_url, clock, shops["default"], accounts={"shop2": shops["shop2"]},
               concurrency=16, limits={"wechatpay": {
                   "max_in_flight": 3, "accounts": {"shop2": {"max_in_flight": 5}}}})
    make(gw, 10, prefix="a")
    make(gw, 10, account="shop2", prefix="b")
    clock.advance(minutes=5)
    worker, out = run_in_background(gw)
    wait_until(lambda: shops["default"].inside == 3 and shops["shop2"].inside == 5)
    time.sleep(0.1)
    assert (shops["default"].inside, shops["shop2"].inside) == (3, 5)
    for shop in shops.values():
        shop.gate.set()
    worker.join(30)
    assert out[0].claimed == 20
    assert (shops["default"].peak, shops["shop2"].peak) == (3, 5)
    gw.close()


def test_the_concurrency_bounds_all_lanes_together(sqlite_url: str, clock: FakeClock) -> None:
    wechat, wallet = Gate(), GateBalance()
    gw = build(sqlite_url, clock, wechat, balance=wallet, concurrency=4)
    make(gw, 6, prefix="w")
    make(gw, 6, prefix="b", route=Route.BALANCE)
    clock.advance(minutes=5)
    worker, out = run_in_background(gw)
    wait_until(lambda: wechat.inside + wallet.inside == 4)
    time.sleep(0.1)
    assert wechat.inside + wallet.inside == 4
    wechat.gate.set()
    wallet.gate.set()
    worker.join(30)
    assert out[0].claimed == 12
    gw.close()


def test_calls_stay_within_the_accounts_rate(sqlite_url: str, clock: FakeClock) -> None:
    channel = Gate(open_=True)
    gw = build(sqlite_url, clock, channel, concurrency=16,
               limits={"wechatpay": {"calls_per_second": 40}})
    make(gw, 40)
    clock.advance(minutes=5)
    gw.resolve_due()
    started = sorted(channel.started)
    # 40 calls at 40/s: about a second (a few back to back, then one every 25 ms) ...
    assert started[-1] - started[0] >= 0.8
    # ... and no 250 ms window holds more than its share plus the small burst
    for i, t in enumerate(started):
        assert sum(1 for u in started[i:] if u < t + 0.25) <= 20   # unpaced: all 40
    gw.close()


def test_a_rate_limited_answer_slows_that_account_alone(sqlite_url: str,
                                                        clock: FakeClock) -> None:
    shops = {"default": Gate(open_=True), "shop2": Gate(open_=True)}
    gw = build(sqlite_url, clock, shops["default"], accounts={"shop2": shops["shop2"]},
               concurrency=8, limits={"wechatpay": {"calls_per_second": 100}})
    shops["default"].limited = 3
    ids = make(gw, 6, prefix="a")
    make(gw, 6, account="shop2", prefix="b")
    clock.advance(minutes=5)
    report = gw.resolve_due()
    assert report.claimed == 12 and report.errors == 0   # a 429 is an unknown, not a bug
    lanes = {lane.account: lane for lane in gw._pacer.lanes()}
    assert lanes["default"].limited == 3 and lanes["default"].rate.rate < 100
    assert lanes["shop2"].limited == 0 and lanes["shop2"].rate.rate == 100
    limited = [gw.get(i) for i in ids if gw.get(i).check_count]
    assert all(r.status is RefundStatus.PROCESSING for r in limited)   # never failed
    # the three refused queries were asked again in the same cycle, once the lane slowed
    answered = [no for op, no in shops["default"].ledger.calls if op == "query"]
    assert len(shops["default"].started) == 6 + 3 and sorted(answered) == sorted(ids)
    gw.close()


def test_a_refused_resend_is_sent_again_without_a_second_query(
        database_url: str, clock: FakeClock) -> None:
    channel = Gate(open_=True)
    gw = build(database_url, clock, channel, concurrency=4)
    channel.submit_script = ["unavailable"] * 3 * 4
    ids = make(gw, 4)                        # never reached the channel: PENDING
    channel.limited_submits = 3              # the first three resends: 429
    clock.advance(minutes=5)
    report = gw.resolve_due()
    queried = [no for op, no in channel.ledger.calls if op == "query"]
    assert sorted(queried) == sorted(ids)    # one query each, in this cycle
    assert sorted(channel.ledger.executed) == sorted(ids)
    assert (report.claimed, report.resent, report.errors) == (4, 4, 0)
    gw.close()


def test_a_channel_that_refuses_everything_is_asked_a_bounded_number_of_times(
        sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "RETRY_DELAY_SECONDS", 0.01)   # 0.01 .. 0.16 s apart
    channel = Gate(open_=True)
    channel.limited = 1_000
    gw = build(sqlite_url, clock, channel, concurrency=4,
               limits={"wechatpay": {"calls_per_second": 1_000}})
    ids = make(gw, 2)
    clock.advance(minutes=5)
    report = gw.resolve_due()
    assert (report.claimed, report.errors, report.changed) == (2, 0, 0)
    assert len(channel.started) == 2 * (1 + RETRIES_WHEN_LIMITED)      # then the schedule
    assert all(gw.get(i).next_check_at > clock() for i in ids)          # type: ignore[operator]
    gw.close()


def test_concurrency_one_checks_in_claim_order(database_url: str, clock: FakeClock) -> None:
    channel = Gate(open_=True)
    gw = build(database_url, clock, channel, concurrency=1)
    ids = make(gw, 6)
    clock.advance(minutes=5)
    report = gw.resolve_due()
    assert report.claimed == 6 and channel.peak == 1
    queried = [no for op, no in channel.ledger.calls if op == "query"]
    assert queried == sorted(ids)            # the claim's order (same check time: by id)
    gw.close()


def test_refund_and_sync_calls_are_never_paced(sqlite_url: str, clock: FakeClock) -> None:
    channel = Gate(open_=True)
    gw = build(sqlite_url, clock, channel, limits={"wechatpay": {"calls_per_second": 2}})
    make(gw, 2)
    clock.advance(minutes=5)
    gw.resolve_due()                         # the adapter's calls are pace-able now
    started = time.monotonic()
    for r in [request(f"x{i}", 100, order=f"X{i}") for i in range(5)]:
        gw.sync(gw.refund(r).id)             # ten calls: 4.5 s at the resolver's 2/s
    assert time.monotonic() - started < 1.5
    gw.close()


def test_the_channel_session_keeps_a_connection_for_every_concurrent_check() -> None:
    from gateway import transport

    session = transport.session()
    adapter = session.get_adapter("https://api.mch.weixin.qq.com/")
    pool = adapter.poolmanager.connection_from_url("https://api.mch.weixin.qq.com/")
    # requests' default 10 would close most connections of 32 concurrent checks after
    # each call (a new TLS handshake for the next one)
    assert pool.pool.maxsize >= load_settings(database_url="sqlite://").resolver.concurrency
    session.close()


def test_an_adapter_observed_after_the_resolver_started_is_paced_once(
        sqlite_url: str, clock: FakeClock) -> None:
    from contextlib import nullcontext

    from gateway.instrument import observe_adapter

    channel = Gate(open_=True)
    gw = build(sqlite_url, clock, channel, concurrency=4)
    make(gw, 3, prefix="a")
    clock.advance(minutes=5)
    gw.resolve_due()                              # the adapter is pace-able now ...
    observe_adapter(channel, lambda call: nullcontext(), marker="test")  # ... then observed
    make(gw, 3, prefix="b")
    clock.advance(minutes=5)
    gw.resolve_due()
    (lane,) = gw._pacer.lanes()
    assert lane.calls == len(channel.started) > 6     # each call paced and counted once
    gw.close()
