"""A 2-D map of the input embeddings: PCA of every token, and t-SNE fitted on a sample.

t-SNE costs grow faster than linearly with the points, so it is fitted on a
sample that always holds every anomalous candidate (the top of each indicator,
which the probes stage picks from) plus an even stride through the vocabulary;
every other token is placed at the mean map position of its nearest fitted
tokens (cosine in the 50-dimensional PCA space t-SNE itself reads). So every
token, probed controls included, has a place on the map, and ``fitted`` says
which places t-SNE computed.

Shapes: ``d_vocab`` rows, ``d_model`` columns, as in ``embedding_stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.manifold import TSNE
from torch import Tensor

from ingest.compute.batching import AdaptiveBatches

PCA_DIMS = 50  # what t-SNE reads, as is customary: denoises and makes the neighbour search cheap
PLACEMENT_NEIGHBORS = 5
PLACEMENT_CHUNK = 8192


@dataclass(frozen=True)
class ProjectionParams:
    fit_points: int = 2000  # t-SNE sample size (anomalous candidates included): its cost grows with it
    keep_top: int = 500  # the top of each indicator always in the sample
    perplexity: float = 30.0
    iterations: int = 500  # sklearn's default 1000 doubles the cost for little visible change
    seed: int = 0


@dataclass
class Projection:
    """Map positions of every row, in the row order of the embedding matrix given."""

    pca: Tensor  # [d_vocab, 2]
    tsne: Tensor  # [d_vocab, 2]
    fitted: Tensor  # [d_vocab] bool: t-SNE computed this row's position (else placed by its nearest fitted rows)
    explained_variance: tuple[float, float]  # share of the total variance along each of the two principal axes


def principal_axes(centred: Tensor, n_components: int) -> tuple[Tensor, Tensor]:
    """Top principal directions of centred rows, largest first, and each one's share of the variance.

    centred [d_vocab, d_model] -> (axes [d_model, n_components], shares [n_components])
    """
    covariance = (centred.T @ centred).double()  # [d_model, d_model]: cheap even for 262k rows
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    shares = eigenvalues.flip(0)[:n_components] / eigenvalues.sum().clamp(min=1e-30)
    return eigenvectors[:, -n_components:].flip(1).to(centred.dtype), shares.float()


def principal_components(embed: Tensor, n_components: int) -> tuple[Tensor, Tensor]:
    """Scores on the top principal axes and each axis's share of the variance.

    embed [d_vocab, d_model] -> (scores [d_vocab, n_components], shares [n_components])
    """
    centred = embed - embed.mean(dim=0, keepdim=True)
    axes, shares = principal_axes(centred, n_components)
    return centred @ axes, shares


def sample_rows(keep_rows: Tensor, n_rows: int, n_points: int) -> Tensor:
    """``keep_rows`` plus an even stride through ``range(n_rows)``, up to ``n_points`` in all (sorted, unique).  [k] -> [s]"""
    keep = torch.unique(keep_rows.cpu())
    n_stride = max(0, n_points - keep.numel())
    stride = torch.linspace(0, n_rows - 1, steps=min(n_stride, n_rows)).round().long() if n_stride else keep[:0]
    return torch.unique(torch.cat([keep, stride]))


def place_by_neighbors(features: Tensor, fitted_rows: Tensor, fitted_positions: Tensor, n_neighbors: int = PLACEMENT_NEIGHBORS) -> Tensor:
    """Map position of every row: the mean position of its ``n_neighbors`` most cosine-similar fitted rows.

    features [d_vocab, f], fitted_rows [s], fitted_positions [s, 2] -> [d_vocab, 2]
    """
    unit = torch.nn.functional.normalize(features, dim=1)
    anchors = unit[fitted_rows.to(unit.device)]  # [s, f]
    positions = fitted_positions.to(unit.device)
    k = min(n_neighbors, anchors.shape[0])

    def place(rows: Tensor) -> list[Tensor]:
        nearest = (unit[rows] @ anchors.T).topk(k, dim=1).indices  # [chunk, k]
        return [positions[nearest].mean(dim=1)]

    all_rows = torch.arange(unit.shape[0], device=unit.device)
    return torch.cat(AdaptiveBatches(PLACEMENT_CHUNK, unit.device).map(place, all_rows)).cpu()


def project_embeddings(embed: Tensor, keep_rows: Tensor, params: ProjectionParams = ProjectionParams()) -> Projection:
    """PCA (2 axes) of every row and a t-SNE map fitted on a sample that holds ``keep_rows``.

    embed [d_vocab, d_model] (on any device), keep_rows [k] row positions -> Projection.
    """
    n_rows = embed.shape[0]
    scores, shares = principal_components(embed.float(), min(PCA_DIMS, *embed.shape))
    fitted_rows = sample_rows(keep_rows, n_rows, params.fit_points)
    sample = scores[fitted_rows.to(scores.device)].cpu().numpy().astype(np.float32)
    # t-SNE needs more points than its perplexity; tiny vocabularies (tests) get a proportionate one.
    perplexity = min(params.perplexity, max(1.0, (len(sample) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=params.iterations, init="pca", random_state=params.seed).fit_transform(sample)
    fitted_positions = torch.from_numpy(tsne.astype(np.float32))
    placed = place_by_neighbors(scores, fitted_rows, fitted_positions)
    placed[fitted_rows] = fitted_positions  # fitted rows keep their own position, not their neighbours' mean
    fitted = torch.zeros(n_rows, dtype=torch.bool)
    fitted[fitted_rows] = True
    return Projection(
        pca=scores[:, :2].cpu(),
        tsne=placed,
        fitted=fitted,
        explained_variance=(float(shares[0]), float(shares[1]) if shares.numel() > 1 else 0.0),
    )
