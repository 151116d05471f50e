"""Optimiser-found prompts: success per target, method and role."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, Select, Subquery, cast, func, select
from sqlalchemy.orm import Session

from catalog.queries.runs import find_model, latest_run_id
from catalog.schema import (
    IngestRun,
    Model,
    PromptSearch,
    Token,
    TokenVerdict,
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
    budget_steps: int | None
    restarts: int | None


@dataclass(frozen=True)
class Elicitability:
    """How far every search got in making the model emit one token (all methods together)."""

    token_id: int
    piece: str
    target_role: str
    elicited: bool  # some method's prompt made greedy decoding emit the token
    best_logprob: float
    best_rank: int
    steps: int  # spent, all methods
    restarts: int
    budget_steps: int | None  # the largest step budget any method had
    verdict: str | None  # of the latest probes run, if it probed the token


def _latest_searches(model_id: int) -> Subquery:
    """(token_id, method, run_id): the latest succeeded run that searched each (token, method) of a model.

    Runs searching different target lists complement each other, so the latest
    run is chosen per (token, method) rather than per model.
    """
    return (
        select(PromptSearch.token_id, PromptSearch.method, func.max(PromptSearch.run_id).label("run_id"))
        .join(IngestRun, IngestRun.id == PromptSearch.run_id)
        .where(PromptSearch.model_id == model_id, IngestRun.status == "succeeded")
        .group_by(PromptSearch.token_id, PromptSearch.method)
        .subquery()
    )


def _any_success() -> ColumnElement[int]:
    """Over one token's latest searches: 1 if any method's prompt made greedy decoding emit it, else 0."""
    return func.max(cast(PromptSearch.greedy_emits, Integer))


def _searched(model_id: int) -> Select:
    """Aggregates over each token's latest searches (all methods) start from here: add columns, then group by token."""
    latest = _latest_searches(model_id)
    return select().join_from(
        PromptSearch, latest, (latest.c.run_id == PromptSearch.run_id) & (latest.c.token_id == PromptSearch.token_id) & (latest.c.method == PromptSearch.method)
    )


def best_search_query(model_id: int) -> Select:
    """(token_id, best_logprob, elicited, run_id): every searched token of a model, all methods' latest searches together.

    ``run_id`` is the latest run among them, so a reader can tell which searches it saw.
    """
    return (
        _searched(model_id)
        .add_columns(
            PromptSearch.token_id,
            func.max(PromptSearch.target_logprob).label("best_logprob"),
            (_any_success() == 1).label("elicited"),
            func.max(PromptSearch.run_id).label("run_id"),
        )
        .group_by(PromptSearch.token_id)
        .order_by(PromptSearch.token_id)
    )


def prompt_results(session: Session, model_name: str, method: str | None = None) -> list[PromptResult]:
    """Each target's prompt-search result from the latest succeeded run that searched it, hardest first."""
    model = find_model(session, model_name)
    query = (
        _searched(model.id)
        .add_columns(
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
            PromptSearch.budget_steps,
            PromptSearch.restarts,
        )
        .join(Token, (Token.tokenizer_id == PromptSearch.tokenizer_id) & (Token.token_id == PromptSearch.token_id))
        .join(Model, Model.id == PromptSearch.model_id)
        .order_by(PromptSearch.method, PromptSearch.target_logprob, PromptSearch.token_id)
    )
    if method is not None:
        query = query.where(PromptSearch.method == method)
    return [PromptResult(**row._mapping) for row in session.execute(query).all()]


def elicitability(
    session: Session, model_name: str, *, elicited: bool | None = None, min_budget: int = 0, verdict: str | None = None
) -> list[Elicitability]:
    """Per searched token: whether any method elicited it, the best log-prob and rank reached, the effort; hardest first.

    ``elicited=False, min_budget=B, verdict="verified"``: verified glitch tokens that no
    search with a budget of at least B steps could make the model emit.
    """
    model = find_model(session, model_name)
    probes_run = latest_run_id(session, model.id, "probes")
    budget = func.max(PromptSearch.budget_steps)
    query = (
        _searched(model.id)
        .add_columns(
            PromptSearch.token_id,
            Token.piece,
            func.min(PromptSearch.target_role).label("target_role"),
            (_any_success() == 1).label("elicited"),
            func.max(PromptSearch.target_logprob).label("best_logprob"),
            func.min(PromptSearch.target_rank).label("best_rank"),
            func.sum(PromptSearch.steps).label("steps"),
            func.coalesce(func.sum(PromptSearch.restarts), 0).label("restarts"),
            budget.label("budget_steps"),
            TokenVerdict.verdict,
        )
        .join(Token, (Token.tokenizer_id == PromptSearch.tokenizer_id) & (Token.token_id == PromptSearch.token_id))
        .outerjoin(TokenVerdict, (TokenVerdict.run_id == probes_run) & (TokenVerdict.token_id == PromptSearch.token_id))
        .group_by(PromptSearch.token_id, Token.piece, TokenVerdict.verdict)
        .having(func.coalesce(budget, 0) >= min_budget)
        .order_by(func.max(PromptSearch.target_logprob), PromptSearch.token_id)
    )
    if elicited is not None:
        query = query.having(_any_success() == int(elicited))
    if verdict is not None:
        query = query.where(TokenVerdict.verdict == verdict)
    return [Elicitability(**{**row._mapping, "elicited": bool(row.elicited)}) for row in session.execute(query).all()]


# --- nokens ----------------------------------------------------------------------------
# Every succeeded nokens run is its own experiment (space, layer, mode), so these read a
# chosen run; the default is the model's latest one.
