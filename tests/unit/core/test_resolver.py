"""The resolver under time: a lease that outlives a slow batch, a stop that hands the
batch back, a clock stepped back, a loop that outlives database faults (issue 16)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from gateway import RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.models import ChannelResult, Refund
from gateway.resolver import Backoff, run_loop
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request


class SlowChannel(FakeChannel):
    """Each query takes ``seconds`` of the gateway's clock (a channel at its timeout)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self._clock, self._seconds = clock, seconds
        self.queried: list[str] = []

    def query(self, refund: Refund) -> ChannelResult:
        self.queried.append(refund.id)
        self._clock.advance(seconds=self._seconds)
        return super().query(refund)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def gateway(database_url: str, clock: FakeClock, channel: FakeChannel, **resolver: int
            ) -> RefundGateway:
    settings = load_settings(database_url=database_url, resolver=resolver or {})
    return build_gateway(settings, clock=clock, sleep=lambda _: None, configure_logs=False,
                         adapters={Route.WECHATPAY: channel, Route.BALANCE: FakeBalance(Ledger())})


@pytest.fixture
def slow(clock: FakeClock) -> SlowChannel:
    return SlowChannel(clock, seconds=10)


@pytest.fixture
def gw(database_url: str, clock: FakeClock, slow: SlowChannel) -> Iterator[RefundGateway]:
    # One refund at a time: each query moves the clock 10 s (the concurrent resolver's
    # lease is tested in test_resolver_concurrency.py, with a channel that blocks).
    g = gateway(database_url, clock, slow, lease_seconds=30, batch_size=20, concurrency=1)
    yield g
    g.close()


def make(gw: RefundGateway, n: int) -> list[str]:
    return [gw.refund(request(f"k{i}", 100, order=f"ORD{i}")).id for i in range(n)]


def test_a_slow_batch_keeps_its_lease_so_no_peer_queries_the_same_refunds(
        gw: RefundGateway, clock: FakeClock, slow: SlowChannel) -> None:
    ids = make(gw, 12)                    # 12 x 10 s of calls against a 30 s lease
    clock.advance(minutes=5)
    peer_claims: list[str] = []
    real_query = slow.query

    def query_and_let_a_peer_look(refund: Refund) -> ChannelResult:
        answer = real_query(refund)
        peer_claims.extend(r.id for r in gw.store.claim_due(clock(), limit=100,
                                                             lease=timedelta(seconds=30)))
        return answer

    slow.query = query_and_let_a_peer_look  # type: ignore[method-assign]
    report = gw.resolve_due()
    assert report.claimed == 12
    assert sorted(slow.queried) == sorted(ids)
    assert peer_claims == []              # the lease was renewed under the peer's nose


def test_a_stop_hands_the_rest_of_the_batch_back(gw: RefundGateway, clock: FakeClock,
                                                 slow: SlowChannel) -> None:
    make(gw, 5)
    clock.advance(minutes=5)
    asked = iter([False, False, True])
    report = gw.resolve_due(stop=lambda: next(asked, True))
    assert report.stopped and len(slow.queried) == 2
    again = gw.store.claim_due(clock(), limit=100, lease=timedelta(seconds=30))
    assert len(again) == 3                # due at once, not after the lease


def test_refunds_scheduled_by_a_clock_that_ran_ahead_are_checked_now(
        gw: RefundGateway, clock: FakeClock, slow: SlowChannel) -> None:
    clock.advance(days=1)                 # the wall clock is stepped a day forward ...
    ahead = make(gw, 2)                   # ... first checks promised "within a minute"
    clock.advance(days=-1)                # ... and stepped back
    clock.advance(minutes=2)
    assert gw.resolve_due().claimed == 2
    assert sorted(slow.queried) == sorted(ahead)
    assert all(gw.get(i).status is RefundStatus.PROCESSING for i in ahead)


def test_the_loop_outlives_database_faults(database_url: str, clock: FakeClock) -> None:
    channel = FakeChannel()
    gw = gateway(database_url, clock, channel)
    ids = make(gw, 3)
    clock.advance(minutes=5)
    engine = gw.store.engine
    with engine.begin() as conn:          # an outage: the refunds table is gone
        conn.execute(text("ALTER TABLE refunds RENAME TO refunds_away"))
    stop = threading.Event()
    reports = []

    def on_cycle(report: object) -> None:
        reports.append(report)
        stop.set()

    cycles: list[int] = []
    worker = threading.Thread(target=lambda: cycles.append(run_loop(
        gw, interval=0.01, stop=stop, on_cycle=on_cycle, backoff=Backoff(0.01, 0.05))))
    worker.start()
    threading.Event().wait(0.3)           # a few failed cycles
    assert worker.is_alive() and not reports
    with engine.begin() as conn:          # the database is back
        conn.execute(text("ALTER TABLE refunds_away RENAME TO refunds"))
    worker.join(timeout=10)
    assert not worker.is_alive() and cycles == [1]
    assert reports and reports[0].claimed == 3
    assert all(gw.get(i).status is RefundStatus.PROCESSING for i in ids)
    gw.close()
