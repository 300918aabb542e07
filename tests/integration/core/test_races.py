"""Races with real threads and real processes on both databases.

Processes count channel calls in a shared append-only file, the way the sandbox's truth
counts executions: one idempotency key must produce one channel call, and racing partial
refunds must never add up to more than was paid.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import IdempotencyConflict, OverRefund, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.models import ChannelResult, ChannelStatus, Refund
from gateway.settings import load_settings
from tests.fakes import FakeChannel
from tests.helpers import request


class FileCountingChannel(FakeChannel):
    """Appends one line per channel call to a file shared by processes."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def submit(self, refund: Refund) -> ChannelResult:
        with open(self.path, "a") as fh:  # O_APPEND: one write per line, atomic
            fh.write(f"{refund.idempotency_key} {refund.channel_refund_no} "
                     f"{refund.amount.minor}\n")
        return ChannelResult(ChannelStatus.SUCCEEDED, refund.channel_refund_no)


def _worker(url: str, calls: str, keys: list[str], amount: int,
            results: mp.Queue) -> None:  # type: ignore[type-arg]
    gw = build_gateway(load_settings(database_url=url), configure_logs=False,
                       adapters={Route.WECHATPAY: FileCountingChannel(calls)},
                       sleep=lambda _: None)
    for key in keys:
        try:
            refund = gw.refund(request(key, amount))
            results.put(("ok", key, refund.id))
        except OverRefund:
            results.put(("over", key, ""))
    gw.close()


def _run_processes(url: str, calls: Path, plans: list[list[str]], amount: int
                   ) -> list[tuple[str, str, str]]:
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_worker, args=(url, str(calls), keys, amount, results))
             for keys in plans]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for keys in plans for _ in keys]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def _prepare(url: str) -> None:
    # Migrate once up front, like `refund-gateway db upgrade` in a deployment.
    build_gateway(load_settings(database_url=url), adapters={}, configure_logs=False).close()


def test_eight_processes_overlapping_keys_one_call_per_key(database_url: str,
                                                           tmp_path: Path) -> None:
    _prepare(database_url)
    calls = tmp_path / "calls.log"
    calls.touch()
    keys = [f"key-{i}" for i in range(6)]
    plans = [keys[i % 3:] + keys[:i % 3] for i in range(8)]   # every key, 8 times
    results = _run_processes(database_url, calls, plans, 100)
    lines = calls.read_text().splitlines()
    called_keys = [line.split()[0] for line in lines]
    assert sorted(called_keys) == sorted(keys)   # exactly one channel call per key
    ids_per_key: dict[str, set[str]] = {}
    for _, key, rid in results:
        ids_per_key.setdefault(key, set()).add(rid)
    assert all(len(ids) == 1 for ids in ids_per_key.values())


def test_twenty_partial_refunds_race_in_processes(database_url: str, tmp_path: Path) -> None:
    _prepare(database_url)
    calls = tmp_path / "calls.log"
    calls.touch()
    # 20 refunds of 700 against 10,000 paid: at most 14 can be accepted.
    plans = [[f"p{i}"] for i in range(20)]
    results = _run_processes(database_url, calls, plans, 700)
    accepted = [r for r in results if r[0] == "ok"]
    assert len(accepted) == 14
    total = sum(int(line.split()[2]) for line in calls.read_text().splitlines())
    assert total == 9_800   # 14 x 700, never above the 10,000 paid


def test_threads_one_key_one_call(database_url: str) -> None:
    _prepare(database_url)
    channel = FakeChannel()
    gw = build_gateway(load_settings(database_url=database_url), configure_logs=False,
                       adapters={Route.WECHATPAY: channel}, sleep=lambda _: None)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def go() -> None:
        barrier.wait()
        ids.append(gw.refund(request("same-key")).id)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert [c for c in channel.ledger.calls if c[0] == "submit"] == [("submit", ids[0])]
    assert gw.get(ids[0]).status is RefundStatus.PROCESSING
    gw.close()


def test_threads_partial_refunds_never_exceed_paid(database_url: str) -> None:
    _prepare(database_url)
    channel = FakeChannel()
    gw = build_gateway(load_settings(database_url=database_url), configure_logs=False,
                       adapters={Route.WECHATPAY: channel}, sleep=lambda _: None)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            gw.refund(request(f"t{i}", 900))
            outcomes.append("ok")
        except OverRefund:
            outcomes.append("over")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 11     # 11 x 900 = 9,900 <= 10,000
    assert sum(channel.ledger.amounts.values()) == 9_900
    gw.close()


