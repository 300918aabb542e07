"""SQLite writers queue on a kernel lock before ``BEGIN IMMEDIATE`` (engine.py)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path

from gateway.store import make_engine, upgrade
from gateway.store.engine import sqlite_writer_turn


def test_turn_excludes_other_descriptors_and_is_released(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    upgrade(engine)
    lock_file = tmp_path / "g.db.writer.lock"
    other = os.open(lock_file, os.O_RDWR)   # another process's descriptor, in effect
    try:
        with engine.connect() as conn, sqlite_writer_turn(conn):
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the writer turn was not held")
            except BlockingIOError:
                pass
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free again afterwards
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
        engine.dispose()


def test_queued_writers_each_get_the_turn_alone(tmp_path: Path) -> None:
    """Writers that arrive while the turn is held all get it, one at a time, once it is
    released. (No arrival order is promised: the turn is polled so the wait can be
    bounded, issue 16; a blocking flock queued fairly but could not time out.)"""
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    upgrade(engine)
    inside: list[str] = []

    def writer(name: str) -> None:
        with engine.connect() as conn, sqlite_writer_turn(conn):
            inside.append(f"{name}+")
            time.sleep(0.01)
            inside.append(f"{name}-")

    names = "abcd"
    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in names]
    try:
        with engine.connect() as conn, sqlite_writer_turn(conn):
            for thread in threads:
                thread.start()
            time.sleep(0.1)
            assert inside == [], "a writer got in while the turn was held"
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(inside[0::2]) == [f"{n}+" for n in names]
        for enter, leave in zip(inside[0::2], inside[1::2], strict=True):
            assert leave == enter.replace("+", "-")     # nobody overlapped
    finally:
        engine.dispose()


def test_the_whole_wait_for_the_write_lock_is_bounded(tmp_path: Path) -> None:
    """Issue 16: each queued writer used to start its busy timeout only once it had the
    turn, so the k-th waited about k times it. Now the turn and BEGIN IMMEDIATE share
    one deadline: with the lock held elsewhere, every queued writer gives up after about
    ``lock_timeout``, as StoreUnavailable."""
    from gateway.errors import StoreUnavailable
    from gateway.store import RefundStore
    from tests.helpers import FakeClock, request

    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(make_engine(url))
    holder = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    store = RefundStore(make_engine(url, lock_timeout=0.5))
    waits: list[tuple[str, float]] = []

    def writer(i: int) -> None:
        started = time.monotonic()
        try:
            store.reserve(request(f"k{i}", 100), refund_id=f"RF{i}", channel_refund_no=f"RF{i}",
                          now=FakeClock()(), next_check_at=FakeClock()(), arrival=None,
                          max_refunds=None)
            waits.append(("stored", time.monotonic() - started))
        except StoreUnavailable:
            waits.append(("unavailable", time.monotonic() - started))

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    holder.execute("BEGIN IMMEDIATE")   # SQLite's own lock: another process, in effect
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    holder.execute("ROLLBACK")
    holder.close()
    assert [kind for kind, _ in waits] == ["unavailable"] * 4
    assert max(seconds for _, seconds in waits) < 2.0, waits   # not 4 x 0.5 s and more


def test_nested_turn_in_one_thread_does_not_wait_on_itself(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    upgrade(engine)
    done = threading.Event()

    def nested() -> None:
        with engine.connect() as a, sqlite_writer_turn(a), engine.connect() as b, \
                sqlite_writer_turn(b):
            done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(timeout=5)
    assert done.is_set()
    engine.dispose()
