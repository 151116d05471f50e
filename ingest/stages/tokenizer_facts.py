"""Stage ``tokenizer_facts``: register the tokenizer (with its token facts) and the model, once per vocabulary.

A model whose embedding matrix has more rows than its tokenizer has ids (padded to a multiple of 64 or
128) adds those rows to the tokenizer as ``[PADn]`` placeholder tokens, so its statistics, probes and
verdicts can refer to them. The tokenizer stays one row per vocabulary: it holds the padding of its most
padded model (models with the same vocabulary differ only there, e.g. Qwen2.5-0.5B's 151,936 rows and
Qwen2.5-7B's 152,064), and each model's stages read the token ids below its own row count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import Connection

from catalog.database import CatalogError, bulk_insert, columns_to_rows, insert_missing, insert_unless_exists
from catalog.queries.compare import shared_strings_of
from catalog.schema import Model, SharedStrings, Token, Tokenizer, utcnow
from ingest.compute.tokenizer_facts import padding_facts, summarize
from ingest.load.models import LoadedModel
from ingest.stages.runs import StageResult, finish_run, insert_run


def check_vocabulary_fits_embeddings(loaded: LoadedModel) -> None:
    if not loaded.has_weights:
        return
    needed = max(loaded.vocabulary.token_ids) + 1
    if loaded.embedding_rows < needed:
        raise CatalogError(
            f"tokenizer has {needed} token ids but the embedding matrix has {loaded.embedding_rows} rows: "
            "tokenizer and weights do not belong together"
        )


@dataclass(frozen=True)
class ModelRecord:
    """The tokenizer and model rows of a loaded model, as plain data (a cluster worker sends it back)."""

    tokenizer: dict[str, Any]  # content_hash, name, kind
    model: dict[str, Any]  # model columns except tokenizer_id
    first_padding_id: int  # one past the tokenizer's last id: embedding rows from here on are padding


def model_record(loaded: LoadedModel) -> ModelRecord:
    source = loaded.source
    return ModelRecord(
        tokenizer={"content_hash": loaded.vocabulary.content_hash, "name": loaded.name, "kind": loaded.vocabulary.kind},
        model={
            "name": loaded.name,
            "spec": loaded.spec,
            "source_kind": source.kind,
            "source": source.location if not source.gguf_file else f"{source.location}/{source.gguf_file}",
            "revision": loaded.revision,
            "architecture": loaded.architecture,
            "vocab_size": loaded.embedding_rows,
            "hidden_size": loaded.hidden_size,
            "tied_embeddings": loaded.tied_embeddings,
            "n_params": loaded.n_params,
        },
        first_padding_id=max(loaded.vocabulary.token_ids) + 1,
    )


def register_model(
    engine: Engine, record: ModelRecord, compute_facts: Callable[[], dict[str, list[Any]]]
) -> tuple[int, int, dict[str, list[Any]] | None]:
    """Get or create the tokenizer (with its token facts) and the model, safe against concurrent ingests.

    Returns (model id, tokenizer id, the facts of the tokens this call catalogued, or None if none:
    the whole vocabulary the first time, else the padding rows this model adds, if any).
    """
    content_hash = record.tokenizer["content_hash"]
    facts: dict[str, list[Any]] | None = None
    with engine.begin() as conn:
        tokenizer_id = _existing_tokenizer(conn, content_hash)
        if tokenizer_id is None:
            facts = compute_facts()
            tokenizer_id = _insert_tokenizer(conn, record, facts)
        if tokenizer_id is None:  # a concurrent ingest catalogued the same vocabulary first
            facts = None
            tokenizer_id = _existing_tokenizer(conn, content_hash)
        padding = _add_padding_rows(conn, record, tokenizer_id)
        model_id = _get_or_create_model(conn, record, tokenizer_id)
    if padding is None:
        return model_id, tokenizer_id, facts
    return model_id, tokenizer_id, padding if facts is None else {name: facts[name] + padding[name] for name in facts}


def _existing_tokenizer(conn: Connection, content_hash: str) -> int | None:
    return conn.scalar(select(Tokenizer.id).where(Tokenizer.content_hash == content_hash))


def _insert_tokenizer(conn: Connection, record: ModelRecord, facts: dict[str, list[Any]]) -> int | None:
    values = {**record.tokenizer, "vocab_size": len(facts["token_id"]), "n_special": sum(facts["is_special"]), "created_at": utcnow()}
    tokenizer_id = insert_unless_exists(conn, Tokenizer.__table__, values, unique=["content_hash"])
    if tokenizer_id is not None:
        bulk_insert(conn, Token.__table__, columns_to_rows(facts, tokenizer_id=tokenizer_id))
        _count_shared_strings(conn, tokenizer_id)
    return tokenizer_id


def _count_shared_strings(conn: Connection, tokenizer_id: int) -> None:
    """Add the new tokenizer's pairs to ``shared_strings`` (its tokens are final: padding rows have no string)."""
    if conn.dialect.name == "postgresql":
        # Held until commit: of two tokenizers catalogued at once, the later one waits and then sees the other's tokens.
        conn.execute(text("LOCK TABLE shared_strings IN EXCLUSIVE MODE"))
    columns = ["tokenizer_a_id", "tokenizer_b_id", "n_strings"]
    conn.execute(insert(SharedStrings).from_select(columns, shared_strings_of(tokenizer_id)))


def _add_padding_rows(conn: Connection, record: ModelRecord, tokenizer_id: int) -> dict[str, list[Any]] | None:
    """Catalogue the model's embedding rows beyond the tokenizer's ids that no earlier model added; their facts, or None."""
    last = conn.scalar(select(func.max(Token.token_id)).where(Token.tokenizer_id == tokenizer_id))
    start = max(record.first_padding_id, last + 1)
    if start >= record.model["vocab_size"]:
        return None
    facts = padding_facts(range(start, record.model["vocab_size"]))
    # A concurrent ingest of an equally padded model may insert the same rows: theirs are identical.
    insert_missing(conn, Token.__table__, columns_to_rows(facts, tokenizer_id=tokenizer_id), unique=["tokenizer_id", "token_id"])
    return facts


def _model_id(conn: Connection, record: ModelRecord) -> int | None:
    return conn.scalar(select(Model.id).where(Model.name == record.model["name"], Model.revision == record.model["revision"]))


def _get_or_create_model(conn: Connection, record: ModelRecord, tokenizer_id: int) -> int:
    model_id = _model_id(conn, record)
    if model_id is None:
        values = {**record.model, "tokenizer_id": tokenizer_id, "created_at": utcnow()}
        model_id = insert_unless_exists(conn, Model.__table__, values, unique=["name", "revision"])
    if model_id is None:  # a concurrent ingest of the same model inserted it first
        model_id = _model_id(conn, record)
    return model_id


def record_tokenizer_stage(engine: Engine, model_id: int, facts: dict[str, list[Any]] | None, seconds: float) -> StageResult:
    """Facts belong to the tokenizer; a model whose tokenizer is already catalogued reuses them (and records
    a run only for the padding rows it adds)."""
    if facts is None:
        return StageResult("tokenizer_facts", "skipped", None, seconds, detail="tokenizer already catalogued")
    params = {"categories": summarize(facts)}
    with engine.begin() as conn:
        run_id = insert_run(conn, model_id, "tokenizer_facts", params, device="cpu")
        finish_run(conn, run_id, "succeeded", n_rows=len(facts["token_id"]), seconds=seconds)
    return StageResult("tokenizer_facts", "succeeded", run_id, seconds, len(facts["token_id"]))
