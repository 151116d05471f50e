"""The SQL page's runner: read-only by construction, time-limited, row-capped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from catalog.database import CatalogError
from catalog.readonly import SQL_URL_ENV, run_readonly_sql
from tests.conftest import on_postgresql, reader_url

REFUSED = [
    "DELETE FROM model",
    "INSERT INTO tokenizer (content_hash, name, kind, vocab_size, n_special) VALUES ('h', 'n', 'k', 1, 0)",
    "CREATE TABLE scratch (x INTEGER)",
    "DROP TABLE token",
    "UPDATE alembic_version SET version_num = 'x'",
    "ATTACH DATABASE '{attached}' AS other",
    "SELECT load_extension('{attached}')",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = DELETE",
    "VACUUM",
    "VACUUM INTO '{attached}'",
    "SELECT 1; DELETE FROM model",
    "WITH doomed AS (SELECT id FROM model) DELETE FROM model WHERE id IN (SELECT id FROM doomed)",
    "REPLACE INTO alembic_version VALUES ('x')",
    "CREATE TEMP TABLE scratch AS SELECT 1 AS x",
    "CREATE TRIGGER stamp AFTER INSERT ON model BEGIN SELECT 1; END",
    "ANALYZE",
    "DETACH DATABASE main",
    "SELECT fts3_tokenizer('simple')",  # would hand out a pointer
    "SELECT length(randomblob(900000000))",  # one VM step of seconds: the progress handler cannot stop it
]
# The SQLite tests below check SQLite's own mechanics (file, ATTACH, pragmas, progress handler).
sqlite_only = pytest.mark.skipif(on_postgresql(), reason="SQLite read-only mechanics; PostgreSQL has its own tests below")
RUNAWAY = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def file_digest(db_url: str) -> str:
    return hashlib.sha256(Path(db_url.removeprefix("sqlite:///")).read_bytes()).hexdigest()


@sqlite_only
@pytest.mark.parametrize("sql", REFUSED)
def test_writes_attach_extensions_and_settings_fail_and_change_nothing(engine, db_url, tmp_path, sql):
    engine.dispose()  # checkpoint the WAL so the file alone is the catalog
    attached = tmp_path / "other.sqlite"
    before = file_digest(db_url)
    with pytest.raises(CatalogError, match="read-?only|refused|one statement"):  # and promptly: no VACUUM INTO, no 900 MB blob
        run_readonly_sql(sql.format(attached=attached), db_url)
    assert file_digest(db_url) == before
    assert not attached.exists()


@sqlite_only
def test_a_runaway_query_is_interrupted_at_the_time_limit(engine, db_url):
    with pytest.raises(CatalogError, match="longer than the 0.5 s limit"):
        run_readonly_sql(RUNAWAY, db_url, timeout_s=0.5)


@sqlite_only
def test_results_are_capped_and_flagged(engine, db_url):
    result = run_readonly_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 30) SELECT i FROM n", db_url, max_rows=10)
    assert result.columns == ["i"] and [r[0] for r in result.rows] == list(range(1, 11)) and result.truncated


@sqlite_only
def test_schema_pragmas_and_reads_are_allowed(engine, db_url):
    columns = run_readonly_sql("SELECT name FROM pragma_table_info('token')", db_url)
    assert ("norm_key",) in columns.rows
    assert run_readonly_sql("SELECT count(*) FROM token", db_url).rows == [(0,)]


@sqlite_only
def test_errors_are_one_line(engine, db_url):
    with pytest.raises(CatalogError, match="no such table: nope"):
        run_readonly_sql("SELECT * FROM nope", db_url)
    with pytest.raises(CatalogError, match="empty"):
        run_readonly_sql("  ", db_url)
    with pytest.raises(CatalogError, match="cannot open"):
        run_readonly_sql("SELECT 1", db_url.replace("catalog.sqlite", "missing.sqlite"))


# PostgreSQL: runs when GLITCHDEX_TEST_DATABASE_URL names a server (each test gets a fresh database).
needs_postgresql = pytest.mark.skipif(not on_postgresql(), reason="GLITCHDEX_TEST_DATABASE_URL names no PostgreSQL server")
POSTGRESQL_REFUSED = [
    ("DELETE FROM model", "read-only transaction"),
    ("CREATE TABLE scratch (x INTEGER)", "read-only transaction"),
    ("WITH doomed AS (DELETE FROM model RETURNING id) SELECT * FROM doomed", "read-only transaction"),
    ("SELECT nextval('model_id_seq')", "permission denied|read-only transaction"),
    ("SET TRANSACTION READ WRITE", "before any query"),
    ("SELECT set_config('transaction_read_only', 'off', true)", "before any query"),
    ("COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM model", "multiple commands"),
    ("COPY (SELECT 1) TO '/tmp/glitchdex-sql-page-copy.txt'", "COPY to a file"),
    ("SELECT pg_read_file('/etc/hostname')", "permission denied"),
    ("SELECT set_config('role', 'postgres', false), query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, false, '')", "permission denied"),
]


@needs_postgresql
@pytest.mark.parametrize("sql, reason", POSTGRESQL_REFUSED)
def test_postgresql_session_refuses_writes_and_server_files(engine, db_url, sql, reason):
    with pytest.raises(CatalogError, match=reason):
        run_readonly_sql(sql, reader_url(db_url))


@needs_postgresql
def test_postgresql_superuser_is_refused(engine, db_url):
    """A superuser reads and writes server files even in a read-only transaction: the page will not run as one."""
    with pytest.raises(CatalogError, match=f"does not run queries as 'postgres'.*{SQL_URL_ENV}"):
        run_readonly_sql("SELECT 1", db_url)


@needs_postgresql
def test_postgresql_statement_timeout_stops_a_runaway_query(engine, db_url):
    url = reader_url(db_url)
    with pytest.raises(CatalogError, match="longer than the 0.5 s limit"):
        run_readonly_sql(RUNAWAY, url, timeout_s=0.5)
    assert run_readonly_sql("SELECT '100%' AS share", url).rows == [("100%",)]
