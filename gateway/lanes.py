"""One resolver cycle's batch, worked through concurrently: a pool per route and account.

Owns the threads behind ``RefundGateway.resolve_due``. The claimed refunds are split into
lanes (one per route and merchant account, ``gateway.ratelimit.Lane``); each lane gets up
to its ``max_in_flight`` workers, all lanes together check at most ``concurrency``
refunds at once, and every channel call waits for its lane's rate. What the sequential
resolver promised still holds: the lease is renewed while the batch runs (by a worker
before it takes a refund, and by the caller's thread while every worker waits on a slow
channel), ``stop()`` is asked before each refund is taken and then whatever was not
taken is handed back, one refund's error never stops the others, and the counts add up.
Must not decide anything about a refund (``check`` does), nor hold a lock across a
channel call.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Self

import structlog

from gateway.models import Refund
from gateway.ports import ChannelAdapter
from gateway.ratelimit import Lane, Pacer
from gateway.store import RefundStore

log = structlog.get_logger("gateway.resolver")

# How often (real seconds) the caller's thread looks at the lease while workers are busy;
# a worker also renews before each refund it takes, so a fast batch never waits for this.
WATCH_SECONDS = 0.25
# A worker waiting longer than this for its lane's next slot asks ``stop()`` meanwhile.
WAIT_SLICE_SECONDS = 0.25
# A check the channel refused as "too many requests" (nothing was answered, nothing was
# executed: WeChat's 429 is "not accepted", addendum §9) is recorded like any unknown
# outcome, then tried again in the same batch once the lane has slowed down, up to this
# many times, rather than waiting for the lifecycle's next check (minutes away), each
# try later than the last (0.25, 0.5, 1, 2, 4 s: at a batch's end nothing else spaces them
# out while several resolvers are still finding their shares of the limit). A refused
# resend is sent again as it was (same number; the query before it found nothing), not
# queried a second time.
RETRIES_WHEN_LIMITED = 5
RETRY_DELAY_SECONDS = 0.25


class PerThreadCount:
    """A count each thread keeps for itself (``count += 1`` adds to the calling thread's):
    ``RefundGateway._check`` counts its resends this way, so each resolver worker reads
    exactly its own, whatever other threads (``sync()``) do meanwhile."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __iadd__(self, n: int) -> Self:
        self._local.n = self.mine() + n
        return self

    def mine(self) -> int:
        """What the calling thread has counted."""
        n: int = getattr(self._local, "n", 0)
        return n


@dataclass(frozen=True, slots=True)
class Done:
    """What a batch did (``ResolveReport`` is made of it)."""

    changed: int
    resent: int
    errors: int
    final: int
    stopped: bool


@dataclass(eq=False)
class _Queue:
    """One lane's refunds of this batch, in claim order; how many of its workers hold a
    reserved slot (a worker reserves only while refunds remain unreserved, so the end of
    a batch wastes no slots of the lane's rate) and how many checks are in flight (one
    refused as too many comes back to the queue)."""

    lane: Lane
    adapter: ChannelAdapter
    refunds: deque[Refund] = field(default_factory=deque)
    waiting: int = 0
    active: int = 0
    later: list[tuple[float, Refund]] = field(default_factory=list)   # (not before, refund)

    def ripen(self, now: float) -> float | None:
        """Queue the retries whose time has come; seconds until the next one (None: none
        left to wait for)."""
        ready = [r for at, r in self.later if at <= now]
        self.later = [(at, r) for at, r in self.later if at > now]
        self.refunds.extend(ready)
        return min(at for at, _ in self.later) - now if self.later else None


class Batch:
    """The claimed refunds of one cycle, checked concurrently (``run``)."""

    def __init__(self, due: Sequence[Refund], *,
                 lane_of: Callable[[Refund], tuple[Lane, ChannelAdapter]],
                 check: Callable[[Refund], Refund], resend: Callable[[Refund], Refund],
                 resends: PerThreadCount,
                 store: RefundStore, clock: Callable[[], datetime], lease: timedelta,
                 held_until: datetime, stop: Callable[[], bool] | None,
                 concurrency: int) -> None:
        self._due = list(due)
        self._lane_of, self._check, self._resend = lane_of, check, resend
        self._resends = resends
        self._store, self._clock, self._lease = store, clock, lease
        self._held_until = held_until
        self._stop = stop
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)   # a refund queued or a check done
        self._slots = threading.BoundedSemaphore(concurrency)
        self._wake = threading.Event()       # set once stopping: waits end at once
        self._finished = threading.Event()
        self._unfinished = {r.id for r in self._due}
        self._taken: set[str] = set()
        self._claimed_as = {r.id: r.status for r in self._due}
        self._retries: dict[str, int] = {}
        self._send_again: set[str] = set()    # refused resends: sent again, not queried
        self._resent_ids: set[str] = set()
        self._stopping = self._stopped = False
        self._failure: BaseException | None = None
        self._changed = self._errors = self._final = 0
        self._running = 0

    # -- the caller's thread ------------------------------------------------------------
    def run(self) -> Done:
        """Check every refund (or until ``stop()``); re-raises a failure to renew the lease
        (the store is down: the rest stays leased, as a sequential resolver left it)."""
        queues = self._queues()
        workers = []
        for queue in queues.values():
            for n in range(min(queue.lane.max_in_flight, len(queue.refunds),
                               self._concurrency)):
                context = contextvars.copy_context()   # logging/tracing context goes along
                workers.append(threading.Thread(
                    target=context.run, args=(self._work, queue), daemon=True,
                    name=f"resolver-{queue.lane.route.value}-{queue.lane.account}-{n}"))
        self._running = len(workers)
        if not workers:
            self._finished.set()
        for worker in workers:
            worker.start()
        while not self._finished.wait(WATCH_SECONDS):
            with self._lock:
                self._guard(self._renew_if_due)
        for worker in workers:
            worker.join()
        if self._failure is not None:
            raise self._failure
        if self._stopped:
            rest = [r.id for r in self._due if r.id not in self._taken]
            self._store.release(rest, held_until=self._held_until, now=self._clock())
            log.info("resolver.stopping", handed_back=len(rest))
        return Done(changed=self._changed, resent=len(self._resent_ids), errors=self._errors,
                    final=self._final, stopped=self._stopped)

    def _queues(self) -> dict[int, _Queue]:
        """The lanes of this batch, by lane; a refund whose route or account is not
        configured is an error of this cycle (logged; it stays leased, checked later)."""
        queues: dict[int, _Queue] = {}
        for refund in self._due:
            try:
                lane, adapter = self._lane_of(refund)
            except Exception:  # one bad refund must not stop the rest; logged, retried
                self._errors += 1
                self._taken.add(refund.id)
                self._unfinished.discard(refund.id)
                log.exception("resolver.unexpected_error", refund_id=refund.id)
                continue
            queue = queues.setdefault(id(lane), _Queue(lane, adapter))
            queue.refunds.append(refund)
        return queues

    # -- workers ------------------------------------------------------------------------
    def _work(self, queue: _Queue) -> None:
        try:
            while self._next(queue):
                pass
        except BaseException as exc:  # a renewal that failed: the batch stops, run() raises
            with self._lock:
                self._failure = self._failure or exc
                self._begin_stop()
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._finished.set()

    def _next(self, queue: _Queue) -> bool:
        """Reserve a slot of the lane's rate, take one refund, check it; False when the
        lane has nothing left for this worker (nothing queued, nothing in flight that
        could come back) or the batch is stopping."""
        with self._turn:
            while not self._stopping:
                wait_more = queue.ripen(time.monotonic())
                if len(queue.refunds) > queue.waiting:
                    break
                if queue.active == 0 and wait_more is None:
                    return False
                self._turn.wait(min(WATCH_SECONDS, wait_more or WATCH_SECONDS))
            if self._stopping:
                return False
            queue.waiting += 1
        awake = self._wait(queue.lane.rate.reserve())
        with self._slots:
            with self._turn:
                queue.waiting -= 1
                refund = self._take(queue) if awake else None
                if refund is None:
                    return not self._stopping
                queue.active += 1
            try:
                self._one(refund, queue)
            finally:
                with self._turn:
                    queue.active -= 1
                    self._turn.notify_all()
        return True

    def _take(self, queue: _Queue) -> Refund | None:
        """Under the lock: the lane's next refund, unless a stop was asked for."""
        if self._stopping or not queue.refunds:
            return None
        if self._stop is not None and self._stop():
            self._begin_stop(asked=True)
            return None
        self._renew_if_due()
        refund = queue.refunds.popleft()
        self._taken.add(refund.id)
        return refund

    def _one(self, refund: Refund, queue: _Queue) -> None:
        """Check one refund; one the channel refused as too many goes back to the end of
        its lane's queue (it is counted when its last check ends)."""
        before = self._resends.mine()
        again = False
        with self._lock:
            check = self._resend if refund.id in self._send_again else self._check
            self._send_again.discard(refund.id)
        try:
            with Pacer.pacing(queue.lane, queue.adapter, self._pause,
                              reserved=True) as mark:
                after = check(refund)
        except Exception:  # one bad refund must not stop the rest; logged, retried
            log.exception("resolver.unexpected_error", refund_id=refund.id)
            with self._lock:
                self._errors += 1
        else:
            with self._lock:
                tries = self._retries.get(refund.id, 0)
                again = (mark.limited > 0 and not after.status.is_final
                         and tries < RETRIES_WHEN_LIMITED)
                if again:
                    self._retries[refund.id] = tries + 1
                    queue.later.append((time.monotonic() + RETRY_DELAY_SECONDS * 2 ** tries,
                                        after))
                    if (mark.last_limited == "submit"
                            and queue.adapter.capabilities.idempotent_submit):
                        self._send_again.add(refund.id)
                else:
                    was = self._claimed_as[refund.id]
                    self._changed += after.status is not was
                    self._final += after.status.is_final
        finally:
            with self._lock:
                if self._resends.mine() > before:
                    self._resent_ids.add(refund.id)
                if not again:
                    self._unfinished.discard(refund.id)

    def _wait(self, seconds: float) -> bool:
        """Wait for a reserved slot; False when the batch stops meanwhile. A long wait
        (a lane cut to a low rate) asks ``stop()`` between slices."""
        while seconds > 0:
            piece = min(seconds, WAIT_SLICE_SECONDS)
            if self._wake.wait(piece):
                return False
            seconds -= piece
            if seconds > 0 and self._stop is not None:
                with self._lock:
                    if not self._stopping and self._stop():
                        self._begin_stop(asked=True)
        return not self._stopping

    def _pause(self, seconds: float) -> None:
        """A second call within one check (a resend) waits for its slot; a stop cuts the
        wait short (the refund in hand is finished either way)."""
        if seconds > 0:
            self._wake.wait(seconds)

    # -- under the lock -----------------------------------------------------------------
    def _begin_stop(self, *, asked: bool = False) -> None:
        self._stopping = True
        self._stopped = self._stopped or asked
        self._wake.set()

    def _renew_if_due(self) -> None:
        """Extend the lease on what is not finished once a third of it is left."""
        moment = self._clock()
        if moment < self._held_until - self._lease / 3 or not self._unfinished:
            return
        renewed = moment + self._lease
        self._store.renew_lease(sorted(self._unfinished), held_until=self._held_until,
                                until=renewed)
        self._held_until = renewed

    def _guard(self, action: Callable[[], None]) -> None:
        """The caller's thread: a failure stops the batch and is raised by ``run``."""
        try:
            action()
        except Exception as exc:
            self._failure = self._failure or exc
            self._begin_stop()
