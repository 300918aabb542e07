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


def test_threads_wait_for_the_turn_in_order(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    upgrade(engine)
    inside: list[str] = []

    def writer(name: str) -> None:
        with engine.connect() as conn, sqlite_writer_turn(conn):
            inside.append(f"{name}+")
            time.sleep(0.05)
            inside.append(f"{name}-")

    threads = [threading.Thread(target=writer, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(inside) == 6
    # never two inside at once: every enter is followed by the same writer's exit
    assert all(inside[i][0] == inside[i + 1][0] and inside[i].endswith("+")
               for i in range(0, 6, 2))
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
