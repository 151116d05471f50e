"""Embedding indicators on constructed matrices whose answers are known."""

from __future__ import annotations

import pytest
import torch

from ingest.compute.embedding_stats import (
    StatsParams,
    centroid_bootstrap_rows,
    compute_embedding_stats,
    high_is_anomalous_pct,
    kmeans_with_stability,
    low_is_anomalous_pct,
    nearest_neighbors,
    reference_unused_ids,
    remove_first_principal_component,
)

SMALL = StatsParams(n_clusters=4, n_seeds=3, n_neighbor_tokens=5, n_neighbors=3, kmeans_batch_size=256)


def trained_and_untrained(n_trained: int = 300, n_untrained: int = 12, d_model: int = 32, seed: int = 0) -> torch.Tensor:
    """Rows 0..n_trained-1 spread out with norm ~5; the rest stay near a shared init point (under-trained)."""
    gen = torch.Generator().manual_seed(seed)
    trained = torch.randn(n_trained, d_model, generator=gen) * 1.0 + torch.randn(d_model, generator=gen) * 0.5
    init = torch.randn(d_model, generator=gen) * 0.05
    untrained = init + 0.01 * torch.randn(n_untrained, d_model, generator=gen)
    return torch.cat([trained, untrained])


def test_percentiles_put_extremes_at_one():
    values = torch.tensor([3.0, 1.0, 2.0, 5.0])
    assert low_is_anomalous_pct(values).tolist() == pytest.approx([1 / 3, 1.0, 2 / 3, 0.0])
    assert high_is_anomalous_pct(values).tolist() == pytest.approx([2 / 3, 0.0, 1 / 3, 1.0])


def test_first_principal_component_is_removed():
    gen = torch.Generator().manual_seed(1)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0)
    matrix = torch.randn(500, 16, generator=gen) * 0.1 + torch.randn(500, 1, generator=gen) * 10 * direction
    projected = remove_first_principal_component(matrix)
    assert projected.mean(0).abs().max() < 1e-4
    assert (projected @ direction).abs().max() < 0.05 * (matrix @ direction).abs().max()


def test_under_trained_rows_rank_first_with_unused_reference():
    embed = trained_and_untrained()
    ids = list(range(embed.shape[0]))
    untrained = set(range(300, 312))
    reference = [300, 301, 302]  # known unused placeholders
    stats = compute_embedding_stats(embed, None, ids, reference, params=SMALL, device="cpu")
    top = set(torch.argsort(stats.anomaly_rank)[:12].tolist())
    assert top == untrained
    assert stats.anomaly_rank.min() == 1 and sorted(stats.anomaly_rank.tolist()) == list(range(1, 313))
    assert not stats.bootstrapped_reference and stats.n_reference == 3
    assert set(torch.argsort(stats.embed_norm)[:12].tolist()) == untrained


def test_reference_is_bootstrapped_from_the_centroid_when_none_is_known():
    embed = trained_and_untrained()
    stats = compute_embedding_stats(embed, embed, list(range(embed.shape[0])), [], params=SMALL, device="cpu")
    assert stats.bootstrapped_reference and stats.n_reference == 10
    assert stats.unembed_norm is None  # tied: same tensor
    assert set(torch.argsort(stats.anomaly_rank)[:12].tolist()) == set(range(300, 312))


def test_bootstrap_skips_ineligible_rows():
    distances = torch.arange(20.0)
    eligible = torch.ones(20, dtype=torch.bool)
    eligible[:5] = False
    assert centroid_bootstrap_rows(distances, eligible, fraction=0.0).tolist() == list(range(5, 15))


def test_reference_rules():
    ids = [0, 1, 2, 3]
    pieces = ["<unused0>", "a", "b", "[unused1]"]
    assert reference_unused_ids(ids, pieces, [b"", b"a", b"b", b""], [False] * 4)[0] == [0, 3]
    found, rule = reference_unused_ids(ids, ["x", "a", "b", "c"], [b"\xff", b"a", b"\xc3", b"c"], [False, False, False, True])
    assert found == [0, 3] and "UTF-8" in rule


def test_kmeans_stability_is_one_on_separated_clusters():
    gen = torch.Generator().manual_seed(2)
    centres = torch.eye(4, 8) * 50
    data = torch.cat([c + torch.randn(50, 8, generator=gen) for c in centres])
    labels, stability, found_centres = kmeans_with_stability(data, 4, 4, 64)
    assert stability.min() == 1.0
    assert len(set(labels.tolist())) == 4 and found_centres.shape == (4, 8)
    for block in range(4):
        assert len(set(labels[block * 50 : (block + 1) * 50].tolist())) == 1


def test_nearest_neighbors_exclude_self():
    embed = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.2]])
    rows, cos = nearest_neighbors(embed, torch.tensor([0, 2]), n_neighbors=2, chunk=1)
    assert rows[0].tolist() == [1, 2] and rows[1].tolist() == [1, 0]
    assert cos[0, 0] > 0.99 and (cos[:, 0] >= cos[:, 1]).all()


def test_token_id_subset_and_padding_rows():
    embed = trained_and_untrained()
    ids = list(range(0, 312, 2))  # only even rows are tokens; the rest play padding
    stats = compute_embedding_stats(embed, None, ids, [300, 302], params=SMALL, device="cpu")
    assert stats.token_ids.tolist() == ids
    assert set(stats.neighbor_ids.flatten().tolist()) <= set(ids)
    assert stats.embed_norm.shape == (len(ids),)
