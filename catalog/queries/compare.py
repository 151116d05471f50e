"""The same string across tokenizers and models: shared strings, agreement between rankings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session, aliased

from catalog.keys import norm_key
from catalog.queries.runs import every_stat_of, latest_runs
from catalog.schema import (
    EmbeddingStat,
    Model,
    SharedStrings,
    Token,
    Tokenizer,
)


@dataclass(frozen=True)
class TokenAcrossTokenizers:
    tokenizer: str
    token_id: int
    piece: str
    category: str


def same_string_everywhere(session: Session, text: str) -> list[TokenAcrossTokenizers]:
    """Every token in the catalog whose normalised text equals ``text`` (stripped, NFKC)."""
    key = norm_key(text)
    if key is None:
        return []
    rows = session.execute(
        select(Tokenizer.name.label("tokenizer"), Token.token_id, Token.piece, Token.category)
        .join(Tokenizer, Tokenizer.id == Token.tokenizer_id)
        .where(Token.norm_key == key)
        .order_by(Tokenizer.name, Token.token_id)
    ).all()
    return [TokenAcrossTokenizers(**row._mapping) for row in rows]


# --- probes ------------------------------------------------------------------------


def same_string_status_query(text: str) -> Select | None:
    """Every token whose normalised text equals ``text``, with its rank in every model of its tokenizer."""
    key = norm_key(text)
    if key is None:
        return None
    latest = latest_runs("embedding_stats")
    return (
        select(
            Tokenizer.name.label("tokenizer"),
            Model.name.label("model"),
            Token.tokenizer_id,
            Token.token_id,
            Token.piece,
            Token.category,
            EmbeddingStat.anomaly_rank,
            EmbeddingStat.anomaly_score,
            Model.vocab_size,
        )
        .join(Tokenizer, Tokenizer.id == Token.tokenizer_id)
        .outerjoin(Model, Model.tokenizer_id == Token.tokenizer_id)
        .outerjoin(latest, latest.c.model_id == Model.id)
        .outerjoin(
            EmbeddingStat,
            (EmbeddingStat.run_id == latest.c.run_id)
            & (EmbeddingStat.tokenizer_id == Token.tokenizer_id)
            & (EmbeddingStat.token_id == Token.token_id),
        )
        .where(Token.norm_key == key)
        .order_by(Tokenizer.name, Token.token_id, Model.name)
    )


def shared_strings_query() -> Select:
    """For every pair of tokenizers, how many distinct normalised strings are a token in both (from ``shared_strings``)."""
    name_a, name_b = aliased(Tokenizer), aliased(Tokenizer)
    return (
        select(name_a.name.label("tokenizer_a"), name_b.name.label("tokenizer_b"), SharedStrings.n_strings.label("shared_strings"))
        .join(name_a, name_a.id == SharedStrings.tokenizer_a_id)
        .join(name_b, name_b.id == SharedStrings.tokenizer_b_id)
        .order_by(SharedStrings.tokenizer_a_id, SharedStrings.tokenizer_b_id)
    )


def shared_strings_of(tokenizer_id: int) -> Select:
    """``shared_strings`` rows of one tokenizer against every other one: (lower id, higher id, strings in both).

    Each distinct string of the tokenizer is looked up in the covering index ``ix_token_norm_key_tokenizer``,
    so the cost grows with this vocabulary, not with the catalog.
    """
    mine = select(Token.norm_key).where(Token.tokenizer_id == tokenizer_id, Token.norm_key.is_not(None)).distinct().subquery("mine")
    other = Token.tokenizer_id
    return (
        select(
            case((other < tokenizer_id, other), else_=tokenizer_id).label("tokenizer_a_id"),
            case((other < tokenizer_id, tokenizer_id), else_=other).label("tokenizer_b_id"),
            func.count(Token.norm_key.distinct()).label("n_strings"),  # another tokenizer may hold a string twice
        )
        .join(mine, mine.c.norm_key == Token.norm_key)
        .where(other != tokenizer_id)
        .group_by(other)
    )


def _strings_of_run(stats_run_id: int) -> Select:
    """Non-special tokens of a run grouped by normalised string; a string's best rank and score win."""
    return (
        select(
            Token.norm_key,
            func.min(EmbeddingStat.anomaly_rank).label("rank"),
            func.max(EmbeddingStat.anomaly_score).label("score"),
        )
        .join(Token, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .where(every_stat_of(stats_run_id), Token.norm_key.is_not(None), Token.is_special.is_(False))
        .group_by(Token.norm_key)
    )


def agreement_query(run_a: int, run_b: int) -> Select:
    """Strings that are a token of both runs' models, with each model's best rank and score."""
    a, b = _strings_of_run(run_a).subquery(), _strings_of_run(run_b).subquery()
    return select(
        a.c.norm_key, a.c.rank.label("rank_a"), a.c.score.label("score_a"), b.c.rank.label("rank_b"), b.c.score.label("score_b")
    ).join(b, b.c.norm_key == a.c.norm_key)


def anomalous_where_query(stats_run_ids: Sequence[int], top_k: int) -> Select:
    """Strings in the top ``top_k`` of any of the runs, with their best rank in each run's model (long format)."""
    candidates = (
        select(Token.norm_key)
        .join(EmbeddingStat, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .where(
            EmbeddingStat.run_id.in_(stats_run_ids),
            EmbeddingStat.anomaly_rank <= top_k,
            Token.norm_key.is_not(None),
            Token.is_special.is_(False),
        )
    )
    return (
        select(Token.norm_key, Model.name.label("model"), func.min(EmbeddingStat.anomaly_rank).label("rank"))
        .join(EmbeddingStat, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .join(Model, Model.id == EmbeddingStat.model_id)
        .where(every_stat_of(*stats_run_ids), Token.norm_key.in_(candidates), Token.is_special.is_(False))
        .group_by(Token.norm_key, Model.name)
    )
