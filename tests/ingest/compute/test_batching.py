"""Out-of-memory fallback: halve the batch and retry, down to one; a real allocator failure in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catalog.database import CatalogError
from ingest.compute.batching import AdaptiveBatches, is_out_of_memory

REPO_ROOT = Path(__file__).resolve().parents[3]


def fits_below(limit: int, calls: list[int]):
    """A batched function that runs out of memory (as CUDA reports it) on batches larger than ``limit``."""

    def doubled(batch):
        calls.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(batch)} GiB")
        return [2 * x for x in batch]

    return doubled


def test_out_of_memory_halves_the_batch_retries_it_and_keeps_the_smaller_size():
    calls: list[int] = []
    batches = AdaptiveBatches(16)
    assert batches.map(fits_below(5, calls), list(range(40))) == [2 * x for x in range(40)]
    assert calls == [16, 8] + [4] * 10  # 16 and 8 failed; ten batches of 4 did the work
    assert batches.batch_size == 4


def test_out_of_memory_at_batch_size_one_is_a_one_line_error():
    with pytest.raises(CatalogError, match=r"out of memory on cpu even with a batch of 1: CUDA out of memory\. Tried to allocate 1 GiB$"):
        AdaptiveBatches(4).map(fits_below(0, []), [1, 2, 3])


def test_other_errors_are_not_retried():
    calls = []

    def broken(batch):
        calls.append(len(batch))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveBatches(8).map(broken, list(range(10)))
    assert calls == [8]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory."), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 805306368 bytes."), True),
        (RuntimeError("MPS backend out of memory"), True),
        (RuntimeError("Expected all tensors to be on the same device"), False),
        (MemoryError(), False),  # Python's own allocator: the interpreter is in trouble, not one batch
    ],
)
def test_what_counts_as_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def test_a_real_cpu_allocator_failure_falls_back_to_a_batch_that_fits():
    """A sweep whose logits exceed an address-space limit set just above the process's usage (see oom_sweep.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.ingest.oom_sweep"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requested"] > report["batch_size_used"] >= 1
    assert "out of memory on cpu with a batch of" in result.stderr
    assert report["n_records"] == report["n_tokens"]
    assert report["same_as_unlimited_run"]
