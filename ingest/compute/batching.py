"""Batched tensor work that survives running out of memory: halve the batch and retry.

A batch size that suits one GPU (or a quiet CPU) runs out of memory on a smaller
one or next to another job. :class:`AdaptiveBatches` runs a function batch by
batch; when a batch fails with out-of-memory (``torch.OutOfMemoryError`` on CUDA,
or the CPU allocator's "can't allocate memory") it frees the cached memory,
halves the batch size and retries that batch. The smaller size sticks for the
batches after it, and ``batch_size`` says what was finally used, so a stage can
record it. Halving stops at 1: out of memory there is a one-line CatalogError.

Results do not depend on the batch size except through floating-point
reduction order (batched kernels), which can flip near-tied greedy choices.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from catalog.database import CatalogError, first_line

log = logging.getLogger("glitchdex.batching")

Item = TypeVar("Item")
Result = TypeVar("Result")
# What allocators say when they fail (CUDA's OutOfMemoryError is also caught by type).
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in OUT_OF_MEMORY_MESSAGES)


def free_cached_memory(device: str | torch.device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class AdaptiveBatches:
    """Run a function over items in batches of at most ``batch_size``, halving the size on out-of-memory."""

    def __init__(self, batch_size: int, device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise CatalogError(f"batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.device = device

    def map(self, fn: Callable[[Sequence[Item]], list[Result]], items: Sequence[Item]) -> list[Result]:
        """``fn(batch)`` for consecutive batches of ``items``, concatenated; every item goes through exactly one successful call."""
        results: list[Result] = []
        start = 0
        while start < len(items):
            batch = items[start : start + self.batch_size]
            try:
                results.extend(fn(batch))
                start += len(batch)
                continue
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failure = first_line(exc)
            # Out here the traceback (and the failed batch's tensors it holds) is gone, so freeing works.
            self._shrink(failure)
        return results

    def _shrink(self, failure: str) -> None:
        free_cached_memory(self.device)
        if self.batch_size == 1:
            raise CatalogError(f"out of memory on {self.device} even with a batch of 1: {failure}")
        smaller = self.batch_size // 2
        log.warning("out of memory on %s with a batch of %d; retrying with %d (%s)", self.device, self.batch_size, smaller, failure)
        self.batch_size = smaller
