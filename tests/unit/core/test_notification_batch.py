"""``handle_notifications``: a queue consumer's batch, one transaction, one answer each
(issue 21). Nothing is acknowledged before the batch commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from gateway import RefundGateway, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.settings import load_settings
from tests.fakes import FakeBalance, FakeChannel, Ledger
from tests.helpers import FakeClock, request, wait_for

S = RefundStatus
GOOD = {"x-signature": "good"}


@pytest.fixture
def gw(database_url: str) -> Iterator[RefundGateway]:
    g = build_gateway(load_settings(database_url=database_url), clock=FakeClock(),
                      sleep=lambda _: None, configure_logs=False,
                      adapters={Route.WECHATPAY: FakeChannel(),
                                Route.BALANCE: FakeBalance(Ledger())})
    yield g
    g.close()


def note(no: str, status: str, amount: int, nonce: str, good: bool = True
         ) -> tuple[Route, dict[str, str], bytes]:
    return (Route.WECHATPAY, {"x-signature": "good" if good else "bad", "x-nonce": nonce},
            f"{no}:{status}:{amount}".encode())


def test_a_batch_is_one_commit_with_one_answer_each(gw: RefundGateway) -> None:
    a, b = gw.refund(request("k1", 100, order="O1")), gw.refund(request("k2", 100, order="O2"))
    commits: list[int] = []

    def count(_conn: Any) -> None:
        commits.append(1)

    event.listen(gw.store.engine, "commit", count)
    answers = gw.handle_notifications([
        note(a.channel_refund_no, "succeeded", 100, "n1"),
        note(b.channel_refund_no, "succeeded", 100, "n2", good=False),   # forged
        note("RFNOSUCHREFUND00000000000", "succeeded", 100, "n3"),       # unknown
        note(a.channel_refund_no, "succeeded", 100, "n4"),               # same event id
        note(b.channel_refund_no, "succeeded", 1, "n5"),                 # wrong amount
    ])
    event.remove(gw.store.engine, "commit", count)
    assert [x.accepted for x in answers] == [True, False, False, True, False]
    assert answers[0].refund_id == a.id and answers[3].refund_id == a.id
    assert len(commits) == 1
    assert gw.get(a.id).status is S.SUCCEEDED and gw.get(b.id).status is S.PROCESSING


def test_a_batch_the_database_cannot_record_is_retried_by_the_channel(
        gw: RefundGateway) -> None:
    a = gw.refund(request("k1", 100, order="O1"))
    with gw.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE notifications RENAME TO notifications_away"))
    answers = gw.handle_notifications([
        note(a.channel_refund_no, "succeeded", 100, "n1"),
        note(a.channel_refund_no, "succeeded", 100, "n2", good=False)])
    with gw.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE notifications_away RENAME TO notifications"))
    assert (answers[0].http_status, answers[0].accepted) == (503, False)
    assert not answers[1].accepted and answers[1].http_status != 503   # the forgery
    assert gw.get(a.id).status is S.PROCESSING


def test_each_answer_says_why(gw: RefundGateway) -> None:
    a = gw.refund(request("k1", 100, order="O1"))
    answers = gw.handle_notifications([
        note(a.channel_refund_no, "succeeded", 100, "r1"),
        note(a.channel_refund_no, "succeeded", 100, "r2", good=False),
        note("RFNOSUCHREFUND00000000000", "succeeded", 100, "r3"),
        note(a.channel_refund_no, "succeeded", 100, "r4"),
        note(a.channel_refund_no, "succeeded", 100, "r4")])     # the same nonce again
    assert [x.reason for x in answers] == ["applied", "signature_invalid", "unknown_refund",
                                           "duplicate", "replayed"]
    assert gw.handle_notification("nowhere", {}, b"").reason == "unknown_route"
    assert gw.handle_notification(Route.BALANCE, GOOD, b"").reason == "route_sends_none"


def test_concurrent_handlers_share_commits_and_each_gets_its_own_answer(
        gw: RefundGateway) -> None:
    """A web worker's threads: notifications arriving while one commits wait for the
    next commit together (group commit), none answered before its commit."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    made = [gw.refund(request(f"g{i}", 100, order=f"G{i}")) for i in range(9)]
    commits: list[int] = []
    first_in, go = threading.Event(), threading.Event()

    def hold_first(_conn: Any) -> None:
        commits.append(1)
        if len(commits) == 1:
            first_in.set()
            assert go.wait(10)

    event.listen(gw.store.engine, "commit", hold_first)
    try:
        with ThreadPoolExecutor(9) as pool:
            first = pool.submit(gw.handle_notification, *note(
                made[0].channel_refund_no, "succeeded", 100, "c0"))
            assert first_in.wait(5)
            rest = [pool.submit(gw.handle_notification, *note(
                r.channel_refund_no, "succeeded", 100, f"c{i}"))
                for i, r in enumerate(made[1:], start=1)]
            wait_for(lambda: gw._notification_commits.waiting() == 8, what="8 queued")
            assert not any(f.done() for f in rest)
            go.set()
            answers = [first.result(10), *(f.result(10) for f in rest)]
    finally:
        event.remove(gw.store.engine, "commit", hold_first)
    assert [a.refund_id for a in answers] == [r.id for r in made]
    assert all(a.accepted and a.reason == "applied" for a in answers)
    assert len(commits) == 2                                  # 9 notifications, 2 commits
    assert all(gw.get(r.id).status is S.SUCCEEDED for r in made)


def test_concurrent_handlers_the_database_cannot_record_are_all_retried(
        gw: RefundGateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    made = [gw.refund(request(f"d{i}", 100, order=f"D{i}")) for i in range(6)]
    with gw.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE notifications RENAME TO notifications_away"))
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda r: gw.handle_notification(*note(
                r[1].channel_refund_no, "succeeded", 100, f"d{r[0]}")), enumerate(made)))
    finally:
        with gw.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE notifications_away RENAME TO notifications"))
    assert [(a.http_status, a.accepted, a.reason) for a in answers] == [
        (503, False, "store_unavailable")] * 6
    assert all(gw.get(r.id).status is S.PROCESSING for r in made)
