"""The transactional outbox (issue 20): every status change is an event, written with the
change, read in order, delivered at least once through a durable cursor per consumer."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from gateway import RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.models import ChannelStatus, OutboxEvent
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request

S = RefundStatus


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def gw(database_url: str, channel: FakeChannel) -> Iterator[RefundGateway]:
    g = build_gateway(load_settings(database_url=database_url), clock=FakeClock(),
                      sleep=lambda _: None, configure_logs=False,
                      adapters={Route.WECHATPAY: channel, Route.BALANCE: FakeBalance(Ledger())})
    yield g
    g.close()


def changes(gw: RefundGateway, refund_id: str) -> list[tuple[S | None, S]]:
    return [(e.status_from, e.status_to) for e in gw.events_since(0, 1000)
            if e.refund_id == refund_id]


def test_every_status_change_is_an_event_in_order(gw: RefundGateway,
                                                  channel: FakeChannel) -> None:
    refund = gw.refund(request())
    channel.ledger.status[refund.channel_refund_no] = ChannelStatus.SUCCEEDED
    gw.sync(refund.id)
    assert changes(gw, refund.id) == [(None, S.PENDING), (S.PENDING, S.PROCESSING),
                                      (S.PROCESSING, S.SUCCEEDED)]
    events = gw.events_since(0, 1000)
    assert [e.cursor for e in events] == sorted(e.cursor for e in events)
    assert len({e.event_id for e in events}) == len(events)
    last = events[-1]
    assert last.idempotency_key == "k1" and last.merchant_order_no == "ORD1"
    assert last.amount.minor == 2_500 and last.route is Route.WECHATPAY


def test_a_change_that_is_not_a_status_change_writes_none(gw: RefundGateway) -> None:
    refund = gw.refund(request())
    before = len(gw.events_since(0, 1000))
    gw.sync(refund.id)                     # still PROCESSING: a new check time only
    assert len(gw.events_since(0, 1000)) == before


def test_a_refused_request_writes_no_event(gw: RefundGateway) -> None:
    with pytest.raises(Exception, match="reason"):
        gw.refund(request(reason="x" * 300))
    assert gw.events_since(0, 10) == []


def test_paging_by_cursor(gw: RefundGateway) -> None:
    for i in range(5):
        gw.refund(request(f"k{i}", 100, order=f"O{i}"))
    first = gw.events_since(0, 4)
    rest = gw.events_since(first[-1].cursor, 100)
    everything = gw.events_since(0, 100)
    assert [e.event_id for e in first + rest] == [e.event_id for e in everything]


def run(gw: RefundGateway, seen: list[OutboxEvent], stop: threading.Event,
        handler_fails: int = 0, consumer: str = "svc") -> threading.Thread:
    failures = [handler_fails]

    def handler(batch: Sequence[OutboxEvent]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("the refund service broke on this batch")
        seen.extend(batch)

    t = threading.Thread(target=gw.subscribe, args=(handler,),
                         kwargs={"consumer": consumer, "stop": stop, "batch": 3,
                                 "poll_interval": 0.01}, daemon=True)
    t.start()
    return t


def wait_for(predicate: object, seconds: float = 10) -> None:
    done = threading.Event()
    for _ in range(int(seconds * 100)):
        if predicate():  # type: ignore[operator]
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_subscribe_delivers_everything_and_a_failed_batch_again(gw: RefundGateway) -> None:
    for i in range(4):
        gw.refund(request(f"k{i}", 100, order=f"O{i}"))
    total = len(gw.events_since(0, 1000))
    seen: list[OutboxEvent] = []
    stop = threading.Event()
    t = run(gw, seen, stop, handler_fails=2)
    wait_for(lambda: len(seen) >= total)
    stop.set()
    t.join(5)
    assert [e.event_id for e in seen] == [e.event_id for e in gw.events_since(0, 1000)]
    # the cursor is durable: a new subscriber of the same name starts after it
    again: list[OutboxEvent] = []
    stop2 = threading.Event()
    t2 = run(gw, again, stop2)
    gw.refund(request("late", 100, order="OL"))
    wait_for(lambda: len(again) >= 2)
    stop2.set()
    t2.join(5)
    assert [(e.idempotency_key, e.status_to) for e in again] == [
        ("late", S.PENDING), ("late", S.PROCESSING)]


def test_two_subscribers_of_one_name_see_each_event_once(gw: RefundGateway) -> None:
    for i in range(12):
        gw.refund(request(f"k{i}", 100, order=f"O{i}"))
    total = len(gw.events_since(0, 1000))
    seen: list[OutboxEvent] = []
    stop = threading.Event()
    threads = [run(gw, seen, stop), run(gw, seen, stop)]
    wait_for(lambda: len({e.event_id for e in seen}) >= total)
    stop.set()
    for t in threads:
        t.join(5)
    assert len(seen) == total              # one owner per batch: none delivered twice


def test_prune_keeps_what_a_consumer_has_not_read(gw: RefundGateway) -> None:
    gw.refund(request())
    seen: list[OutboxEvent] = []
    stop = threading.Event()
    t = run(gw, seen, stop)
    wait_for(lambda: len(seen) >= 2)
    stop.set()
    t.join(5)
    gw.refund(request("k2", 100, order="O2"))      # not read by "svc" yet
    pruned = gw.store.prune_outbox(before=gw._clock() + timedelta(days=1))
    assert pruned == len(seen)
    assert [e.idempotency_key for e in gw.events_since(0, 100)] == ["k2", "k2"]


def test_the_cli_lists_and_prunes_events(tmp_path: object,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from gateway.cli import main

    db = Path(str(tmp_path)) / "g.db"
    monkeypatch.setenv("REFUND_GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    g = build_gateway(load_settings(), clock=FakeClock(), sleep=lambda _: None,
                      configure_logs=False, adapters={Route.WECHATPAY: FakeChannel()})
    g.refund(request())                    # two events, made "2026-11-20" (FakeClock)
    g.close()
    listed = CliRunner().invoke(main, ["--json", "events", "list"])
    assert listed.exit_code == 0, listed.output
    assert [e["status_to"] for e in json.loads(listed.output)["events"]] == [
        "pending", "processing"]
    pruned = CliRunner().invoke(main, ["--json", "events", "prune", "--older-than-days", "1"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.output)["pruned"] == 2     # no consumer: nothing unread
