"""The trained-mean row fix on a small tensor (vectorised, in place, device-generic)."""

from __future__ import annotations

import torch

from ingest.compute.embedding_fix import set_rows_to_trained_mean


def test_untrained_rows_become_the_mean_of_trained_rows_and_nothing_else_changes():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 4, generator=generator)
    weight[[7, 8]] = 0.0  # never-updated rows
    before = weight.clone()
    fix = set_rows_to_trained_mean(weight, [7, 8], trained_ids=list(range(6)))
    expected = before[:6].mean(dim=0)
    torch.testing.assert_close(weight[[7, 8]], expected.expand(2, -1))
    assert torch.equal(weight[[0, 1, 2, 3, 4, 5, 6, 9]], before[[0, 1, 2, 3, 4, 5, 6, 9]])  # row 6 and 9: neither list
    assert fix.token_ids == [7, 8] and fix.old_norms.tolist() == [0.0, 0.0]
    torch.testing.assert_close(fix.new_norms, expected.norm().expand(2))


def test_half_precision_weights_keep_their_dtype():
    weight = torch.ones(6, 3, dtype=torch.bfloat16)
    weight[5] = 100
    set_rows_to_trained_mean(weight, [5], [0, 1, 2])
    assert weight.dtype == torch.bfloat16 and weight[5].tolist() == [1.0, 1.0, 1.0]
