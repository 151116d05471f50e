"""Embedding indicators for every token, vectorised over the vocabulary.

Shapes follow TransformerLens naming: ``d_vocab`` rows (tokens), ``d_model``
columns. Every function takes a ``device`` so the same code runs on CPU in the
tests and on a GPU for large vocabularies.

Indicators (all stored; "pct" = percentile, 1.0 = most anomalous):

- input-embedding L2 norm (under-trained tokens keep a small, decayed norm);
- L2 distance and cosine to the embedding centroid (SolidGoldMagikarp: the
  anomalous tokens sit near the centroid);
- cosine of the unembedding row to the mean of reference unused tokens after
  removing the first principal component (Land & Bartolo 2024's strongest
  indicator); encoders without an LM head use the input embeddings instead;
- k-means cluster id with a per-token stability over several seeds;
- nearest neighbours of the most anomalous tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import MiniBatchKMeans
from torch import Tensor

from ingest.compute.batching import AdaptiveBatches
from ingest.compute.projection import Projection, ProjectionParams, principal_axes, project_embeddings
from ingest.compute.tokenizer_facts import PLACEHOLDER_PIECE

# Bytes that never occur in valid UTF-8: a token for one of them cannot appear in UTF-8 training text.
IMPOSSIBLE_UTF8_BYTES = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])


@dataclass(frozen=True)
class StatsParams:
    n_clusters: int = 64
    n_seeds: int = 5
    n_neighbor_tokens: int = 1000
    n_neighbors: int = 10
    kmeans_batch_size: int = 8192
    bootstrap_fraction: float = 0.001
    bootstrap_refinements: int = 1
    map_fit_points: int = ProjectionParams.fit_points
    map_keep_top: int = ProjectionParams.keep_top


@dataclass
class EmbeddingStats:
    """Per-token results, all of length d_vocab (rows in the order of ``token_ids``)."""

    token_ids: Tensor  # [d_vocab] long
    embed_norm: Tensor
    unembed_norm: Tensor | None
    centroid_dist: Tensor
    centroid_cos: Tensor
    unused_cos: Tensor
    cluster_id: Tensor  # [d_vocab] long
    cluster_stability: Tensor
    embed_norm_pct: Tensor
    centroid_dist_pct: Tensor
    unused_cos_pct: Tensor
    anomaly_score: Tensor
    anomaly_rank: Tensor  # [d_vocab] long, 1 = most anomalous
    centroid: Tensor  # [d_model] mean input embedding
    cluster_centers: Tensor  # [n_clusters, d_model]
    neighbor_of: Tensor  # [n_neighbor_tokens] long (token ids)
    neighbor_ids: Tensor  # [n_neighbor_tokens, n_neighbors] long (token ids)
    neighbor_cos: Tensor  # [n_neighbor_tokens, n_neighbors]
    n_reference: int  # reference unused tokens behind unused_cos
    bootstrapped_reference: bool  # True when the reference came from centroid_bootstrap_rows
    projection: Projection  # 2-D map positions of every row


def reference_unused_ids(
    token_ids: Sequence[int],
    pieces: Sequence[str],
    raw_bytes: Sequence[bytes | None],
    unreachable: Sequence[bool],
) -> tuple[list[int], str]:
    """Tokens known never to occur in training text, and the rule that found them.

    Placeholder pieces ('<unused12>', '[unused3]', reserved specials) are the
    published reference; padding rows ('[PAD151665]', embedding rows no tokenizer
    id maps to) join them: no text ever held them, so training only pushed their
    logits down, exactly what happens to an unused piece. Without either, single
    bytes that UTF-8 never uses and unreachable tokens are unused by construction.
    An empty result means the caller falls back to :func:`centroid_bootstrap_rows`.
    """
    placeholders = [t for t, piece in zip(token_ids, pieces) if PLACEHOLDER_PIECE.match(piece)]
    if placeholders:
        return placeholders, "placeholder pieces (<unusedN>, [unusedN], reserved specials, [PADn] padding rows)"
    impossible = {t for t, data in zip(token_ids, raw_bytes) if data is not None and len(data) == 1 and data[0] in IMPOSSIBLE_UTF8_BYTES}
    never_encoded = {t for t, flag in zip(token_ids, unreachable) if flag}
    return sorted(impossible | never_encoded), "bytes invalid in UTF-8 plus unreachable tokens"


def centroid_bootstrap_rows(centroid_dist: Tensor, eligible: Tensor, fraction: float) -> Tensor:
    """Rows nearest the centroid, used as the unused reference when a vocabulary has none.  [n], [n] bool -> [r]"""
    count = max(10, int(fraction * centroid_dist.shape[0]))
    masked = torch.where(eligible, centroid_dist, torch.inf)
    return torch.argsort(masked)[: min(count, int(eligible.sum()))]


def low_is_anomalous_pct(values: Tensor) -> Tensor:
    """Percentile with 1.0 for the smallest value.  [n] -> [n]"""
    return 1.0 - high_is_anomalous_pct(values)


def high_is_anomalous_pct(values: Tensor) -> Tensor:
    """Percentile with 1.0 for the largest value (ties broken by position).  [n] -> [n]"""
    n = values.shape[0]
    ranks = torch.empty(n, device=values.device, dtype=torch.float32)
    ranks[torch.argsort(values, stable=True)] = torch.arange(n, device=values.device, dtype=torch.float32)
    return ranks / max(n - 1, 1)


def remove_first_principal_component(matrix: Tensor) -> Tensor:
    """Centre the rows and project out the top principal direction.  [n, d] -> [n, d]"""
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    top = principal_axes(centred, 1)[0][:, 0]
    return centred - torch.outer(centred @ top, top)


def unused_token_similarity(unembed: Tensor, reference_rows: Tensor) -> Tensor:
    """Cosine of each row (first PC removed) to the mean reference row.  [n, d], [r] -> [n]"""
    projected = remove_first_principal_component(unembed)
    reference = projected[reference_rows].mean(dim=0, keepdim=True)
    return torch.nn.functional.cosine_similarity(projected, reference, dim=1)


def kmeans_with_stability(
    embed: Tensor, n_clusters: int, n_seeds: int, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Cluster with several seeds; stability = share of seeds agreeing with seed 0 after label matching.

    Returns (labels [n] long, stability [n] float, centres [k, d]) for seed 0.
    """
    data = embed.detach().cpu().numpy().astype(np.float32)
    k = min(n_clusters, data.shape[0])
    runs = [
        MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=batch_size, n_init=1).fit(data)
        for seed in range(n_seeds)
    ]
    reference = runs[0].labels_
    agree = np.ones(data.shape[0], dtype=np.float32)
    for run in runs[1:]:
        agree += reference == _match_labels(run.labels_, reference, k)
    stability = agree / n_seeds
    centres = torch.from_numpy(runs[0].cluster_centers_)
    return torch.from_numpy(reference.astype(np.int64)), torch.from_numpy(stability), centres


