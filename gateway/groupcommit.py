"""Group commit: many threads' small units of work in one transaction.

Why: a notification's unit of work is a few rows and one durable commit, and the commit
(an fsync on SQLite, a WAL flush on PostgreSQL) costs more than everything else in it.
Web handlers run in a thread pool; when several notifications arrive at once, each
waiting for its own fsync serialises them behind the disk. Here the first thread that
finds no commit running becomes the *leader*: it takes every item queued so far (up to
``max_batch``), runs ``flush`` on them (one transaction, one commit) and hands each
waiting thread its own result. Threads that arrive during that commit queue up for the
next one. Nobody waits for a timer: a lone caller is flushed at once (a batch of one),
so group commit adds no latency when there is no concurrency, and batches grow exactly
when commits are the bottleneck.

Each caller gets its own result only after ``flush`` returned, i.e. after the batch's
commit: nothing is answered before it is durable. If ``flush`` raises, every caller of
the batch gets that exception (the transaction rolled back for all of them), unless
``split_on`` says the failure may belong to one item: then each item of the batch is
flushed again on its own, so one bad item cannot fail the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["GroupCommit"]


@dataclass(eq=False)
class _Slot(Generic[T, R]):
    item: T
    done: bool = False
    result: R | None = None
    error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """``submit(item)`` from any thread returns ``flush([..., item, ...])``'s result
    for ``item``. ``flush`` gets the items in arrival order and returns one result
    per item, in the same order."""

    def __init__(self, flush: Callable[[Sequence[T]], Sequence[R]], *, max_batch: int = 256,
                 split_on: Callable[[BaseException], bool] | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self._max = max_batch
        self._split_on = split_on
        self._cond = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._flushing = False
        self.batches = 0            # commits made (for tests and metrics)
        self.largest = 0            # the largest batch so far

    def waiting(self) -> int:
        """Callers queued for the next flush (not those of the flush running)."""
        with self._cond:
            return len(self._queue)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
            while not slot.done:
                if self._flushing:
                    self._cond.wait()
                    continue
                # Leader: take what is queued (this slot is in it unless more than
                # ``max_batch`` were waiting ahead of it; then it leads again after).
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                self._flushing = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # set with done, error unset

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        """Flush ``batch`` and fill every slot (never raises: errors go to the slots)."""
        try:
            results = self._flush([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for "
                                   f"{len(batch)} items")
        except BaseException as exc:
            if len(batch) > 1 and self._split_on is not None and self._split_on(exc):
                for slot in batch:
                    self._run([slot])
                return
            self._fill(batch, None, exc)
            return
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        self._fill(batch, results, None)

    @staticmethod
    def _fill(batch: list[_Slot[T, R]], results: Sequence[R] | None,
              error: BaseException | None) -> None:
        for index, slot in enumerate(batch):
            slot.result = None if results is None else results[index]
            slot.error = error
            slot.done = True
