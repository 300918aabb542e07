"""A PostgreSQL cluster the test owns, on its own port and data directory, so a test can
restart, crash and stop it without touching the shared server (issue 16).

Built with the machine's own PostgreSQL binaries (``initdb``/``pg_ctl`` run as the
``postgres`` user, as they refuse root). ``available()`` says why not, when not.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.reliability.harness import free_port

_BIN_ROOT = Path("/usr/lib/postgresql")


def _bindir() -> Path | None:
    versions = sorted(_BIN_ROOT.glob("*/bin/pg_ctl"), key=lambda p: p.parts[-3])
    return versions[-1].parent if versions else None


def unavailable_reason() -> str | None:
    if _bindir() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user to run initdb as"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        return "needs root or postgres to own a cluster"
    return None


class OwnCluster:
    """initdb + pg_ctl on ``root``; ``url`` for the gateway; restart/crash/stop."""

    def __init__(self, root: Path, settings: dict[str, str] | None = None) -> None:
        bindir = _bindir()
        assert bindir is not None
        self.bin = bindir
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                         "unix_socket_directories": str(self.sockets),
                         "fsync": "on", **(settings or {})}

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> OwnCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            for key, value in self.settings.items():
                conf.write(f"{key} = '{value}'\n")
        return self

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                          "-l", str(self.root / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (clean), ``immediate`` (a crash: no checkpoint, WAL replayed on start)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
                          "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


@contextmanager
def own_cluster(settings: dict[str, str] | None = None) -> Iterator[OwnCluster]:
    """A started cluster in a fresh directory the postgres user can reach."""
    root = Path(tempfile.mkdtemp(prefix="rg-own-pg-"))
    root.chmod(0o755)
    cluster = OwnCluster(root, settings).init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
