"""Read-side API of the catalog, shared by the CLI and the dashboard.

Every query reads the latest *succeeded* run of a stage: failed runs have no
rows, the committed chunks of a still-running (resumable) probes run are
ignored, and older succeeded runs stay for history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError
from catalog.keys import norm_key
from catalog.schema import EmbeddingStat, IndicatorPrecision, IngestRun, Model, ProbeResult, ProbeTemplate, Token, Tokenizer, TokenVerdict

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


# --- probes ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenVerdictRow:
    token_id: int
    piece: str
    category: str
    selected_by: str
    verdict: str
    max_target_prob: float | None
    n_probes: int
    n_passed: int
    failure_category: str | None


@dataclass(frozen=True)
class ProbeTranscript:
    template: str
    version: int
    kind: str
    output: str
    target_prob: float
    target_rank: int
    position_probs: list[float]
    passed: bool
    failure_category: str | None


@dataclass(frozen=True)
class PrecisionRow:
    indicator: str
    n_selected: int
    n_tested: int
    n_verified: int
    n_weakly_verified: int
    precision: float | None
    precision_weak: float | None


def _probes_run(session: Session, model_name: str) -> tuple[Model, int]:
    model = find_model(session, model_name)
    run_id = latest_run_id(session, model.id, "probes")
    if run_id is None:
        raise CatalogError(f"model {model.name!r} has not been probed yet: run `glitchdex probe {model.spec}`")
    return model, run_id


def token_verdicts(session: Session, model_name: str, verdict: str | None = None, limit: int | None = None) -> list[TokenVerdictRow]:
    """Verdicts of the model's latest probes run, lowest target probability first."""
    model, run_id = _probes_run(session, model_name)
    query = (
        select(
            TokenVerdict.token_id,
            Token.piece,
            Token.category,
            TokenVerdict.selected_by,
            TokenVerdict.verdict,
            TokenVerdict.max_target_prob,
            TokenVerdict.n_probes,
            TokenVerdict.n_passed,
            TokenVerdict.failure_category,
        )
        .join(Token, (Token.tokenizer_id == TokenVerdict.tokenizer_id) & (Token.token_id == TokenVerdict.token_id))
        .where(TokenVerdict.run_id == run_id)
        .order_by(TokenVerdict.max_target_prob.asc().nulls_last(), TokenVerdict.token_id)
        .limit(limit)
    )
    if verdict is not None:
        query = query.where(TokenVerdict.verdict == verdict)
    return [TokenVerdictRow(**row._mapping) for row in session.execute(query).all()]


def probe_transcripts(session: Session, model_name: str, token_id: int) -> list[ProbeTranscript]:
    """Every probe of one token in the model's latest probes run, in template order."""
    _, run_id = _probes_run(session, model_name)
    rows = session.execute(
        select(
            ProbeTemplate.name.label("template"),
            ProbeTemplate.version,
            ProbeTemplate.kind,
            ProbeResult.output,
            ProbeResult.target_prob,
            ProbeResult.target_rank,
            ProbeResult.position_probs,
            ProbeResult.passed,
            ProbeResult.failure_category,
        )
        .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
        .where(ProbeResult.run_id == run_id, ProbeResult.token_id == token_id)
        .order_by(ProbeTemplate.id)
    ).all()
    return [ProbeTranscript(**row._mapping) for row in rows]


def indicator_precision(session: Session, model_name: str) -> list[PrecisionRow]:
    """Share of each indicator's top-N candidates (and of the control sample) that the latest probes run verified."""
    _, run_id = _probes_run(session, model_name)
    rows = session.execute(
        select(
            IndicatorPrecision.indicator,
            IndicatorPrecision.n_selected,
            IndicatorPrecision.n_tested,
            IndicatorPrecision.n_verified,
            IndicatorPrecision.n_weakly_verified,
            IndicatorPrecision.precision,
            IndicatorPrecision.precision_weak,
        )
        .where(IndicatorPrecision.run_id == run_id)
        .order_by(IndicatorPrecision.indicator)
    ).all()
    return [PrecisionRow(**row._mapping) for row in rows]
