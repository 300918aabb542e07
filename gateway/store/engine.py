"""Engines and schema upgrades for the two supported backends.

SQLite (the embedded default): WAL, ``synchronous=FULL``, and every transaction opened
with ``BEGIN IMMEDIATE`` so the over-refund check and the reservation hold the write lock
together (DESIGN.md invariant 3). PostgreSQL (several processes): psycopg 3, row locks
(``SELECT ... FOR UPDATE``) taken by the repository. ``upgrade`` runs the Alembic
migrations; a file lock makes concurrent first use of one SQLite file safe.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from gateway.errors import ConfigurationError, StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


# The whole wait for SQLite's write lock (the writer turn plus BEGIN IMMEDIATE), and the
# busy timeout of other statements: past it, StoreUnavailable (GatewaySettings).
DEFAULT_LOCK_TIMEOUT = 30.0


def make_engine(url: str, *, pool_size: int = 5,
                lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError(
                "SQLite needs a file path (several connections share it), e.g. "
                "sqlite:///refund-gateway.db", setting="REFUND_GATEWAY_DATABASE_URL")
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": lock_timeout,
                                                  "check_same_thread": False},
                               pool_size=pool_size)
        _sqlite_pragmas(engine, lock_timeout)
        _sqlite_writer_lock_files(engine, Path(parsed.database).expanduser(), lock_timeout)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(
                hide_password=False))
        _require_driver("psycopg", "postgres")
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _liveness_on_checkout(engine, _psycopg_socket)
        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        # MySQL 8 / MariaDB 10.6+ through PyMySQL. READ COMMITTED, as on PostgreSQL: the
        # store's decisions read under row locks (FOR UPDATE), never a stale snapshot.
        parsed = parsed.set(drivername="mysql+pymysql")
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        _require_driver("pymysql", "mysql")
        engine = create_engine(parsed.render_as_string(hide_password=False),
                               pool_size=pool_size, max_overflow=pool_size,
                               isolation_level="READ COMMITTED",
                               connect_args={"connect_timeout": int(max(lock_timeout, 1))})
        _liveness_on_checkout(engine, _pymysql_socket)
        return engine
    raise ConfigurationError(f"unsupported database backend {parsed.get_backend_name()!r}",
                             setting="REFUND_GATEWAY_DATABASE_URL")


def _liveness_on_checkout(engine: Engine, socket_of: Callable[[Any], Any]) -> None:
    """Hand out no pooled connection the server has closed, without a round trip.

    Why not ``pool_pre_ping``: it sends a query on every checkout, two more round trips
    per refund (13% of a PostgreSQL refund's time in a profile of bench_throughput.py).
    A server that restarts, or whose backend is terminated, closes the socket (with a
    last error message): an idle connection whose socket is readable, or already marked
    closed, is dead, and ``DisconnectionError`` makes the pool discard it and check out
    another (SQLAlchemy's documented pessimistic-disconnect hook). A connection lost in
    silence (a network cut) fails at its first statement, as it would after a ping: the
    store reports ``StoreUnavailable`` and invalidates it.
    """
    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        try:
            sock = socket_of(dbapi_conn)
            readable = sock is None or bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError, AttributeError):
            readable = True
        if readable:
            raise DisconnectionError("the server closed this pooled connection")


def _psycopg_socket(dbapi_conn: Any) -> Any:
    return None if dbapi_conn.closed or dbapi_conn.broken else dbapi_conn.pgconn.socket


def _pymysql_socket(dbapi_conn: Any) -> Any:
    return getattr(dbapi_conn, "_sock", None)


def _require_driver(module: str, extra: str) -> None:
    """A missing optional driver is a configuration error naming the extra to install."""
    try:
        __import__(module)
    except ImportError:
        raise ConfigurationError(
            f"the database driver {module} is not installed: pip install "
            f"'refund-gateway[{extra}]'", setting="REFUND_GATEWAY_DATABASE_URL") from None


def _sqlite_pragmas(engine: Engine, lock_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide how transactions start (pysqlite's own
        # implicit BEGIN is deferred, which would let two writers both read "enough left").
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        # on the driver directly: this runs twice per refund, and exec_driver_sql's
        # execution context costs more than the BEGIN itself
        conn.connection.driver_connection.execute(f"BEGIN {mode}")


_LOCK_FD = "refund_gateway.writer_lock_fd"
_LOCK_TIMEOUT = "refund_gateway.lock_timeout"
_turns = threading.local()
# Polling the lock file: first tries come fast (a commit takes ~0.5 ms), then at most
# every millisecond, so a waiter notices a released turn within about a millisecond.
_POLL_FIRST, _POLL_MAX = 0.0001, 0.001


def _sqlite_writer_lock_files(engine: Engine, database: Path, lock_timeout: float) -> None:
    lock_path = str(database) + ".writer.lock"

    @event.listens_for(engine, "connect")
    def _open(_dbapi_conn: Any, record: Any) -> None:
        record.info[_LOCK_FD] = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        record.info[_LOCK_TIMEOUT] = lock_timeout

    @event.listens_for(engine, "close")
    def _close(_dbapi_conn: Any, record: Any) -> None:
        fd = record.info.pop(_LOCK_FD, None)
        if fd is not None:
            os.close(fd)


@contextmanager
def sqlite_writer_turn(conn: Connection) -> Iterator[None]:
    """Wait for the write lock in the kernel, not in SQLite's busy handler.

    Why: when ``BEGIN IMMEDIATE`` finds another writer, SQLite's busy handler sleeps
    1, 2, 5, 10 ... 100 ms between retries, so two processes writing one file spend most
    of their time asleep (refunds/s *fell* when a second worker process was added).
    Taking an ``flock`` on a side file first queues writers (threads and processes alike:
    each pooled connection has its own descriptor) and wakes the next one the moment
    the lock is released. Writers that do not take it (migrations, reconciliation runs)
    still meet SQLite's own lock and busy timeout, so correctness never depends on it.

    Bounded: the turn and the ``BEGIN IMMEDIATE`` after it share one deadline (the
    engine's ``lock_timeout``). A blocking ``flock`` cannot time out, and a busy timeout
    that only starts once the turn is had made the k-th queued writer wait k times it,
    so the turn is polled until the deadline and SQLite's busy timeout is set to what
    is left; past the deadline, ``StoreUnavailable``.
    """
    info = conn.connection.info
    fd = info.get(_LOCK_FD)
    if fd is None or getattr(_turns, "held", False):
        # Nested in a write transaction of this same thread (a programming error): the
        # kernel lock would wait forever on itself; SQLite's busy timeout reports it.
        yield
        return
    timeout = float(info.get(_LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT))
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(
                    f"SQLite's write lock was not free within {timeout:g} s (another "
                    f"writer holds it); nothing was written", operation="lock") from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
    left_ms = max(1, int((deadline - time.monotonic()) * 1000))
    driver: Any = conn.connection.driver_connection
    driver.execute(f"PRAGMA busy_timeout={left_ms}")
    _turns.held = True
    try:
        yield
    finally:
        _turns.held = False
        fcntl.flock(fd, fcntl.LOCK_UN)
        driver.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite" or not engine.url.database:
        yield
        return
    lock_path = Path(engine.url.database).expanduser().with_suffix(".migrate.lock")
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to call from several processes."""
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def needs_upgrade(engine: Engine) -> bool:
    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return True
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current != heads
