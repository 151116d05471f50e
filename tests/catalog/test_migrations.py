"""The migrations build exactly the ORM's schema, go up and down, and refuse foreign revisions."""

from __future__ import annotations

import pytest
from pytest_alembic.tests import (  # noqa: F401 - collected as tests
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import inspect, text

from catalog.database import CatalogError, downgrade, ensure_schema, head_revision, make_engine, upgrade
from catalog.schema import Base


def test_upgrade_creates_every_table_and_downgrade_removes_them(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    downgrade(db_url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}


def test_ensure_schema_creates_an_empty_database(db_url):
    engine = make_engine(db_url)
    ensure_schema(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("select version_num from alembic_version")) == head_revision()


def test_database_ahead_of_the_code_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = 'ffffffff'"))
    with pytest.raises(CatalogError, match="newer than this glitchdex"):
        ensure_schema(engine)


def test_database_behind_the_code_is_refused(db_url):
    revisions = [line for line in _history()]
    if len(revisions) < 2:
        pytest.skip("only one revision exists: no older schema to be behind")
    upgrade(db_url, revisions[-2])
    with pytest.raises(CatalogError, match="older than head.*glitchdex db upgrade"):
        ensure_schema(make_engine(db_url))


def _history() -> list[str]:
    from alembic.script import ScriptDirectory

    from catalog.database import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]
