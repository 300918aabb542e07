"""``refund()`` from 32 threads of one refund service at once (issue 21), on every store.

The channel takes 50 ms a call, so a gateway that held a lock (or a database
transaction) across the call would send one refund at a time: the test counts how many
channel calls were in flight together, and checks what must hold under any interleaving:
one channel call per idempotency key, racing partial refunds of one payment never above
what was paid, every refund stored with the status the channel gave it.
"""

from __future__ import annotations

import threading
import time

from gateway import OverRefund, RefundStatus, Route
from gateway.bootstrap import build_gateway
from gateway.models import ChannelResult, Refund
from gateway.settings import load_settings
from tests.fakes import FakeChannel
from tests.helpers import request

THREADS = 32


class SlowChannel(FakeChannel):
    """Each submit takes 50 ms; counts the submits in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self._count = threading.Lock()
        self.inside = self.peak = 0

    def submit(self, refund: Refund) -> ChannelResult:
        with self._count:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        try:
            time.sleep(0.05)
            return super().submit(refund)
        finally:
            with self._count:
                self.inside -= 1


def test_32_threads_refund_at_once_without_a_second_call_or_an_over_refund(
        database_url: str) -> None:
    # Migrate once up front, like `refund-gateway db upgrade` in a deployment.
    build_gateway(load_settings(database_url=database_url), adapters={},
                  configure_logs=False).close()
    channel = SlowChannel()
    gw = build_gateway(load_settings(database_url=database_url), configure_logs=False,
                       adapters={Route.WECHATPAY: channel}, sleep=lambda _: None)
    barrier = threading.Barrier(THREADS)
    own: dict[int, list[str]] = {}
    shared_key: list[str] = []
    partial: list[str] = []
    failures: list[BaseException] = []

    def go(i: int) -> None:
        try:
            barrier.wait()
            # its own two orders, the key every thread sends, and a partial refund of
            # the one order every thread refunds (32 x 700 against 10,000 paid)
            own[i] = [gw.refund(request(f"own-{i}-{j}", 2_500, order=f"O{i}-{j}")).id
                      for j in range(2)]
            shared_key.append(gw.refund(request("every-thread", 1_000, order="SAME")).id)
            try:
                partial.append(gw.refund(request(f"part-{i}", 700, order="SHARED")).id)
            except OverRefund:
                partial.append("over")
        except BaseException as exc:  # surfaced below with the thread's error
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    gw_ids = [rid for ids in own.values() for rid in ids]
    try:
        assert failures == []
        assert len(set(gw_ids)) == 2 * THREADS
        assert len(set(shared_key)) == 1              # one refund for the shared key ...
        accepted = [p for p in partial if p != "over"]
        assert len(accepted) == 14                    # 14 x 700 = 9,800 <= 10,000
        submitted = [no for op, no in channel.ledger.calls if op == "submit"]
        assert sorted(submitted) == sorted([*gw_ids, shared_key[0], *accepted])  # ... once
        assert sum(channel.ledger.amounts[no] for no in accepted) == 9_800
        assert {gw.get(rid).status for rid in [*gw_ids, *accepted]} == {
            RefundStatus.PROCESSING}                  # what the channel answered, stored
        # The calls overlapped: no lock or transaction is held across the channel call.
        assert channel.peak >= 8, channel.peak
    finally:
        gw.close()
