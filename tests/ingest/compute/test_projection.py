"""The embedding map: PCA of every row, t-SNE on a sample that keeps the anomalous rows, the rest placed by neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from ingest.compute.projection import ProjectionParams, place_by_neighbors, principal_components, project_embeddings, sample_rows


def test_principal_components_equal_sklearn_up_to_sign():
    embed = torch.randn(500, 12) * torch.linspace(3, 0.5, 12)
    scores, shares = principal_components(embed, 2)
    reference = PCA(n_components=2).fit(embed.numpy())
    expected = reference.transform(embed.numpy())
    np.testing.assert_allclose(np.abs(scores.numpy()), np.abs(expected), atol=1e-3)
    np.testing.assert_allclose(shares.numpy(), reference.explained_variance_ratio_, atol=1e-5)


def test_sample_keeps_the_given_rows_and_spreads_the_rest():
    rows = sample_rows(torch.tensor([7, 3, 7, 999]), n_rows=1000, n_points=50)
    assert {3, 7, 999} <= set(rows.tolist())
    assert len(rows) <= 50 and rows.tolist() == sorted(set(rows.tolist()))
    assert rows.min() == 0 and rows.max() == 999  # the stride reaches both ends


def test_a_row_is_placed_where_its_nearest_fitted_rows_are():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [0.02, 1.0]])
    placed = place_by_neighbors(features, torch.tensor([0, 1]), torch.tensor([[10.0, 10.0], [-5.0, 0.0]]), n_neighbors=1)
    assert placed[2].tolist() == [10.0, 10.0] and placed[3].tolist() == [-5.0, 0.0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))])
def test_the_planted_under_trained_rows_are_fitted_and_sit_together(device):
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(3000, 32, generator=generator)
    planted = torch.arange(0, 3000, 100)  # 30 rows collapsed near one point, like decayed under-trained embeddings
    embed[planted] = 0.05 * torch.randn(len(planted), 32, generator=generator) + 0.3
    projection = project_embeddings(embed.to(device), planted, ProjectionParams(fit_points=400))

    assert projection.fitted[planted].all() and int(projection.fitted.sum()) <= 400
    assert torch.isfinite(projection.tsne).all() and projection.pca.shape == (3000, 2)
    centre = projection.tsne[planted].mean(dim=0)
    spread_planted = (projection.tsne[planted] - centre).norm(dim=1).median()
    others = torch.ones(3000, dtype=torch.bool)
    others[planted] = False
    spread_others = (projection.tsne[others] - centre).norm(dim=1).median()
    assert spread_planted < spread_others / 3
