"""Ingest one model: the tokenizer facts, then its embedding statistics, each recorded as an ``ingest_run``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from catalog.database import CatalogError, ensure_schema
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.load.models import LoadedModel, load
from ingest.stages.embedding_stats import embedding_stats_stage
from ingest.stages.runs import StageResult, run_stage
from ingest.stages.tokenizer_facts import check_vocabulary_fits_embeddings, model_record, record_tokenizer_stage, register_model

STAGES = ("tokenizer_facts", "embedding_stats")


@dataclass
class IngestReport:
    model_id: int
    model_name: str
    stages: list[StageResult] = field(default_factory=list)


def ingest(
    spec: str,
    engine: Engine,
    *,
    stages: Sequence[str] = STAGES,
    params: StatsParams = StatsParams(),
    device: str = "cpu",
    force: bool = False,
    show_progress: bool = False,
    loaded: LoadedModel | None = None,
) -> IngestReport:
    """Ingest ``spec`` into the catalog behind ``engine``; see the module doc for guarantees."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise CatalogError(f"unknown stage(s) {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
    ensure_schema(engine)
    loaded = loaded or load(spec, with_weights="embedding_stats" in stages, device=device)
    check_vocabulary_fits_embeddings(loaded)

    start = time.perf_counter()
    model_id, tokenizer_id, facts = register_model(
        engine, model_record(loaded), lambda: compute_token_facts(loaded.vocabulary, show_progress=show_progress)
    )
    report = IngestReport(model_id=model_id, model_name=loaded.name)
    report.stages.append(record_tokenizer_stage(engine, model_id, facts, time.perf_counter() - start))

    if "embedding_stats" in stages and loaded.has_weights:
        report.stages.append(
            run_stage(
                engine,
                model_id,
                "embedding_stats",
                dataclasses.asdict(params),
                force=force,
                device=device,
                work=lambda conn, run_id, _params: embedding_stats_stage(
                    conn, run_id, loaded, model_id, tokenizer_id, params, device
                ),
            )
        )
    return report
