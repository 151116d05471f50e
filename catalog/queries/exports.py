"""A model's tokens with every indicator and its verdict, as exports and the Python API read them."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy import Select, func, null, select
from sqlalchemy.orm import Session

from catalog.database import CatalogError
from catalog.queries.runs import find_model, latest_run_id
from catalog.queries.tokens import TOKEN_TABLE_COLUMNS, in_tokenizer
from catalog.schema import EmbeddingStat, Model, ProbeResult, ProbeTemplate, Token, TokenVerdict

VERDICT_COLUMNS = (
    TokenVerdict.verdict,
    TokenVerdict.max_target_prob,
    TokenVerdict.n_probes,
    TokenVerdict.n_passed,
    TokenVerdict.failure_category,
    TokenVerdict.selected_by,
)
STAT_COLUMNS = tuple(column for column in TOKEN_TABLE_COLUMNS if column.table is EmbeddingStat.__table__)
TOKEN_COLUMNS = tuple(column for column in TOKEN_TABLE_COLUMNS if column.table is Token.__table__)
EXPORT_COLUMN_NAMES = tuple(column.key for column in (*TOKEN_COLUMNS, *STAT_COLUMNS, *VERDICT_COLUMNS))


@dataclass(frozen=True)
class TokenSelection:
    """Which of a model's tokens: by verdict (of its latest probes run), category, and the top N of the anomaly ranking."""

    verdict: str | None = None
    category: str | None = None
    top: int | None = None


@dataclass(frozen=True)
class ModelRuns:
    """A catalogued model and the runs its exports read: latest succeeded embedding_stats and probes."""

    model: Model
    stats_run_id: int | None
    probes_run_id: int | None


def model_runs(session: Session, model_name: str) -> ModelRuns:
    model = find_model(session, model_name)
    return ModelRuns(model, latest_run_id(session, model.id, "embedding_stats"), latest_run_id(session, model.id, "probes"))


def selected_tokens_query(runs: ModelRuns, selection: TokenSelection) -> Select:
    """Every token of the model's tokenizer with its indicators (NULL without statistics) and verdict (NULL if
    not probed), most anomalous first; filtered by ``selection``. One-line errors for filters the runs cannot answer."""
    if selection.verdict is not None and runs.probes_run_id is None:
        raise CatalogError(f"model {runs.model.name!r} has not been probed yet: run `glitchdex probe {runs.model.spec}` (no verdicts to filter by)")
    if selection.top is not None and runs.stats_run_id is None:
        raise CatalogError(f"model {runs.model.name!r} has no embedding statistics: --top needs its anomaly ranking")
    stat_columns = STAT_COLUMNS if runs.stats_run_id is not None else tuple(null().label(c.key) for c in STAT_COLUMNS)
    query = select(*TOKEN_COLUMNS, *stat_columns, *VERDICT_COLUMNS).where(Token.tokenizer_id == runs.model.tokenizer_id)
    if runs.stats_run_id is not None:
        query = query.join(
            EmbeddingStat, (EmbeddingStat.run_id == runs.stats_run_id) & (EmbeddingStat.token_id == Token.token_id)
        ).order_by(EmbeddingStat.anomaly_rank)
    query = query.outerjoin(
        TokenVerdict, (TokenVerdict.run_id == (runs.probes_run_id or -1)) & (TokenVerdict.token_id == Token.token_id)
    ).order_by(Token.token_id)
    if selection.verdict is not None:
        query = query.where(TokenVerdict.verdict == selection.verdict)
    if selection.category is not None:
        query = query.where(Token.category == selection.category)
    if selection.top is not None:
        query = query.where(EmbeddingStat.anomaly_rank <= selection.top)
    return query


def tokens_frame(session: Session, runs: ModelRuns, selection: TokenSelection = TokenSelection()) -> pl.DataFrame:
    """:func:`selected_tokens_query` as a polars DataFrame, one column per field, typed even when empty."""
    result = session.execute(selected_tokens_query(runs, selection))
    columns = list(result.keys())
    rows = result.all()
    return pl.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(columns)}, strict=False)


