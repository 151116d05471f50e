"""Ingest one model: register it (tokenizer facts), then run its stages in dependency order through the runner."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import Engine

from catalog.database import CatalogError, ensure_schema
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.jobs.runner import run_stage
from ingest.load.models import LoadedModel, load
from ingest.stages.all import STAGE_NAMES, STAGES, TOKENIZER_FACTS, in_dependency_order
from ingest.stages.runs import StageResult
from ingest.stages.tokenizer_facts import check_vocabulary_fits_embeddings, model_record, record_tokenizer_stage, register_model

DEFAULT_STAGES = (TOKENIZER_FACTS, "embedding_stats")


@dataclass(frozen=True)
class StageConfig:
    """A stage's parameters and the torch device it computes on (not part of the run key)."""

    params: Any
    device: str = "cpu"


@dataclass
class IngestReport:
    model_id: int
    model_name: str
    stages: list[StageResult] = field(default_factory=list)


def default_configs(names: Sequence[str], device: str, stats: StatsParams = StatsParams()) -> dict[str, StageConfig]:
    """Each named stage with its default parameters (``stats`` for embedding_stats) on ``device``."""
    unknown = [name for name in names if name not in STAGE_NAMES]
    if unknown:
        raise CatalogError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGE_NAMES)}")
    return {
        name: StageConfig(stats if name == "embedding_stats" else STAGES[name].build({}), device) for name in names if name != TOKENIZER_FACTS
    }


def ingest(
    spec: str,
    engine: Engine,
    *,
    stages: Sequence[str] = DEFAULT_STAGES,
    params: StatsParams = StatsParams(),
    device: str = "cpu",
    force: bool = False,
    show_progress: bool = False,
    loaded: LoadedModel | None = None,
    configs: Mapping[str, StageConfig] | None = None,
) -> IngestReport:
    """Register ``spec`` and run ``stages``; each stage's settings come from ``configs`` (default: its
    defaults, ``params`` for embedding_stats, on ``device``). Weights load once per (device, dtype), only
    if a stage needs them; a tokenizer-only vocabulary runs tokenizer_facts alone."""
    configs = dict(configs) if configs is not None else default_configs(stages, device, params)
    ensure_schema(engine)
    models = _ModelCache(spec, loaded, with_weights=any(STAGES[name].needs_weights for name in configs))
    first = models.any()
    check_vocabulary_fits_embeddings(first)
    start = time.perf_counter()
    model_id, tokenizer_id, facts = register_model(
        engine, model_record(first), lambda: compute_token_facts(first.vocabulary, show_progress=show_progress)
    )
    report = IngestReport(model_id=model_id, model_name=first.name)
    report.stages.append(record_tokenizer_stage(engine, model_id, facts, time.perf_counter() - start))
    if not first.has_weights:
        return report
    for name in in_dependency_order({name: config.params for name, config in configs.items()}):
        config = configs[name]
        report.stages.append(
            run_stage(
                engine,
                STAGES[name],
                config.params,
                loaded=models.get(config.device, getattr(config.params, "dtype", "float32")),
                ids=(model_id, tokenizer_id),
                device=config.device,
                force=force,
                show_progress=show_progress,
            )
        )
    return report


class _ModelCache:
    """The model loaded at most once per (device, dtype), and only when a stage asks for it."""

    def __init__(self, spec: str, loaded: LoadedModel | None, *, with_weights: bool):
        self.spec, self.with_weights = spec, with_weights
        self.models: dict[tuple[str, str], LoadedModel] = {}
        if loaded is not None:
            self.models[_weights_key(loaded)] = loaded

    def any(self) -> LoadedModel:
        return next(iter(self.models.values())) if self.models else self.get("cpu", "float32")

    def get(self, device: str, dtype: str) -> LoadedModel:
        if (device, dtype) not in self.models:
            if not self.with_weights and self.models:
                return self.any()
            self.models[(device, dtype)] = load(self.spec, with_weights=self.with_weights, dtype=getattr(torch, dtype), device=device)
        return self.models[(device, dtype)]


def _weights_key(loaded: LoadedModel) -> tuple[str, str]:
    """(device, dtype) of the loaded weights; a vocabulary without weights serves any key."""
    weights = next(loaded.model.parameters(), None) if loaded.model is not None else None
    if weights is None:
        return "cpu", "float32"
    return str(weights.device), str(weights.dtype).removeprefix("torch.")
