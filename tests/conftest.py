"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL.

PostgreSQL is the real server at ``REFUND_GATEWAY_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets its own schema,
dropped afterwards. Tests marked ``postgres`` are skipped only when
``REFUND_GATEWAY_TEST_PG=skip`` says so; with no server they fail, because CI must
exercise both stores.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

PG_URL = os.environ.get("REFUND_GATEWAY_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("REFUND_GATEWAY_TEST_MYSQL_URL",
                           "mysql+pymysql://root@127.0.0.1:3306/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long reliability/benchmark profiles")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip_long = pytest.mark.skip(reason="long profile: run with --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip_long)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    if os.environ.get("REFUND_GATEWAY_TEST_PG") == "skip":
        pytest.skip("REFUND_GATEWAY_TEST_PG=skip")
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh database per test on the MySQL/MariaDB server at MYSQL_URL."""
    if os.environ.get("REFUND_GATEWAY_TEST_MYSQL") == "skip":
        pytest.skip("REFUND_GATEWAY_TEST_MYSQL=skip")
    name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(MYSQL_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield str(make_url(MYSQL_URL).set(database=name).render_as_string(
            hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mysql)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over the three stores."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    if request.param == "mariadb":
        return str(request.getfixturevalue("mysql_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Warnings and errors only: INFO lines for thousands of refunds slow the suite and
    bury failures. Tests that inspect logs configure their own capture."""
    from gateway.logging import configure_logging

    configure_logging("console", os.environ.get("REFUND_GATEWAY_TEST_LOG_LEVEL", "WARNING"))


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that configures logging (``build_gateway`` with ``log_level="ERROR"``, a
    CLI run) leaves it as it found it: otherwise a later test's ``capture_logs`` sees
    nothing below that level, depending on which tests ran before it (pytest-xdist
    shows it)."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
