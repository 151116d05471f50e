"""The usual fix for untrained embedding rows before fine-tuning: set them to the mean of the trained rows.

Untrained rows sit far from where gradient updates can move them sensibly (tiny or huge norms, a
shared direction), which gives NaN losses or garbage when fine-tuning data contains those tokens;
the mean of trained rows is an in-distribution starting point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RowFix:
    """Norms of the changed rows before and after.  Shapes: [n_rows]."""

    token_ids: list[int]
    old_norms: Tensor
    new_norms: Tensor


def mean_of_rows(weight: Tensor, row_ids: Sequence[int], device: str = "cpu") -> Tensor:
    """Mean of the given rows, in float32.  weight: [d_vocab, d_model] -> [d_model]."""
    index = torch.as_tensor(list(row_ids), dtype=torch.long, device=weight.device)
    return weight.detach().index_select(0, index).to(device=device, dtype=torch.float32).mean(dim=0)


@torch.no_grad()
def set_rows_to_trained_mean(weight: Tensor, untrained_ids: Sequence[int], trained_ids: Sequence[int], device: str = "cpu") -> RowFix:
    """Overwrite ``weight[untrained_ids]`` (in place) with the mean of ``weight[trained_ids]``.  weight: [d_vocab, d_model]."""
    index = torch.as_tensor(list(untrained_ids), dtype=torch.long, device=weight.device)
    mean = mean_of_rows(weight, trained_ids, device)
    old_norms = weight.index_select(0, index).float().norm(dim=1).cpu()
    weight.index_copy_(0, index, mean.to(device=weight.device, dtype=weight.dtype).expand(len(index), -1).contiguous())
    new_norms = weight.index_select(0, index).float().norm(dim=1).cpu()
    return RowFix(list(untrained_ids), old_norms, new_norms)