class FileCountingQueries(FakeChannel):
    """Every query is a line in a shared file; every refund is still processing."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def query(self, refund: Refund) -> ChannelResult:
        with open(self.path, "a") as fh:
            fh.write(f"{refund.channel_refund_no}\n")
        return ChannelResult(ChannelStatus.PROCESSING, refund.channel_refund_no)


def _resolver(url: str, calls: str, start: mp.Event, results: mp.Queue) -> None:  # type: ignore[type-arg]
    from datetime import timedelta

    from gateway.clock import utcnow

    gw = build_gateway(load_settings(database_url=url), configure_logs=False,
                       adapters={Route.WECHATPAY: FileCountingQueries(calls)},
                       clock=lambda: utcnow() + timedelta(hours=1))
    start.wait(30)
    claimed = 0
    while True:   # one cycle = drain what is due now
        report = gw.resolve_due(limit=7)
        if report.claimed == 0:
            break
        claimed += report.claimed
    results.put(claimed)
    gw.close()


@pytest.mark.postgres
def test_three_resolvers_query_each_due_refund_once(pg_url: str, tmp_path: Path) -> None:
    _prepare(pg_url)
    gw = build_gateway(load_settings(database_url=pg_url), configure_logs=False,
                       adapters={Route.WECHATPAY: FakeChannel()}, sleep=lambda _: None)
    ids = {gw.refund(request(f"r{i}", 10, order=f"O{i}")).id for i in range(60)}
    gw.close()
    calls = tmp_path / "queries.log"
    calls.touch()
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_resolver, args=(pg_url, str(calls), start, results))
             for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    claimed = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    queried = calls.read_text().split()
    assert sorted(queried) == sorted(ids)      # each due refund queried exactly once
    assert sum(claimed) == 60


@pytest.mark.postgres
def test_same_key_racer_that_wins_the_payment_lock_is_returned(pg_url: str,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """PostgreSQL, made deterministic: B passes its key check before A commits, then
    waits on the payment lock A holds; once A commits, B's count of the payment's
    refunds names A's refund under the key, and B returns it (no OverRefund for the
    full amount, no second refund, no duplicate-key error)."""
    from gateway.store.repository import RefundStore

    _prepare(pg_url)
    gw = build_gateway(load_settings(database_url=pg_url), configure_logs=False,
                       adapters={Route.WECHATPAY: FakeChannel()}, sleep=lambda _: None)
    a_locked, b_waiting = threading.Event(), threading.Event()
    seen: dict[str, tuple[int, int, str | None]] = {}
    real_state = RefundStore._reservation_state

    def state(self: RefundStore, conn: Any, request: Any, now: Any) -> Any:
        name = threading.current_thread().name
        if name == "B":
            b_waiting.set()            # B's key lookup runs before A commits; then B
            got = real_state(self, conn, request, now)   # waits for the payment's lock
        else:
            got = real_state(self, conn, request, now)
            a_locked.set()
            assert b_waiting.wait(10)
            time.sleep(0.3)            # B is now blocked on the payment row A holds
        seen[name] = got[2]
        return got

    monkeypatch.setattr(RefundStore, "_reservation_state", state)
    full = request("raced", amount=10_000, paid=10_000)
    results: dict[str, tuple[Refund, bool]] = {}

    def reserve() -> None:
        name = threading.current_thread().name
        now = gw._clock()
        results[name] = gw.store.reserve(full, refund_id=f"rf-{name}",
                                         channel_refund_no=f"rf-{name}", now=now,
                                         next_check_at=now, arrival=None, max_refunds=None)

    a = threading.Thread(target=reserve, name="A")
    b = threading.Thread(target=reserve, name="B")
    try:
        a.start()
        assert a_locked.wait(10)       # B's key check runs before A has committed
        b.start()
        a.join(20)
        b.join(20)
        assert set(results) == {"A", "B"}, "a reservation raised (see the thread's error)"
        (ra, created_a), (rb, created_b) = results["A"], results["B"]
        assert created_a and not created_b and rb.id == ra.id == "rf-A"
        assert seen["B"] == (10_000, 1, "rf-A")    # the racer was found by the count
        assert [r.id for r in gw.store.refunds_of_payment(Route.WECHATPAY, "ORD1")] == [
            "rf-A"]
    finally:
        gw.close()


@pytest.mark.postgres
def test_same_key_on_another_payment_racing_in_the_pipeline_is_a_conflict(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL, pipelined reservation: B (same key, another payment) inserts while
    A's insert of that key is uncommitted, so B's insert waits on the unique index and
    fails once A commits. That failure must reach ``reserve`` as the IntegrityError it
    tells apart (not as PipelineAborted), and B gets IdempotencyConflict."""
    from gateway.store.repository import RefundStore

    _prepare(pg_url)
    gw = build_gateway(load_settings(database_url=pg_url), configure_logs=False,
                       adapters={Route.WECHATPAY: FakeChannel()}, sleep=lambda _: None)
    a_inserted, b_counted = threading.Event(), threading.Event()
    real_events, real_state = RefundStore._append_events, RefundStore._reservation_state

    def events(self: RefundStore, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "A":
            a_inserted.set()
            assert b_counted.wait(10)
            time.sleep(0.3)            # B's insert is now waiting on A's key
        real_events(self, *args, **kwargs)

    def state(self: RefundStore, *args: Any) -> Any:
        out = real_state(self, *args)
        if threading.current_thread().name == "B":
            b_counted.set()
        return out

    monkeypatch.setattr(RefundStore, "_append_events", events)
    monkeypatch.setattr(RefundStore, "_reservation_state", state)
    outcomes: dict[str, object] = {}

    def reserve(order: str) -> None:
        name = threading.current_thread().name
        now = gw._clock()
        try:
            outcomes[name] = gw.store.reserve(
                request("one-key", order=order), refund_id=f"rf-{name}",
                channel_refund_no=f"rf-{name}", now=now, next_check_at=now, arrival=None,
                max_refunds=None)
        except Exception as exc:   # kept: the assertion names what was raised
            outcomes[name] = exc

    a = threading.Thread(target=reserve, args=("ORD-A",), name="A")
    b = threading.Thread(target=reserve, args=("ORD-B",), name="B")
    try:
        a.start()
        assert a_inserted.wait(10)
        b.start()
        a.join(20)
        b.join(20)
        assert isinstance(outcomes["A"], tuple) and outcomes["A"][1] is True
        assert isinstance(outcomes["B"], IdempotencyConflict), repr(outcomes["B"])
        assert gw.store.refunds_of_payment(Route.WECHATPAY, "ORD-B") == []
    finally:
        gw.close()
