"""Run a user's SQL against the catalog on a read-only connection with a time limit.

Safety comes from the database, not from inspecting the SQL text:

- SQLite: the file is opened with ``mode=ro`` and ``PRAGMA query_only=ON``; an
  authorizer denies ATTACH/DETACH and every PRAGMA that changes a setting, and
  extension loading stays disabled. A progress handler interrupts a statement
  that runs past the time limit.
- PostgreSQL: the session is ``READ ONLY`` with a ``statement_timeout``.

Results are capped at ``max_rows`` rows (``truncated`` says when more existed).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from catalog.database import CatalogError, database_url

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ROWS = 10_000
# SQLite virtual-machine instructions between two checks of the clock.
PROGRESS_EVERY_N_OPS = 10_000
# PRAGMAs that only describe the schema; every other one (query_only=OFF, writable_schema, ...) is denied.
READ_ONLY_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list", "table_list"})


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float


def run_readonly_sql(
    sql: str, url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS
) -> SqlResult:
    """Run one statement read-only; errors (syntax, writes, time limit) raise CatalogError."""
    if not sql.strip():
        raise CatalogError("the query is empty")
    url = database_url(url)
    runner = _run_sqlite if make_url(url).get_backend_name() == "sqlite" else _run_postgresql
    return runner(sql, url, timeout_s, max_rows)


# --- SQLite ---------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    path = make_url(url).database
    if not path or path == ":memory:":
        raise CatalogError("the SQL page needs a database file; an in-memory SQLite catalog cannot be opened read-only")
    return path


def _deny_changes(action: int, arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in READ_ONLY_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_sqlite_readonly(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only=ON")
    connection.set_authorizer(_deny_changes)
    return connection


def _sqlite_failure(exc: Exception, *, timed_out: bool, timeout_s: float) -> str:
    message = str(exc)
    if timed_out and "interrupt" in message:
        return f"query stopped: it ran longer than the {timeout_s:g} s limit"
    if "not authorized" in message or "authorization denied" in message:
        return "query refused: the SQL page is read-only (no ATTACH, settings or extensions)"
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
