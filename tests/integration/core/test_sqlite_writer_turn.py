"""SQLite writers queue on a kernel lock before ``BEGIN IMMEDIATE`` (engine.py)."""

from __future__ import annotations

import fcntl
import os
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


def _queued_on(lock_file: Path) -> int:
    """How many flock requests wait on ``lock_file`` (the ``->`` lines of /proc/locks)."""
    st = lock_file.stat()
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if " -> " in line and key in line)


def test_threads_wait_for_the_turn_in_order(tmp_path: Path) -> None:
    """Writers that arrive while the turn is held get it in the order they arrived.

    The test holds the turn, starts the writers one at a time and lets the next start
    only once the kernel lists the previous one as waiting on the lock file, so the
    arrival order is known; then it releases the turn."""
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    upgrade(engine)
    lock_file = tmp_path / "g.db.writer.lock"
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
            for queued, thread in enumerate(threads, start=1):
                thread.start()
                deadline = time.monotonic() + 10
                while _queued_on(lock_file) < queued:
                    assert time.monotonic() < deadline, (
                        f"writer {names[queued - 1]} never waited on the turn in the kernel")
                    time.sleep(0.005)
            time.sleep(0.05)
            assert inside == [], "a writer got in while the turn was held"
        for thread in threads:
            thread.join(timeout=10)
        assert inside == [part for n in names for part in (f"{n}+", f"{n}-")]
    finally:
        engine.dispose()


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
