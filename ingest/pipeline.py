"""Run ingest stages for one model and record each as an ``ingest_run``.

Guarantees:
- a stage's rows and its run's ``succeeded`` status commit in one transaction,
  so a failure (or a killed process) leaves no partial rows;
- a stage with a succeeded run of the same (model revision, params, code
  version) is skipped, so re-running an ingest is idempotent;
- a failed stage leaves a ``failed`` run with its one-line error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import Engine, select, update
from sqlalchemy.engine import Connection

from catalog.database import CatalogError, bulk_insert, columns_to_rows, ensure_schema, insert_unless_exists
from catalog.schema import Cluster, EmbeddingStat, IngestRun, Model, Neighbor, Token, Tokenizer, utcnow
from ingest import __version__
from ingest.embedding_stats import EmbeddingStats, StatsParams, compute_embedding_stats, reference_unused_ids
from ingest.loading import LoadedModel, load
from ingest.tokenizer_facts import compute_token_facts, summarize

STAGES = ("tokenizer_facts", "embedding_stats")


@dataclass
class StageResult:
    stage: str
    status: str  # succeeded, skipped or failed
    run_id: int | None
    seconds: float
    n_rows: int = 0
    detail: str = ""


@dataclass
class IngestReport:
    model_id: int
    model_name: str
    stages: list[StageResult] = field(default_factory=list)


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


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
                work=lambda conn, run_id, _params: _embedding_stats_stage(
                    conn, run_id, loaded, model_id, tokenizer_id, params, device
                ),
            )
        )
    return report


def check_vocabulary_fits_embeddings(loaded: LoadedModel) -> None:
    if not loaded.has_weights:
        return
    needed = max(loaded.vocabulary.token_ids) + 1
    if loaded.embedding_rows < needed:
        raise CatalogError(
            f"tokenizer has {needed} token ids but the embedding matrix has {loaded.embedding_rows} rows: "
            "tokenizer and weights do not belong together"
        )


# --- tokenizer facts -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelRecord:
    """The tokenizer and model rows of a loaded model, as plain data (a cluster worker sends it back)."""

    tokenizer: dict[str, Any]  # content_hash, name, kind
    model: dict[str, Any]  # model columns except tokenizer_id


def model_record(loaded: LoadedModel) -> ModelRecord:
    source = loaded.source
    return ModelRecord(
        tokenizer={"content_hash": loaded.vocabulary.content_hash, "name": loaded.name, "kind": loaded.vocabulary.kind},
        model={
            "name": loaded.name,
            "spec": loaded.spec,
            "source_kind": source.kind,
            "source": source.location if not source.gguf_file else f"{source.location}/{source.gguf_file}",
            "revision": loaded.revision,
            "architecture": loaded.architecture,
            "vocab_size": loaded.embedding_rows,
            "hidden_size": loaded.hidden_size,
            "tied_embeddings": loaded.tied_embeddings,
            "n_params": loaded.n_params,
        },
    )


def register_model(
    engine: Engine, record: ModelRecord, compute_facts: Callable[[], dict[str, list[Any]]]
) -> tuple[int, int, dict[str, list[Any]] | None]:
    """Get or create the tokenizer (with its token facts) and the model, safe against concurrent ingests.

    Returns (model id, tokenizer id, the facts if this call catalogued the tokenizer, else None).
    """
    content_hash = record.tokenizer["content_hash"]
    facts: dict[str, list[Any]] | None = None
    with engine.begin() as conn:
        tokenizer_id = _existing_tokenizer(conn, content_hash)
        if tokenizer_id is None:
            facts = compute_facts()
            tokenizer_id = _insert_tokenizer(conn, record, facts)
        if tokenizer_id is None:  # a concurrent ingest catalogued the same vocabulary first
            facts = None
            tokenizer_id = _existing_tokenizer(conn, content_hash)
        model_id = _get_or_create_model(conn, record, tokenizer_id)
    return model_id, tokenizer_id, facts


def _existing_tokenizer(conn: Connection, content_hash: str) -> int | None:
    return conn.scalar(select(Tokenizer.id).where(Tokenizer.content_hash == content_hash))


def _insert_tokenizer(conn: Connection, record: ModelRecord, facts: dict[str, list[Any]]) -> int | None:
    values = {**record.tokenizer, "vocab_size": len(facts["token_id"]), "n_special": sum(facts["is_special"]), "created_at": utcnow()}
    tokenizer_id = insert_unless_exists(conn, Tokenizer.__table__, values, unique=["content_hash"])
    if tokenizer_id is not None:
        bulk_insert(conn, Token.__table__, columns_to_rows(facts, tokenizer_id=tokenizer_id))
    return tokenizer_id


def _model_id(conn: Connection, record: ModelRecord) -> int | None:
    return conn.scalar(select(Model.id).where(Model.name == record.model["name"], Model.revision == record.model["revision"]))


def _get_or_create_model(conn: Connection, record: ModelRecord, tokenizer_id: int) -> int:
    model_id = _model_id(conn, record)
    if model_id is None:
        values = {**record.model, "tokenizer_id": tokenizer_id, "created_at": utcnow()}
        model_id = insert_unless_exists(conn, Model.__table__, values, unique=["name", "revision"])
    if model_id is None:  # a concurrent ingest of the same model inserted it first
        model_id = _model_id(conn, record)
    return model_id


def record_tokenizer_stage(engine: Engine, model_id: int, facts: dict[str, list[Any]] | None, seconds: float) -> StageResult:
    """Facts belong to the tokenizer; a model whose tokenizer is already catalogued reuses them."""
    if facts is None:
        return StageResult("tokenizer_facts", "skipped", None, seconds, detail="tokenizer already catalogued")
    params = {"categories": summarize(facts)}
    with engine.begin() as conn:
        run_id = _insert_run(conn, model_id, "tokenizer_facts", params, device="cpu")
        _finish_run(conn, run_id, "succeeded", n_rows=len(facts["token_id"]), seconds=seconds)
    return StageResult("tokenizer_facts", "succeeded", run_id, seconds, len(facts["token_id"]))


# --- runs ----------------------------------------------------------------------------


def _insert_run(conn: Connection, model_id: int, stage: str, params: dict[str, Any], device: str) -> int:
    return conn.scalar(
        IngestRun.__table__.insert()
        .values(
            model_id=model_id,
            stage=stage,
            params=params,
            params_hash=params_hash(params),
            code_version=__version__,
            status="running",
            device=device,
            started_at=utcnow(),
        )
        .returning(IngestRun.id)
    )


def _finish_run(conn: Connection, run_id: int, status: str, **values: Any) -> None:
    conn.execute(update(IngestRun).where(IngestRun.id == run_id).values(status=status, finished_at=utcnow(), **values))


def succeeded_run(conn: Connection, model_id: int, stage: str, params: dict[str, Any]) -> int | None:
    return conn.scalar(
        select(IngestRun.id)
        .where(
            IngestRun.model_id == model_id,
            IngestRun.stage == stage,
            IngestRun.params_hash == params_hash(params),
            IngestRun.code_version == __version__,
            IngestRun.status == "succeeded",
        )
        .order_by(IngestRun.id.desc())
        .limit(1)
    )


StageWork = Callable[[Connection, int, dict[str, Any]], tuple[int, dict[str, Any]]]


def run_stage(
    engine: Engine, model_id: int, stage: str, params: dict[str, Any], *, force: bool, device: str, work: StageWork
) -> StageResult:
    """Skip, or run ``work`` inside one transaction that also marks the run succeeded.

    ``work`` returns (rows written, facts to merge into the run's params).
    """
    with engine.begin() as conn:
        done = succeeded_run(conn, model_id, stage, params)
        if done is not None and not force:
            return StageResult(stage, "skipped", done, 0.0, detail=f"run {done} already succeeded with these params")
        # A 'running' run of this key can only be left over from a killed process.
        conn.execute(
            update(IngestRun)
            .where(IngestRun.model_id == model_id, IngestRun.stage == stage, IngestRun.status == "running")
            .values(status="failed", error="interrupted (process ended before the stage finished)", finished_at=utcnow())
        )
        run_id = _insert_run(conn, model_id, stage, params, device)
    start = time.perf_counter()
    try:
        with engine.begin() as conn:
            n_rows, extra = work(conn, run_id, params)
            seconds = time.perf_counter() - start
            _finish_run(conn, run_id, "succeeded", n_rows=n_rows, seconds=seconds, params={**params, **extra})
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with engine.begin() as conn:
            _finish_run(conn, run_id, "failed", error=message, seconds=time.perf_counter() - start)
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"stage {stage} failed: {message}") from exc
    return StageResult(stage, "succeeded", run_id, seconds, n_rows)


# --- embedding statistics ------------------------------------------------------------


TOKEN_COLUMNS = ("token_id", "piece", "raw_bytes", "is_unreachable", "is_special")


def _embedding_stats_stage(
    conn: Connection,
    run_id: int,
    loaded: LoadedModel,
    model_id: int,
    tokenizer_id: int,
    params: StatsParams,
    device: str,
) -> tuple[int, dict[str, Any]]:
    token_rows = conn.execute(
        select(*(getattr(Token, name) for name in TOKEN_COLUMNS)).where(Token.tokenizer_id == tokenizer_id).order_by(Token.token_id)
    ).all()
    tokens = {name: [getattr(row, name) for row in token_rows] for name in TOKEN_COLUMNS}
    stats, extra = compute_model_stats(loaded, tokens, params, device)
    return write_stats(conn, run_id, model_id, tokenizer_id, stats), extra


def compute_model_stats(
    loaded: LoadedModel, tokens: Mapping[str, Sequence[Any]], params: StatsParams, device: str
) -> tuple[EmbeddingStats, dict[str, Any]]:
    """The embedding_stats stage without the database: ``tokens`` holds the TOKEN_COLUMNS of the
    tokenizer's facts (catalog rows or ``compute_token_facts`` output), ordered by token id.

    Returns the statistics and the facts to merge into the run's params.
    """
    reference, rule = reference_unused_ids(tokens["token_id"], tokens["piece"], tokens["raw_bytes"], tokens["is_unreachable"])
    with torch.no_grad():
        stats = compute_embedding_stats(
            loaded.input_embeddings(),
            loaded.output_embeddings(),
            tokens["token_id"],
            reference,
            special_ids=[t for t, special in zip(tokens["token_id"], tokens["is_special"]) if special],
            params=params,
            device=device,
        )
    if stats.bootstrapped_reference:
        rule = (
            f"none found; bootstrapped from the {stats.n_reference} non-special tokens nearest the centroid, "
            f"refined {params.bootstrap_refinements}x by taking the most similar ones"
        )
    extra = {
        "reference_rule": rule,
        "n_reference": stats.n_reference,
        "unused_indicator_matrix": "input embedding (no LM head)" if loaded.tied_embeddings is None else "unembedding",
        "embedding_rows": loaded.embedding_rows,
    }
    return stats, extra


def write_stats(conn: Connection, run_id: int, model_id: int, tokenizer_id: int, stats: EmbeddingStats) -> int:
    per_token = {
        "token_id": stats.token_ids.tolist(),
        "embed_norm": stats.embed_norm.tolist(),
        "unembed_norm": stats.unembed_norm.tolist() if stats.unembed_norm is not None else [None] * len(stats.token_ids),
        "centroid_dist": stats.centroid_dist.tolist(),
        "centroid_cos": stats.centroid_cos.tolist(),
        "unused_cos": stats.unused_cos.tolist(),
        "cluster_id": stats.cluster_id.tolist(),
        "cluster_stability": stats.cluster_stability.tolist(),
        "embed_norm_pct": stats.embed_norm_pct.tolist(),
        "centroid_dist_pct": stats.centroid_dist_pct.tolist(),
        "unused_cos_pct": stats.unused_cos_pct.tolist(),
        "anomaly_score": stats.anomaly_score.tolist(),
        "anomaly_rank": stats.anomaly_rank.tolist(),
    }
    n = bulk_insert(conn, EmbeddingStat.__table__, columns_to_rows(per_token, run_id=run_id, model_id=model_id, tokenizer_id=tokenizer_id))
    n += bulk_insert(conn, Cluster.__table__, _cluster_rows(stats, run_id, model_id))
    k = stats.neighbor_ids.shape[1]
    neighbors = {
        "token_id": stats.neighbor_of.repeat_interleave(k).tolist(),
        "rank": list(range(1, k + 1)) * len(stats.neighbor_of),
        "neighbor_token_id": stats.neighbor_ids.flatten().tolist(),
        "cosine": stats.neighbor_cos.flatten().tolist(),
    }
    n += bulk_insert(conn, Neighbor.__table__, columns_to_rows(neighbors, run_id=run_id, tokenizer_id=tokenizer_id))
    return n


def _cluster_rows(stats: EmbeddingStats, run_id: int, model_id: int) -> list[dict[str, Any]]:
    """Per-cluster aggregates.  centres [k, d_model]; labels [d_vocab]."""
    k = stats.cluster_centers.shape[0]
    labels = stats.cluster_id
    size = torch.bincount(labels, minlength=k)
    stability_sum = torch.zeros(k).index_add_(0, labels, stats.cluster_stability)
    columns = {
        "cluster_id": list(range(k)),
        "size": size.tolist(),
        "centroid_norm": stats.cluster_centers.norm(dim=1).tolist(),
        "dist_to_global_centroid": (stats.cluster_centers - stats.centroid).norm(dim=1).tolist(),
        "mean_stability": (stability_sum / size.clamp(min=1)).tolist(),
    }
    return columns_to_rows(columns, run_id=run_id, model_id=model_id)