def probe_transcripts_by_token(session: Session, probes_run_id: int, token_ids: list[int]) -> dict[int, list[dict]]:
    """Every probe of the given tokens in one probes run: token id -> probes in template order."""
    rows = session.execute(
        select(
            ProbeResult.token_id,
            ProbeTemplate.name.label("template"),
            ProbeTemplate.version,
            ProbeResult.output,
            ProbeResult.target_prob,
            ProbeResult.target_rank,
            ProbeResult.passed,
            ProbeResult.failure_category,
        )
        .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
        .where(ProbeResult.run_id == probes_run_id, ProbeResult.token_id.in_(token_ids))
        .order_by(ProbeResult.token_id, ProbeTemplate.id)
    ).all()
    transcripts: dict[int, list[dict]] = {}
    for row in rows:
        probe = dict(row._mapping)
        transcripts.setdefault(probe.pop("token_id"), []).append(probe)
    return transcripts


def category_counts(session: Session, tokenizer_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Token.category, func.count()).where(Token.tokenizer_id == tokenizer_id).group_by(Token.category).order_by(Token.category)
    ).all()
    return {category: count for category, count in rows}


def verdict_counts(session: Session, probes_run_id: int) -> dict[str, int]:
    rows = session.execute(
        select(TokenVerdict.verdict, func.count())
        .where(TokenVerdict.run_id == probes_run_id)
        .group_by(TokenVerdict.verdict)
        .order_by(TokenVerdict.verdict)
    ).all()
    return {verdict: count for verdict, count in rows}


@dataclass(frozen=True)
class FlaggedToken:
    token_id: int
    text: str
    reason: str  # verified, weakly_verified or anomalous


FLAG_ORDER = ("verified", "weakly_verified", "anomalous")


def flagged_tokens(session: Session, runs: ModelRuns, n_anomalous: int) -> dict[int, FlaggedToken]:
    """The tokens a data check reports: verified and weakly verified by the latest probes run, and the
    ``n_anomalous`` most anomalous non-special tokens of the latest statistics run; the strongest reason wins.
    Padding rows are left out: no text encodes to them, so data never holds them."""
    if runs.stats_run_id is None:
        raise CatalogError(f"model {runs.model.name!r} has no embedding statistics: run `glitchdex ingest {runs.model.spec}`")
    anomalous = select(Token.token_id, Token.text).join(
        EmbeddingStat, (EmbeddingStat.run_id == runs.stats_run_id) & (EmbeddingStat.token_id == Token.token_id)
    ).where(Token.tokenizer_id == runs.model.tokenizer_id, Token.is_special.is_(False), in_tokenizer(), EmbeddingStat.anomaly_rank <= n_anomalous)
    flagged = {row.token_id: FlaggedToken(row.token_id, row.text, "anomalous") for row in session.execute(anomalous)}
    if runs.probes_run_id is not None:
        probed = (
            select(Token.token_id, Token.text, TokenVerdict.verdict)
            .join(Token, (Token.tokenizer_id == TokenVerdict.tokenizer_id) & (Token.token_id == TokenVerdict.token_id))
            .where(TokenVerdict.run_id == runs.probes_run_id, TokenVerdict.verdict.in_(FLAG_ORDER[:2]), in_tokenizer())
        )
        flagged |= {row.token_id: FlaggedToken(row.token_id, row.text, row.verdict) for row in session.execute(probed)}
    return flagged


def ordinary_token_ids(session: Session, tokenizer_id: int) -> list[int]:
    """Non-special token ids of a tokenizer, padding rows left out (untrained like the rows a fix replaces), ascending."""
    ordinary = select(Token.token_id).where(Token.tokenizer_id == tokenizer_id, Token.is_special.is_(False), in_tokenizer())
    return list(session.scalars(ordinary.order_by(Token.token_id)))
