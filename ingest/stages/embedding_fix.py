"""Stage ``embedding_fix``: record which rows of a model copy `glitchdex check --fix` changed, in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from catalog.database import bulk_insert
from catalog.schema import EmbeddingFix
from ingest.compute.embedding_fix import RowFix
from ingest.stages.runs import finish_run, insert_run


def record_embedding_fix(
    engine: Engine, model_id: int, tokenizer_id: int, params: dict[str, Any], fixes: dict[str, RowFix], reasons: dict[int, str], seconds: float, device: str
) -> int:
    """One succeeded ``embedding_fix`` run and a row per changed (token, matrix); returns the run id."""
    rows = [
        {
            "token_id": token_id,
            "matrix": matrix,
            "model_id": model_id,
            "tokenizer_id": tokenizer_id,
            "reason": reasons[token_id],
            "old_norm": float(old),
            "new_norm": float(new),
        }
        for matrix, fix in fixes.items()
        for token_id, old, new in zip(fix.token_ids, fix.old_norms.tolist(), fix.new_norms.tolist())
    ]
    with engine.begin() as conn:
        run_id = insert_run(conn, model_id, "embedding_fix", params, device=device)
        bulk_insert(conn, EmbeddingFix.__table__, [{**row, "run_id": run_id} for row in rows])
        finish_run(conn, run_id, "succeeded", n_rows=len(rows), seconds=seconds)
    return run_id
