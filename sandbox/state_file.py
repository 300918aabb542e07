"""The sandbox's state file (``sandbox serve --state PATH``): SQLite, so a restarted
sandbox remembers what a channel remembers across its own restart.

This module owns the file (its tables, its lock, the JSON its rows hold) and nothing
else: ``sandbox.state.State`` decides what goes in (every change, written through in one
small transaction before the answer leaves) and builds its objects back from what comes
out; ``sandbox.server`` keeps the run's keys and certificates in it. Nothing here knows a
channel.

WAL with ``synchronous=NORMAL``: a committed change is in the operating system when the
transaction ends, so a killed sandbox (SIGKILL) loses nothing it acknowledged; a power cut
may lose the last changes (the sandbox is a test double, not a ledger). One sandbox at a
time: the file is locked (``<PATH>-lock``, released by the kernel when the process dies).
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import importlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.keys import KeyPair

# PRAGMA user_version of the file's layout; a file of another version is refused.
VERSION = 1
# Rows: a key (JSON) and the object's fields (JSON). ``meta``: named values (the id
# counter, the config, the keys...). Table names are fixed here, never taken from input.
TABLES = ("payments", "refunds", "notifications", "nonces")
_SCHEMA = [f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data TEXT NOT NULL)"
           for t in (*TABLES, "meta")]


class StateFileError(Exception):
    """The state file cannot be used: another sandbox holds it, or another layout."""


@dataclass(frozen=True)
class Loaded:
    """What a state file held for ``State``: its named value ``state`` (None in a new
    file) and each table's (key, data) rows in the order they were first written."""

    state: Any
    rows: dict[str, list[tuple[Any, Any]]]


class StateFile:
    """One open state file. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._held = _hold(Path(f"{self.path}-lock"))
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None, timeout=10)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateFileError(f"{self.path}: WAL mode refused ({mode})")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, VERSION):
                raise StateFileError(f"{self.path} is a sandbox state file of version "
                                     f"{version}; this sandbox reads version {VERSION}")
            with self._transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={VERSION}")
        except BaseException:
            os.close(self._held)
            raise

    def load(self) -> Loaded:
        state = self.get("state")
        with self._lock:
            rows = {table: [(loads(key), loads(data)) for key, data in self._db.execute(
                f"SELECT key, data FROM {table} ORDER BY rowid")]  # noqa: S608 - fixed names
                for table in TABLES}
        return Loaded(state, rows)

    def get(self, name: str) -> Any:
        """A named value (None when absent)."""
        with self._lock:
            row = self._db.execute("SELECT data FROM meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else loads(row[0])

    def put(self, name: str, value: Any) -> None:
        self.write({}, {name: dumps(value)})

    def write(self, rows: Mapping[tuple[str, str], str | None], meta: Mapping[str, str],
              *, clear: bool = False) -> None:
        """One transaction: ``clear`` empties the tables first; then each row is written
        (``None``: deleted) and each named value. Keys and data are JSON text already."""
        with self._lock, self._transaction():
            if clear:
                for table in TABLES:
                    self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            for (table, key), data in rows.items():
                if table not in TABLES:
                    raise ValueError(f"no table {table!r} in a state file")
                if data is None:
                    self._db.execute(f"DELETE FROM {table} WHERE key = ?",  # noqa: S608
                                     (key,))
                else:
                    # An upsert keeps the row's rowid: rows load in first-written order.
                    self._db.execute(f"INSERT INTO {table} (key, data) VALUES (?, ?) "  # noqa: S608
                                     "ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                                     (key, data))
            self._db.executemany("INSERT OR REPLACE INTO meta (key, data) VALUES (?, ?)",
                                 meta.items())

    def close(self) -> None:
        with self._lock:
            self._db.close()
            os.close(self._held)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raised."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _hold(lock_path: Path) -> int:
    """An exclusive lock on ``lock_path`` for this process's life (flock: the kernel
    drops it when the process dies, SIGKILL included)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateFileError(f"{lock_path.name[:-5]} is in use by another sandbox") from None
    return fd


# -- values ---------------------------------------------------------------------------
# JSON with tags for what JSON lacks: {"$datetime": iso}, {"$date": iso}, {"$bytes": b64},
# {"$tuple": [...]}, {"$rsa": PKCS#8 PEM} (a KeyPair), {"$x509": PEM}, and
# {"$dataclass": "sandbox.module:Class", "fields": {...}} for the sandbox's own frozen
# dataclasses (a channel's certificate authority, its signer).

def dumps(value: Any) -> str:
    return json.dumps(_encode(value), ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Any:
    return json.loads(text, object_hook=_decode)


def keepable(value: Any) -> bool:
    """Whether ``value`` is key or certificate material the file keeps for a channel
    (text, a key, a certificate, a frozen dataclass of the sandbox's, a tuple of them);
    containers and numbers are a channel's run-time state and are not."""
    if isinstance(value, tuple):
        return bool(value) and all(keepable(v) for v in value)
    if not (isinstance(value, str | bytes | KeyPair | x509.Certificate)
            or _sandbox_frozen(value)):
        return False
    try:
        _encode(value)
    except TypeError:             # e.g. a dataclass holding a lock: run-time state
        return False
    return True


def _sandbox_frozen(value: Any) -> bool:
    kind = type(value)
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)
            and kind.__dataclass_params__.frozen
            and (kind.__module__ == "sandbox" or kind.__module__.startswith("sandbox.")))


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("the state file keeps dicts with text keys only")
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, KeyPair):
        return {"$rsa": value.private_pem()}
    if isinstance(value, x509.Certificate):
        return {"$x509": value.public_bytes(serialization.Encoding.PEM).decode("ascii")}
    if _sandbox_frozen(value):
        kind = type(value)
        return {"$dataclass": f"{kind.__module__}:{kind.__qualname__}",
                "fields": {f.name: _encode(getattr(value, f.name))
                           for f in dataclasses.fields(value) if f.init}}
    raise TypeError(f"the state file cannot keep a {type(value).__qualname__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "$datetime":
            return datetime.fromisoformat(value)
        if tag == "$date":
            return date.fromisoformat(value)
        if tag == "$bytes":
            return base64.b64decode(value)
        if tag == "$tuple":
            return tuple(value)
        if tag == "$rsa":
            # The sandbox's own keys, checked when they were made: skipping the check
            # makes a restart ~80 ms faster per key.
            key = serialization.load_pem_private_key(value.encode("ascii"), password=None,
                                                     unsafe_skip_rsa_key_validation=True)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise StateFileError("a kept key is not an RSA private key")
            return KeyPair(key)
        if tag == "$x509":
            return x509.load_pem_x509_certificate(value.encode("ascii"))
    if len(obj) == 2 and "$dataclass" in obj and "fields" in obj:
        module, _, name = str(obj["$dataclass"]).partition(":")
        if module != "sandbox" and not module.startswith("sandbox."):
            raise StateFileError(f"a state file names {module}: only sandbox classes")
        return getattr(importlib.import_module(module), name)(**obj["fields"])
    return obj

