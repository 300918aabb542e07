"""No silent empty database (issue 18): the default ``sqlite:///refund-gateway.db`` is
relative to the working directory, so finance running ``discrepancies list`` from another
folder used to get a new, empty database and "no discrepancies". Read-only commands
(``discrepancies list`` and ``show``, ``status``) refuse a SQLite file that does not
exist: exit 2, naming its absolute path, nothing created. Commands name the database
they used (``--json`` and the human output), password masked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.errors import ConfigurationError
from gateway.store.location import database_label, require_existing_sqlite


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Another folder as the working directory, no database setting: the default."""
    folder = tmp_path / "another-folder"
    folder.mkdir()
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(here)


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI with no REFUND_GATEWAY_* setting but ``env``."""
    unset: dict[str, str | None] = {k: None for k in os.environ
                                    if k.startswith("REFUND_GATEWAY_")}
    return CliRunner().invoke(main, list(args), env={**unset, **(env or {})})


@pytest.mark.parametrize("args", [["discrepancies", "list"], ["discrepancies", "list", "--all"],
                                  ["discrepancies", "show", "1"], ["status", "RF1"]])
def test_read_only_commands_refuse_a_database_that_is_not_there(
        elsewhere: Path, args: list[str]) -> None:
    done = _run(*args)
    assert done.exit_code == 2, done.output
    where = elsewhere / "refund-gateway.db"
    assert f"no database at {where}" in done.stderr
    assert "nothing was created" in done.stderr and str(elsewhere) in done.stderr
    assert "no discrepancies" not in done.output
    assert list(elsewhere.iterdir()) == []            # no file, no lock file, nothing


def test_the_refusal_in_json_and_the_database_named_once_it_exists(
        elsewhere: Path, tmp_path: Path) -> None:
    refused = _run("discrepancies", "list", "--json")
    assert refused.exit_code == 2
    doc = json.loads(refused.stdout)
    assert doc["schema"] == "refund-gateway/cli/discrepancies-list/v1" and doc["exit_code"] == 2
    assert str(elsewhere / "refund-gateway.db") in doc["error"]

    real = tmp_path / "finance" / "gateway.db"
    url = f"sqlite:///{real}"
    assert _run("db", "upgrade", env={"REFUND_GATEWAY_DATABASE_URL": url}).exit_code == 0
    listed = _run("discrepancies", "list", "--json", env={"REFUND_GATEWAY_DATABASE_URL": url})
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {"schema": "refund-gateway/cli/discrepancies-list/v1",
                                         "database": f"sqlite:///{real}", "state": "open",
                                         "items": []}
    text = _run("discrepancies", "list", env={"REFUND_GATEWAY_DATABASE_URL": url})
    assert text.stdout.splitlines() == [f"database: sqlite:///{real}", "no discrepancies"]


def test_labels_mask_the_password_and_make_sqlite_paths_absolute(elsewhere: Path) -> None:
    assert database_label("sqlite:///refund-gateway.db") == (
        f"sqlite:///{elsewhere / 'refund-gateway.db'}")
    assert database_label("postgresql+psycopg://fin:s3cret@db.internal:5432/gw") == (
        "postgresql+psycopg://fin:***@db.internal:5432/gw")
    # A server says for itself whether its database exists: nothing to check here.
    require_existing_sqlite("postgresql+psycopg://fin:s3cret@db.internal:5432/gw")
    with pytest.raises(ConfigurationError, match=f"no database at {elsewhere / 'x.db'}"):
        require_existing_sqlite("sqlite:///x.db")
