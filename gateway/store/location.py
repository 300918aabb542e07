"""Which database a command uses, said plainly, and no silent empty one.

``database_label`` is how a command names its database (password masked, a SQLite path
made absolute: the default ``sqlite:///refund-gateway.db`` is relative to the working
directory, so the bare URL does not say which file it was). ``require_existing_sqlite``
is for read-only commands: opening a SQLite file that does not exist creates an empty
database, and a listing of it says "nothing there". Neither opens a connection.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from gateway.errors import ConfigurationError


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite URL's file (None: not SQLite, or no file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().absolute()


def database_label(url: str) -> str:
    """The URL with its password masked; a SQLite file as an absolute path."""
    parsed = make_url(url)
    path = sqlite_file(url)
    if path is not None:
        parsed = parsed.set(database=str(path))
    return parsed.render_as_string(hide_password=True)


def require_existing_sqlite(url: str) -> None:
    """Refuse a SQLite file that does not exist: ``ConfigurationError`` naming its
    absolute path (the CLI exits 2). Other backends pass: their server says whether the
    database exists, and connecting creates nothing."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise ConfigurationError(
            f"no database at {path}: nothing to read there, and nothing was created "
            f"(REFUND_GATEWAY_DATABASE_URL is {make_url(url).render_as_string(hide_password=True)}"
            f"; a relative sqlite:/// path is taken from the working directory, {Path.cwd()})",
            setting="REFUND_GATEWAY_DATABASE_URL")
