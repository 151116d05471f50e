"""Engine, migrations and bulk writes.

The database URL comes from ``GLITCHDEX_DATABASE_URL``; without it the catalog
is the SQLite file ``glitchdex.sqlite`` in the working directory. PostgreSQL
URLs work with the same migrations.

Waits are bounded: a SQLite writer waits at most ``GLITCHDEX_SQLITE_BUSY_TIMEOUT``
seconds (default 60) for another writer's lock, then fails with one line; a
PostgreSQL server that does not answer fails the connection after
``POSTGRESQL_CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

import migrations

URL_ENV = "GLITCHDEX_DATABASE_URL"
DEFAULT_URL = "sqlite:///glitchdex.sqlite"
BUSY_TIMEOUT_ENV = "GLITCHDEX_SQLITE_BUSY_TIMEOUT"
DEFAULT_SQLITE_BUSY_TIMEOUT_S = 60.0
# Reads of a SQLite catalog map the file instead of copying pages through a 2 MB page cache:
# queries that look rows up by index (a page per row) run 1.5-2x faster on a 1M-token catalog.
SQLITE_MMAP_BYTES = 1 << 30
POSTGRESQL_CONNECT_TIMEOUT_S = 10
BULK_CHUNK_ROWS = 20_000


class CatalogError(Exception):
    """An error whose message is meant for the user as one line."""


def first_line(error: BaseException) -> str:
    """A driver's message in one line (psycopg adds hint lines such as 'Is the server running ...?')."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def database_failure(exc: OperationalError) -> str:
    """One line for a database that refused to work (locked, unreachable, disk full)."""
    message = first_line(exc.orig)
    if "database is locked" in message:
        return (
            f"database is locked: another writer held it longer than {sqlite_busy_timeout_s():g} s "
            f"(wait longer with {BUSY_TIMEOUT_ENV}=SECONDS)"
        )
    return f"database error: {message}"


def database_url(url: str | None = None) -> str:
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def sqlite_busy_timeout_s() -> float:
    """How long a SQLite writer waits for another writer's lock (``GLITCHDEX_SQLITE_BUSY_TIMEOUT`` seconds)."""
    text = os.environ.get(BUSY_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_SQLITE_BUSY_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise CatalogError(f"{BUSY_TIMEOUT_ENV} must be a number of seconds >= 0, not {text!r}")
    return seconds


def _tune_sqlite(busy_timeout_s: float) -> Callable[[Any, Any], None]:
    def tune(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the dashboard read while an ingest writes; the busy timeout makes
        # a second writer wait (boundedly) instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        cursor.close()

    return tune


def make_engine(url: str | None = None) -> Engine:
    url = database_url(url)
    if url.startswith("sqlite"):
        busy_timeout_s = sqlite_busy_timeout_s()
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
        event.listen(engine, "connect", _tune_sqlite(busy_timeout_s))
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_S})
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# --- migrations ---------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise CatalogError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: {first_line(exc.orig)}") from None


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one at another revision."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        upgrade(engine.url.render_as_string(hide_password=False))
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise CatalogError(
            f"database is at revision {current}, newer than this glitchdex (head {head}): upgrade glitchdex"
        )
    raise CatalogError(f"database is at revision {current}, older than head {head}: run `glitchdex db upgrade`")


# --- bulk writes --------------------------------------------------------------


def _chunks(rows: Sequence[Mapping[str, Any]], size: int) -> Iterator[Sequence[Mapping[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def bulk_insert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Core executemany insert, chunked so PostgreSQL's insertmanyvalues batches stay bounded."""
    for chunk in _chunks(rows, BULK_CHUNK_ROWS):
        conn.execute(insert(table), list(chunk))
    return len(rows)


def _insert_or_skip(conn: Connection, table: Table, unique: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (``unique``) DO NOTHING in the connection's dialect."""
    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    if conn.dialect.name not in dialects:
        raise CatalogError(f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL")
    return dialects[conn.dialect.name](table).on_conflict_do_nothing(index_elements=list(unique))


def insert_unless_exists(conn: Connection, table: Table, values: Mapping[str, Any], unique: Sequence[str]) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id: the new row's id, or None when a row with
    the same ``unique`` key exists, perhaps just committed by a concurrent writer."""
    return conn.scalar(_insert_or_skip(conn, table, unique).values(**values).returning(table.c.id))


def insert_missing(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], unique: Sequence[str]) -> None:
    """Like :func:`bulk_insert`, skipping rows whose ``unique`` key exists (a concurrent writer's)."""
    statement = _insert_or_skip(conn, table, unique)
    for chunk in _chunks(rows, BULK_CHUNK_ROWS):
        conn.execute(statement, list(chunk))


def columns_to_rows(columns: Mapping[str, Iterable[Any]], **constants: Any) -> list[dict[str, Any]]:
    """Turn column-wise lists (the shape tensor code produces) into insert rows."""
    names = list(columns) + list(constants)
    constant_values = tuple(constants.values())
    return [dict(zip(names, values + constant_values)) for values in zip(*columns.values())]

