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

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

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


def _run_postgresql(sql: str, url: str, timeout_s: float, max_rows: int) -> SqlResult:
    engine = create_engine(url, poolclass=NullPool)
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.execute(text("SELECT set_config('statement_timeout', :ms, false)"), {"ms": str(int(timeout_s * 1000))})
            conn.commit()
            result = conn.exec_driver_sql(sql)
            rows = [tuple(row) for row in result.fetchmany(max_rows + 1)] if result.returns_rows else []
            columns = list(result.keys()) if result.returns_rows else []
            conn.rollback()
    except DBAPIError as exc:
        raise CatalogError(f"query failed: {str(exc.orig).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.perf_counter() - start)
