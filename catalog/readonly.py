"""Run a user's SQL against the catalog on a read-only connection with a time limit.

Safety comes from the database, not from inspecting the SQL text:

- SQLite: the file is opened with ``mode=ro`` and ``PRAGMA query_only=ON``; an
  authorizer denies ATTACH/DETACH, every PRAGMA that changes a setting and the
  functions that reach outside the database (``fts3_tokenizer`` hands out a
  pointer), and extension loading stays disabled. A progress handler interrupts
  a statement that runs past the time limit; since it runs between virtual-machine
  steps, one giant value (``randomblob(10^9)``) is cut off by a length limit instead.
- PostgreSQL: the session is ``READ ONLY`` with a ``statement_timeout``, and
  never a superuser's: a superuser reads and writes server files (``COPY ... TO
  'file'``, ``pg_read_file``) even in a read-only transaction, and can take its
  rights back within one statement (``set_config('role', ...)``). Point the page
  at a role with only read rights through ``GLITCHDEX_SQL_DATABASE_URL``::

      CREATE ROLE glitchdex_reader LOGIN PASSWORD '...' IN ROLE pg_read_all_data;

Results are capped at ``max_rows`` rows (``truncated`` says when more existed).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from catalog.database import SQLITE_MMAP_BYTES, CatalogError, database_url

SQL_URL_ENV = "GLITCHDEX_SQL_DATABASE_URL"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ROWS = 10_000
# SQLite virtual-machine instructions between two checks of the clock.
PROGRESS_EVERY_N_OPS = 10_000
# PRAGMAs that only describe the schema; every other one (query_only=OFF, writable_schema, ...) is denied.
READ_ONLY_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list", "table_list"})
DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension", "readfile", "writefile", "edit"})
# Largest string or blob a query may build: far above any catalog value, small enough to make in a blink.
MAX_VALUE_BYTES = 50_000_000


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float


def run_readonly_sql(
    sql: str, url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS
) -> SqlResult:
    """Run one statement read-only; errors (syntax, writes, time limit) raise CatalogError.

    Without ``url``: ``GLITCHDEX_SQL_DATABASE_URL``, else the catalog's own URL.
    """
    if not sql.strip():
        raise CatalogError("the query is empty")
    url = url or os.environ.get(SQL_URL_ENV) or database_url()
    runner = _run_sqlite if make_url(url).get_backend_name() == "sqlite" else _run_postgresql
    return runner(sql, url, timeout_s, max_rows)


# --- SQLite ---------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    path = make_url(url).database
    if not path or path == ":memory:":
        raise CatalogError("the SQL page needs a database file; an in-memory SQLite catalog cannot be opened read-only")
    return path


def _deny_changes(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in READ_ONLY_PRAGMAS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_sqlite_readonly(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only=ON")
    connection.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    connection.set_authorizer(_deny_changes)
    return connection


def _sqlite_failure(exc: Exception, *, timed_out: bool, timeout_s: float) -> str:
    message = str(exc)
    if timed_out and "interrupt" in message:
        return f"query stopped: it ran longer than the {timeout_s:g} s limit"
    if "not authorized" in message or "authorization denied" in message:
        return "query refused: the SQL page is read-only (no ATTACH, settings, extensions or file functions)"
    if "too big" in message:
        return f"query refused: it builds a value over the {MAX_VALUE_BYTES // 1_000_000} MB limit"
    return f"query failed: {message}"


def _run_sqlite(sql: str, url: str, timeout_s: float, max_rows: int) -> SqlResult:
    try:
        connection = open_sqlite_readonly(_sqlite_path(url))
    except sqlite3.Error as exc:
        raise CatalogError(f"cannot open the catalog read-only: {exc}") from None
    start = time.perf_counter()
    deadline = start + timeout_s
    connection.set_progress_handler(lambda: int(time.perf_counter() > deadline), PROGRESS_EVERY_N_OPS)
    try:
        cursor = connection.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        columns = [d[0] for d in cursor.description or ()]
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise CatalogError(_sqlite_failure(exc, timed_out=time.perf_counter() > deadline, timeout_s=timeout_s)) from None
    finally:
        connection.close()
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.perf_counter() - start)


# --- PostgreSQL -----------------------------------------------------------------------


def _postgresql_conninfo(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_driver_name() != "psycopg":
        raise CatalogError("the SQL page reaches PostgreSQL through psycopg 3: use a postgresql+psycopg:// URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _run_postgresql(sql: str, url: str, timeout_s: float, max_rows: int) -> SqlResult:
    import psycopg

    start = time.perf_counter()
    try:
        with psycopg.connect(_postgresql_conninfo(url), autocommit=True) as conn:
            _refuse_server_file_access(conn)
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout_s * 1000)),))
            conn.autocommit = False
            with conn.cursor() as cursor:
                # A query first: from then on the transaction cannot be switched to read-write.
                cursor.execute("SELECT 1")
                # Prepared, so exactly one statement (no "COMMIT; ..." to leave the read-only transaction).
                cursor.execute(sql, prepare=True)
                rows = cursor.fetchmany(max_rows + 1) if cursor.description else []
                columns = [column.name for column in cursor.description or ()]
            conn.rollback()
    except psycopg.errors.QueryCanceled:
        raise CatalogError(f"query stopped: it ran longer than the {timeout_s:g} s limit") from None
    except psycopg.Error as exc:
        raise CatalogError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.perf_counter() - start)


def _refuse_server_file_access(conn: Any) -> None:
    """A superuser, or a member of the pg_*_server_files / pg_execute_server_program roles, reaches the server's files."""
    user, reaches_files = conn.execute(
        "SELECT session_user, rolsuper OR pg_has_role(session_user, 'pg_read_server_files', 'MEMBER')"
        " OR pg_has_role(session_user, 'pg_write_server_files', 'MEMBER')"
        " OR pg_has_role(session_user, 'pg_execute_server_program', 'MEMBER')"
        " FROM pg_roles WHERE rolname = session_user"
    ).fetchone()
    if reaches_files:
        raise CatalogError(
            f"the SQL page does not run queries as {user!r}, a role that can read and write the server's files: "
            f"set {SQL_URL_ENV} to a read-only role's URL (CREATE ROLE ... LOGIN IN ROLE pg_read_all_data)"
        )
