"""pytest-alembic wiring: the real migrations against a temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_alembic.config import Config

import migrations
from catalog.database import make_engine
from tests.conftest import sqlite_url


@pytest.fixture
def alembic_config() -> Config:
    return Config.from_raw_config({"script_location": str(Path(migrations.__file__).parent), "path_separator": "os"})


@pytest.fixture
def alembic_engine(tmp_path: Path):
    engine = make_engine(sqlite_url(tmp_path / "migrations.sqlite"))
    yield engine
    engine.dispose()
