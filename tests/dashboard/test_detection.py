"""The detection page on a real SmolLM2 sweep sample: statement, table, curves and the tokens every indicator missed."""

from __future__ import annotations

import pytest

from catalog.database import make_engine
from ingest.jobs.runner import run_stage
from ingest.stages.evaluation import EVALUATION, EvaluationParams
from ingest.stages.probes import PROBES, ProbeParams
from tests.conftest import fresh_database
from tests.dashboard.conftest import url_of

SAMPLE = ProbeParams.sweep(sweep_sample=32, templates=("echo_fewshot",), top=3, controls=4, determinism_sample=2, seed=3)


@pytest.fixture(scope="module")
def evaluated_catalog(smollm2, smollm2_catalog, tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("detection"), template=smollm2_catalog) as url:
        engine = make_engine(url)
        run_stage(engine, PROBES, SAMPLE, loaded=smollm2)
        run_stage(engine, EVALUATION, EvaluationParams(first_forward=False), loaded=smollm2)
        yield engine
        engine.dispose()


def test_detection_page_shows_the_statement_table_and_missed_tokens(evaluated_catalog, open_page):
    app = open_page(url_of(evaluated_catalog), "page_detection.py", model="1")
    statement = [e.value for e in [*app.success, *app.warning]]
    assert len(statement) == 1 and ("separates" in statement[0] or "too weak" in statement[0])
    table = app.dataframe[0].value
    assert {"anomaly_score", "head_projection", "identical_rows", "any_indicator"} <= set(table.index)
    assert "Verified tokens every indicator missed" in [s.value for s in app.subheader]


def test_detection_page_without_an_evaluation_says_what_to_run(smollm2_catalog, open_page):
    app = open_page(url_of(smollm2_catalog), "page_detection.py", model="1")
    assert "glitchdex evaluate" in app.info[0].value