def _match_labels(labels: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Relabel one clustering to best agree with the reference (Hungarian on the contingency table)."""
    contingency = np.bincount(labels * k + reference, minlength=k * k).reshape(k, k)
    rows, cols = linear_sum_assignment(-contingency)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]


def nearest_neighbors(embed: Tensor, query_rows: Tensor, n_neighbors: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Cosine top-k neighbours of the query rows among all rows, self excluded.

    embed [n, d], query_rows [q] -> (rows [q, k] long, cosine [q, k])
    """
    unit = torch.nn.functional.normalize(embed, dim=1)
    k = min(n_neighbors, unit.shape[0] - 1)

    def top_k(rows: Tensor) -> list[tuple[Tensor, Tensor]]:
        similarity = unit[rows] @ unit.T  # [chunk, n]
        similarity[torch.arange(rows.shape[0], device=unit.device), rows] = -torch.inf
        cos, idx = similarity.topk(k, dim=1)
        return [(idx, cos)]

    # [chunk, n] similarities of a 262k vocabulary are 1 GiB per 1024 rows: fewer rows if that does not fit.
    parts = AdaptiveBatches(chunk, unit.device).map(top_k, query_rows)
    if not parts:
        return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
    return torch.cat([idx for idx, _ in parts]), torch.cat([cos for _, cos in parts])


def _rows_of(ids: Tensor, token_ids: Sequence[int]) -> Tensor:
    """Row positions of the given token ids inside ``ids``.  [n], [r] -> [r']"""
    return torch.nonzero(torch.isin(ids, torch.as_tensor(list(token_ids), dtype=torch.long)), as_tuple=True)[0]


def compute_embedding_stats(
    embed: Tensor,
    unembed: Tensor | None,
    token_ids: Sequence[int],
    reference_ids: Sequence[int],
    special_ids: Sequence[int] = (),
    params: StatsParams = StatsParams(),
    device: str | torch.device = "cpu",
) -> EmbeddingStats:
    """All indicators for the rows ``token_ids`` of ``embed`` [d_vocab_rows, d_model].

    ``unembed`` is the LM head [d_vocab_rows, d_model] (the same tensor when tied),
    or None for encoders, in which case the unused-token indicator uses ``embed``.
    """
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    E = embed[ids].to(device=device, dtype=torch.float32)  # [d_vocab, d_model]
    U = (unembed if unembed is not None else embed)[ids].to(device=device, dtype=torch.float32)

    embed_norm = E.norm(dim=1)
    centroid = E.mean(dim=0, keepdim=True)
    centroid_dist = (E - centroid).norm(dim=1)
    centroid_cos = torch.nn.functional.cosine_similarity(E, centroid, dim=1)

    reference_rows = _rows_of(ids, reference_ids).to(device)
    bootstrapped = not reference_rows.numel()
    if bootstrapped:
        eligible = ~torch.isin(ids, torch.as_tensor(list(special_ids), dtype=torch.long)).to(device)
        reference_rows = centroid_bootstrap_rows(centroid_dist, eligible, params.bootstrap_fraction)
        unused_cos = unused_token_similarity(U, reference_rows)
        for _ in range(params.bootstrap_refinements):
            # Centroid-nearest rows include ordinary words; the rows most like them after PC removal are purer.
            reference_rows = torch.argsort(torch.where(eligible, unused_cos, -torch.inf), descending=True)[: reference_rows.numel()]
            unused_cos = unused_token_similarity(U, reference_rows)
    else:
        unused_cos = unused_token_similarity(U, reference_rows)

    embed_norm_pct = low_is_anomalous_pct(embed_norm)
    centroid_dist_pct = low_is_anomalous_pct(centroid_dist)
    unused_cos_pct = high_is_anomalous_pct(unused_cos)
    # The published detectors found the unused-token indicator the most reliable; it is the ranking.
    anomaly_score = unused_cos_pct
    anomaly_rank = torch.empty_like(ids)
    order = torch.argsort(anomaly_score.cpu(), descending=True, stable=True)
    anomaly_rank[order] = torch.arange(1, ids.shape[0] + 1)

    labels, stability, centres = kmeans_with_stability(E, params.n_clusters, params.n_seeds, params.kmeans_batch_size)

    query_rows = order[: params.n_neighbor_tokens].to(device)
    neighbor_rows, neighbor_cos = nearest_neighbors(E, query_rows, params.n_neighbors)

    # The map's t-SNE sample keeps the top of every indicator: the rows the probes stage picks candidates from.
    keep = torch.cat([torch.argsort(pct.cpu(), descending=True)[: params.map_keep_top] for pct in (embed_norm_pct, centroid_dist_pct, unused_cos_pct)])
    projection = project_embeddings(E, keep, ProjectionParams(fit_points=params.map_fit_points, keep_top=params.map_keep_top))

    unembed_norm = unembed[ids].float().norm(dim=1) if unembed is not None and unembed.data_ptr() != embed.data_ptr() else None
    return EmbeddingStats(
        token_ids=ids,
        embed_norm=embed_norm.cpu(),
        unembed_norm=unembed_norm,
        centroid_dist=centroid_dist.cpu(),
        centroid_cos=centroid_cos.cpu(),
        unused_cos=unused_cos.cpu(),
        cluster_id=labels,
        cluster_stability=stability,
        embed_norm_pct=embed_norm_pct.cpu(),
        centroid_dist_pct=centroid_dist_pct.cpu(),
        unused_cos_pct=unused_cos_pct.cpu(),
        anomaly_score=anomaly_score.cpu(),
        anomaly_rank=anomaly_rank,
        centroid=centroid[0].cpu(),
        cluster_centers=centres,
        neighbor_of=ids[query_rows.cpu()],
        neighbor_ids=ids[neighbor_rows.cpu()],
        neighbor_cos=neighbor_cos.cpu(),
        n_reference=int(reference_rows.numel()),
        bootstrapped_reference=bootstrapped,
        projection=projection,
    )


def head_projection_score(unembed: Tensor, n_directions: int, *, device: str = "cpu") -> Tensor:
    """Inference-free LM-head indicator: how little of each centred row lies in the head's leading singular directions.

    Rows that training never reached keep (near) their initial vector plus the
    shared push every unseen token's logit gets, so they carry little energy in
    the directions real hidden states read; the score is minus the norm of the
    centred row's projection on the ``n_directions`` leading right singular
    vectors, scaled by the typical such norm.  unembed [d_vocab, d_model] -> [d_vocab]; higher = more anomalous.
    """
    rows = unembed.to(device=device, dtype=torch.float32)
    centred = rows - rows.mean(0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)  # right [d_model, d_model], rows = directions
    projected = (centred @ right[:n_directions].T).norm(dim=1)  # [d_vocab]
    return (-projected / projected.median().clamp_min(1e-12)).cpu()


def identical_row_counts(matrix: Tensor, tolerance: float, *, device: str = "cpu") -> Tensor:
    """For each row, how many *other* rows hold the same vector within ``tolerance`` x the matrix's RMS value.

    Untrained rows often keep one shared initial vector (or a quantiser maps them to
    one); rounding every value to the step makes near-identical rows identical,
    and two random projections of the rounded rows (float64: exact for these
    integers' sums at these sizes, collisions of different rows improbable) key
    the groups.  matrix [n, d] -> [n] int64; higher = more anomalous.
    """
    values = matrix.to(device=device, dtype=torch.float32)
    step = tolerance * values.pow(2).mean().sqrt().clamp_min(1e-30)
    rounded = torch.round(values / step).double()  # [n, d]
    generator = torch.Generator().manual_seed(0)
    projections = torch.rand(values.shape[1], 2, generator=generator, dtype=torch.float64).to(device)  # [d, 2]
    keys = rounded @ projections  # [n, 2]
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    return (counts[inverse] - 1).cpu()
