"""``gateway.groupcommit``: concurrent callers share one flush; each gets its own result,
only after the flush returned; a failure reaches everyone it rolled back (issue 21)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from gateway.groupcommit import GroupCommit
from tests.helpers import wait_for


class Gate:
    """A flush that records its batches and blocks the first one until ``release``:
    callers arriving meanwhile must queue for the next."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on or set()
        self.flushed: set[int] = set()

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail_on & set(items):
            raise ValueError(f"bad item in {list(items)}")
        self.flushed.update(items)
        return [f"r{i}" for i in items]


@contextmanager
def first_held(group: GroupCommit[int, str], gate: Gate, rest: Iterable[int]
               ) -> Iterator[tuple[Future[str], list[Future[str]]]]:
    """Item 0 submitted and its flush held by ``gate``; then ``rest`` submitted, each
    from its own thread, and all of them queued for the next flush. Release the gate
    inside the block."""
    later = list(rest)
    with ThreadPoolExecutor(len(later) + 1) as pool:
        first = pool.submit(group.submit, 0)
        assert gate.entered.wait(5)
        futures = [pool.submit(group.submit, i) for i in later]
        wait_for(lambda: group.waiting() == len(later), what="callers queued")
        yield first, futures


def test_a_lone_caller_is_flushed_at_once_in_a_batch_of_one() -> None:
    gate = Gate()
    gate.release.set()
    group = GroupCommit(gate)
    assert group.submit(7) == "r7"
    assert gate.batches == [[7]] and group.batches == 1


def test_callers_arriving_during_a_flush_share_the_next_one() -> None:
    gate = Gate()
    group = GroupCommit(gate)
    with first_held(group, gate, range(1, 12)) as (first, rest):
        assert not any(f.done() for f in rest)      # nobody answered before its flush
        gate.release.set()
        assert first.result(5) == "r0"
        assert [f.result(5) for f in rest] == [f"r{i}" for i in range(1, 12)]
    assert gate.batches[0] == [0]
    assert sorted(gate.batches[1]) == list(range(1, 12)) and len(gate.batches) == 2
    assert group.largest == 11


def test_max_batch_caps_a_flush() -> None:
    gate = Gate()
    group = GroupCommit(gate, max_batch=4)
    with first_held(group, gate, range(1, 11)) as (first, rest):
        gate.release.set()
        assert [f.result(5) for f in [first, *rest]] == [f"r{i}" for i in range(11)]
    assert [len(b) for b in gate.batches] == [1, 4, 4, 2]


def test_a_failed_flush_fails_every_caller_in_it() -> None:
    gate = Gate(fail_on={3})
    group = GroupCommit(gate)
    with first_held(group, gate, range(1, 6)) as (first, rest):
        gate.release.set()
        assert first.result(5) == "r0"
        for f in rest:
            with pytest.raises(ValueError, match="bad item"):
                f.result(5)
    assert gate.flushed == {0}


def test_split_on_retries_each_item_so_only_the_bad_one_fails() -> None:
    gate = Gate(fail_on={3})
    group = GroupCommit(gate, split_on=lambda exc: isinstance(exc, ValueError))
    with first_held(group, gate, range(1, 6)) as (first, futures):
        rest = dict(zip(range(1, 6), futures, strict=True))
        gate.release.set()
        first.result(5)
        with pytest.raises(ValueError):
            rest[3].result(5)
        assert {i: f.result(5) for i, f in rest.items() if i != 3} == {
            1: "r1", 2: "r2", 4: "r4", 5: "r5"}
    assert gate.flushed == {0, 1, 2, 4, 5}
    assert [3] in gate.batches                       # tried alone too


def test_a_flush_returning_the_wrong_number_of_results_is_an_error() -> None:
    group: GroupCommit[int, str] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit(1)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(list, max_batch=0)
