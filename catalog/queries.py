"""Read-side API of the catalog, shared by the CLI and the dashboard.

Every query reads the latest *succeeded* run of a stage: rows of failed or
interrupted runs never exist, and older succeeded runs stay for history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError
from catalog.keys import norm_key
from catalog.schema import EmbeddingStat, IngestRun, Model, PromptSearch, Token, Tokenizer

RANKINGS = {
    "anomaly_score": EmbeddingStat.anomaly_rank.asc(),
    "unused_cos": EmbeddingStat.unused_cos.desc(),
    "centroid_dist": EmbeddingStat.centroid_dist.asc(),
    "embed_norm": EmbeddingStat.embed_norm.asc(),
}


@dataclass(frozen=True)
class AnomalousToken:
    model: str
    token_id: int
    piece: str
    text: str
    category: str
    embed_norm: float
    centroid_dist: float
    unused_cos: float
    anomaly_score: float
    anomaly_rank: int


def find_model(session: Session, name: str) -> Model:
    """A model by id, exact name, spec or a unique name substring; the newest revision wins."""
    if name.isdigit():
        model = session.get(Model, int(name))
        if model is not None:
            return model
    exact = session.scalars(
        select(Model).where(or_(Model.name == name, Model.spec == name)).order_by(Model.id.desc())
    ).first()
    if exact is not None:
        return exact
    matches = session.scalars(select(Model).where(Model.name.contains(name, autoescape=True))).all()
    if len({m.name for m in matches}) == 1:
        return max(matches, key=lambda m: m.id)
    if matches:
        raise CatalogError(f"model {name!r} is ambiguous: {', '.join(sorted({m.name for m in matches}))}")
    raise CatalogError(f"no model {name!r} in the catalog (see `glitchdex models`)")


def latest_run_id(session: Session, model_id: int, stage: str) -> int | None:
    return session.scalar(
        select(IngestRun.id)
        .where(IngestRun.model_id == model_id, IngestRun.stage == stage, IngestRun.status == "succeeded")
        .order_by(IngestRun.id.desc())
        .limit(1)
    )


def top_anomalous_query(run_id: int, by: str = "anomaly_score", include_special: bool = False) -> Select:
    if by not in RANKINGS:
        raise CatalogError(f"unknown ranking {by!r}; choose one of {', '.join(RANKINGS)}")
    query = (
        select(
            Model.name.label("model"),
            EmbeddingStat.token_id,
            Token.piece,
            Token.text,
            Token.category,
            EmbeddingStat.embed_norm,
            EmbeddingStat.centroid_dist,
            EmbeddingStat.unused_cos,
            EmbeddingStat.anomaly_score,
            EmbeddingStat.anomaly_rank,
        )
        .join(Token, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .join(Model, Model.id == EmbeddingStat.model_id)
        .where(EmbeddingStat.run_id == run_id)
        .order_by(RANKINGS[by], EmbeddingStat.token_id)
    )
    return query if include_special else query.where(Token.is_special.is_(False))


def top_anomalous(
    session: Session, model_name: str, limit: int = 20, by: str = "anomaly_score", include_special: bool = False
) -> list[AnomalousToken]:
    model = find_model(session, model_name)
    run_id = latest_run_id(session, model.id, "embedding_stats")
    if run_id is None:
        raise CatalogError(f"model {model.name!r} has no embedding statistics yet (tokenizer-only or not ingested)")
    rows = session.execute(top_anomalous_query(run_id, by, include_special).limit(limit)).all()
    return [AnomalousToken(**row._mapping) for row in rows]


@dataclass(frozen=True)
class ModelSummary:
    id: int
    name: str
    source_kind: str
    architecture: str | None
    vocab_size: int
    hidden_size: int | None
    tokenizer: str
    tokenizer_kind: str
    stats_run: int | None


def list_models(session: Session) -> list[ModelSummary]:
    latest_stats = (
        select(IngestRun.model_id, func.max(IngestRun.id).label("run_id"))
        .where(IngestRun.stage == "embedding_stats", IngestRun.status == "succeeded")
        .group_by(IngestRun.model_id)
        .subquery()
    )
    rows = session.execute(
        select(
            Model.id,
            Model.name,
            Model.source_kind,
            Model.architecture,
            Model.vocab_size,
            Model.hidden_size,
            Tokenizer.name.label("tokenizer"),
            Tokenizer.kind.label("tokenizer_kind"),
            latest_stats.c.run_id.label("stats_run"),
        )
        .join(Tokenizer, Tokenizer.id == Model.tokenizer_id)
        .outerjoin(latest_stats, latest_stats.c.model_id == Model.id)
        .order_by(Model.id)
    ).all()
    return [ModelSummary(**row._mapping) for row in rows]


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
