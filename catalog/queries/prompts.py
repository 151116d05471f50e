"""Optimiser-found prompts: success per target, method and role."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.queries.runs import find_model
from catalog.schema import (
    IngestRun,
    Model,
    PromptSearch,
    Token,
)


@dataclass(frozen=True)
class PromptResult:
    model: str
    run_id: int
    token_id: int
    piece: str
    target_role: str
    method: str
    prompt_text: str
    target_logprob: float
    target_rank: int
    margin: float
    relaxed_logprob: float | None
    greedy_emits: bool
    reencodes: bool
    anomalous_allowed: bool
    steps: int


def prompt_results(session: Session, model_name: str, method: str | None = None) -> list[PromptResult]:
    """Each target's prompt-search result from the latest succeeded run that searched it, hardest first.

    Runs searching different target lists complement each other, so the latest
    run is chosen per (token, method) rather than per model.
    """
    model = find_model(session, model_name)
    latest = (
        select(PromptSearch.token_id, PromptSearch.method, func.max(PromptSearch.run_id).label("run_id"))
        .join(IngestRun, IngestRun.id == PromptSearch.run_id)
        .where(PromptSearch.model_id == model.id, IngestRun.status == "succeeded")
        .group_by(PromptSearch.token_id, PromptSearch.method)
        .subquery()
    )
    query = (
        select(
            Model.name.label("model"),
            PromptSearch.run_id,
            PromptSearch.token_id,
            Token.piece,
            PromptSearch.target_role,
            PromptSearch.method,
            PromptSearch.prompt_text,
            PromptSearch.target_logprob,
            PromptSearch.target_rank,
            PromptSearch.margin,
            PromptSearch.relaxed_logprob,
            PromptSearch.greedy_emits,
            PromptSearch.reencodes,
            PromptSearch.anomalous_allowed,
            PromptSearch.steps,
        )
        .join(latest, (latest.c.run_id == PromptSearch.run_id) & (latest.c.token_id == PromptSearch.token_id) & (latest.c.method == PromptSearch.method))
        .join(Token, (Token.tokenizer_id == PromptSearch.tokenizer_id) & (Token.token_id == PromptSearch.token_id))
        .join(Model, Model.id == PromptSearch.model_id)
        .order_by(PromptSearch.method, PromptSearch.target_logprob, PromptSearch.token_id)
    )
    if method is not None:
        query = query.where(PromptSearch.method == method)
    return [PromptResult(**row._mapping) for row in session.execute(query).all()]


# --- nokens ----------------------------------------------------------------------------
# Every succeeded nokens run is its own experiment (space, layer, mode), so these read a
# chosen run; the default is the model's latest one.
