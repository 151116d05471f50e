"""Stage ``embedding_stats``: per-token embedding indicators, clusters and neighbours of one model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.engine import Connection

from catalog.database import bulk_insert, columns_to_rows
from catalog.schema import Cluster, EmbeddingProjection, EmbeddingStat, Neighbor, Token
from ingest.compute.embedding_stats import EmbeddingStats, StatsParams, compute_embedding_stats, reference_unused_ids
from ingest.load.models import LoadedModel
from ingest.stages.base import ParamError, Unit, build_params
from ingest.stages.runs import ResumableWork

TOKEN_COLUMNS = ("token_id", "piece", "raw_bytes", "is_unreachable", "is_special")


def embedding_stats_stage(
    conn: Connection,
    run_id: int,
    loaded: LoadedModel,
    model_id: int,
    tokenizer_id: int,
    params: StatsParams,
    device: str,
) -> tuple[int, dict[str, Any]]:
    # The tokenizer may hold padding rows of a more padded model than this one.
    rows = select(*(getattr(Token, name) for name in TOKEN_COLUMNS)).where(
        Token.tokenizer_id == tokenizer_id, Token.token_id < loaded.embedding_rows
    )
    token_rows = conn.execute(rows.order_by(Token.token_id)).all()
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
        "map_fitted_tokens": int(stats.projection.fitted.sum()),
        "pca_explained_variance": [round(share, 4) for share in stats.projection.explained_variance],
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
    n += write_projection(conn, run_id, model_id, tokenizer_id, stats)
    return n


def write_projection(conn: Connection, run_id: int, model_id: int, tokenizer_id: int, stats: EmbeddingStats) -> int:
    projection = stats.projection
    columns = {
        "token_id": stats.token_ids.tolist(),
        "pca_x": projection.pca[:, 0].tolist(),
        "pca_y": projection.pca[:, 1].tolist(),
        "tsne_x": projection.tsne[:, 0].tolist(),
        "tsne_y": projection.tsne[:, 1].tolist(),
        "tsne_fitted": projection.fitted.tolist(),
    }
    rows = columns_to_rows(columns, run_id=run_id, model_id=model_id, tokenizer_id=tokenizer_id)
    return bulk_insert(conn, EmbeddingProjection.__table__, rows)


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


class EmbeddingStatsStage:
    """One step: compute every indicator and write it in the transaction that marks the run succeeded."""

    name = "embedding_stats"
    params_type = StatsParams
    tables = (EmbeddingStat.__table__, Cluster.__table__, Neighbor.__table__)
    needs_weights = True
    uses_gpu = True
    reads_if_present = ()

    def build(self, values: Mapping[str, Any]) -> StatsParams:
        params = build_params(StatsParams, values)
        for key, value in dataclasses.asdict(params).items():
            if value <= 0:
                raise ParamError(key, f"parameter {key} must be positive, not {value!r}")
        return params

    def depends_on(self, params: StatsParams) -> tuple[str, ...]:
        return ()

    def run_params(self, params: StatsParams) -> dict[str, Any]:
        return dataclasses.asdict(params)

    def prepare(self, unit: Unit, params: StatsParams) -> ResumableWork:
        def finish(conn: Connection, run_id: int, _params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return embedding_stats_stage(conn, run_id, unit.loaded, unit.model_id, unit.tokenizer_id, params, unit.device)

        return ResumableWork(finish=finish)


EMBEDDING_STATS = EmbeddingStatsStage()
