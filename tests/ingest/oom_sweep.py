"""A probe sweep under an address-space limit, so its first batches cannot allocate their logits.

Run as ``python -m tests.ingest.oom_sweep`` (test_batching.py does, in a subprocess:
the limit would otherwise cramp the test process); prints a JSON report. The
model is a tiny random Llama with a large vocabulary, so logits dominate memory;
the tokenizer (only used to render the prompt) is a hand-made byte-level BPE.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ingest.compute.probes import TEMPLATES_BY_NAME, Prober
from tests.ingest.handmade import byte_level_bpe

VOCAB = 65536  # a [2048, VOCAB] float32 logits step is 512 MiB
REQUESTED = 2048
N_TOKENS = 1024 + 100
HEADROOM = 256 << 20


def address_space_in_use() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def sweep(model: torch.nn.Module, tokenizer, token_ids: list[int], batch_size: int) -> tuple[Prober, list]:
    template = TEMPLATES_BY_NAME["echo_fewshot"]
    prober = Prober(model, tokenizer, [template], mode="sweep", positions=3, batch_size=batch_size, device="cpu")
    return prober, prober.run([(token_id, template) for token_id in token_ids])


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tokenizer, _ = byte_level_bpe()
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2
    )
    model = LlamaForCausalLM(config).eval()
    token_ids = list(range(N_TOKENS))
    sweep(model, tokenizer, token_ids[:2], batch_size=2)  # allocator, threads and caches warmed up before the limit

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space_in_use() + HEADROOM, hard))
    start = time.perf_counter()
    try:
        prober, limited = sweep(model, tokenizer, token_ids, batch_size=REQUESTED)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    seconds_with_fallback = time.perf_counter() - start
    used = prober.batches.batch_size
    start = time.perf_counter()
    _, unlimited = sweep(model, tokenizer, token_ids, batch_size=used)
    seconds_at_that_size = time.perf_counter() - start
    outcome = [(r.token_id, r.output_ids, r.position_ranks) for r in limited]
    print(json.dumps({
        "requested": REQUESTED,
        "batch_size_used": used,
        "n_tokens": len(token_ids),
        "n_records": len(limited),
        "same_as_unlimited_run": outcome == [(r.token_id, r.output_ids, r.position_ranks) for r in unlimited],
        "seconds_with_fallback": round(seconds_with_fallback, 3),
        "seconds_at_that_size": round(seconds_at_that_size, 3),
    }))


if __name__ == "__main__":
    main()
