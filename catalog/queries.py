"""Read-side API of the catalog, shared by the CLI and the dashboard.

Every query reads the latest *succeeded* run of a stage: failed runs have no
rows, the committed chunks of a still-running (resumable) probes run are
ignored, and older succeeded runs stay for history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, case, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from catalog.database import CatalogError
from catalog.keys import norm_key
from catalog.schema import (
    Cluster,
    EmbeddingStat,
    IndicatorPrecision,
    IngestRun,
    Model,
    Neighbor,
    Noken,
    NokenProbeResult,
    ProbeResult,
    ProbeTemplate,
    PromptSearch,
    Token,
    Tokenizer,
    TokenVerdict,
)

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


def require_run(session: Session, model_name: str, stage: str, missing: str) -> tuple[Model, int]:
    """The catalogued model and its latest succeeded ``stage`` run; else a one-line error, ``missing``
    saying what is lacking (``{spec}`` becomes the model's spec)."""
    model = find_model(session, model_name)
    run_id = latest_run_id(session, model.id, stage)
    if run_id is None:
        raise CatalogError(f"model {model.name!r} {missing.format(spec=model.spec)}")
    return model, run_id


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
    _, run_id = require_run(session, model_name, "embedding_stats", "has no embedding statistics yet (tokenizer-only or not ingested)")
    rows = session.execute(top_anomalous_query(run_id, by, include_special).limit(limit)).all()
    return [AnomalousToken(**row._mapping) for row in rows]


@dataclass(frozen=True)
class ModelSummary:
    id: int
    name: str
    spec: str
    source_kind: str
    architecture: str | None
    vocab_size: int
    hidden_size: int | None
    tokenizer_id: int
    tokenizer: str
    tokenizer_kind: str
    stats_run: int | None


def latest_runs(stage: str) -> Subquery:
    """(model_id, run_id) of the latest succeeded run of ``stage`` for every model."""
    return (
        select(IngestRun.model_id, func.max(IngestRun.id).label("run_id"))
        .where(IngestRun.stage == stage, IngestRun.status == "succeeded")
        .group_by(IngestRun.model_id)
        .subquery()
    )


def list_models(session: Session) -> list[ModelSummary]:
    latest_stats = latest_runs("embedding_stats")
    rows = session.execute(
        select(
            Model.id,
            Model.name,
            Model.spec,
            Model.source_kind,
            Model.architecture,
            Model.vocab_size,
            Model.hidden_size,
            Model.tokenizer_id,
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
    return require_run(session, model_name, "probes", "has not been probed yet: run `glitchdex probe {spec}`")


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

# --- browsing (the dashboard) --------------------------------------------------------
# These build SELECTs; the dashboard runs them, caches the results and pages them.


def catalog_version(session: Session) -> tuple[int, int | None, str | None]:
    """Changes whenever an ingest run starts or ends: the key that invalidates cached results."""
    n_runs, last_run, last_finish = session.execute(
        select(func.count(IngestRun.id), func.max(IngestRun.id), func.max(IngestRun.finished_at))
    ).one()
    return n_runs, last_run, None if last_finish is None else str(last_finish)


def tokenizers_query() -> Select:
    n_models = select(Model.tokenizer_id, func.count().label("n_models")).group_by(Model.tokenizer_id).subquery()
    return (
        select(
            Tokenizer.id,
            Tokenizer.name,
            Tokenizer.kind,
            Tokenizer.vocab_size,
            Tokenizer.n_special,
            func.coalesce(n_models.c.n_models, 0).label("n_models"),
        )
        .outerjoin(n_models, n_models.c.tokenizer_id == Tokenizer.id)
        .order_by(Tokenizer.id)
    )


def category_counts_query() -> Select:
    return (
        select(Tokenizer.name.label("tokenizer"), Token.category, func.count().label("n_tokens"))
        .join(Tokenizer, Tokenizer.id == Token.tokenizer_id)
        .group_by(Tokenizer.id, Tokenizer.name, Token.category)
        .order_by(Tokenizer.id, Token.category)
    )


def recent_runs_query(limit: int) -> Select:
    return (
        select(
            IngestRun.id,
            Model.name.label("model"),
            IngestRun.stage,
            IngestRun.status,
            IngestRun.n_rows,
            IngestRun.seconds,
            IngestRun.device,
            IngestRun.started_at,
            IngestRun.finished_at,
            IngestRun.error,
        )
        .join(Model, Model.id == IngestRun.model_id)
        .order_by(IngestRun.id.desc())
        .limit(limit)
    )


@dataclass(frozen=True)
class TokenFilter:
    """Filters of a model's token table; empty fields filter nothing."""

    categories: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()
    text: str = ""
    rank_min: int | None = None
    rank_max: int | None = None
    include_special: bool = True

    def token_conditions(self) -> list[ColumnElement[bool]]:
        conditions = []
        if self.categories:
            conditions.append(Token.category.in_(self.categories))
        if self.scripts:
            conditions.append(Token.script.in_(self.scripts))
        if self.text:
            conditions.append(
                or_(Token.text.icontains(self.text, autoescape=True), Token.piece.icontains(self.text, autoescape=True))
            )
        if not self.include_special:
            conditions.append(Token.is_special.is_(False))
        return conditions

    def stat_conditions(self) -> list[ColumnElement[bool]]:
        conditions = []
        if self.rank_min is not None:
            conditions.append(EmbeddingStat.anomaly_rank >= self.rank_min)
        if self.rank_max is not None:
            conditions.append(EmbeddingStat.anomaly_rank <= self.rank_max)
        return conditions


TOKEN_TABLE_COLUMNS = (
    Token.token_id,
    Token.piece,
    Token.text,
    Token.category,
    Token.script,
    Token.n_bytes,
    Token.is_special,
    Token.is_unreachable,
    EmbeddingStat.anomaly_rank,
    EmbeddingStat.anomaly_score,
    EmbeddingStat.unused_cos,
    EmbeddingStat.unused_cos_pct,
    EmbeddingStat.embed_norm,
    EmbeddingStat.embed_norm_pct,
    EmbeddingStat.unembed_norm,
    EmbeddingStat.centroid_dist,
    EmbeddingStat.centroid_dist_pct,
    EmbeddingStat.centroid_cos,
    EmbeddingStat.cluster_id,
    EmbeddingStat.cluster_stability,
)
TOKEN_TABLE_SORTS = {column.key: column for column in TOKEN_TABLE_COLUMNS}


@dataclass(frozen=True)
class TokenTable:
    """A model's token table: every token of its tokenizer with the indicators of one embedding_stats run.

    Pages are found in two steps so that a 262k vocabulary stays fast in SQLite (which
    joins only by nested loops): first the page's token ids from the one table that
    holds the sort column, filtered there and by ``IN`` on the other table; then both
    tables' columns for those ids only.
    """

    tokenizer_id: int
    stats_run_id: int | None
    token_filter: TokenFilter = TokenFilter()

    def count_query(self) -> Select:
        if self.stats_run_id is None:
            return select(func.count()).select_from(self._without_stats().subquery())
        # Every token of the tokenizer has a row in its models' embedding_stats runs.
        if not self.token_filter.stat_conditions():
            return select(func.count()).select_from(self._token_ids().subquery())
        return select(func.count()).select_from(self._stat_ids().subquery())

    def page_query(self, sort: str, descending: bool, page: int, page_size: int) -> Select:
        """One page ordered by the output column ``sort``; the token id breaks ties."""
        if sort not in TOKEN_TABLE_SORTS:
            raise CatalogError(f"cannot sort by {sort!r}; choose one of {', '.join(TOKEN_TABLE_SORTS)}")
        column = TOKEN_TABLE_SORTS[sort]
        if self.stats_run_id is None:
            return _ordered_page(self._without_stats(), column, Token.token_id, descending, page, page_size)
        ids = self._stat_ids() if column.table is EmbeddingStat.__table__ else self._token_ids(with_stat_conditions=True)
        if column is not Token.token_id:
            ids = ids.add_columns(column)
        id_column = ids.selected_columns[0]
        keys = _ordered_page(ids, column, id_column, descending, page, page_size).subquery()
        return (
            select(*TOKEN_TABLE_COLUMNS)
            .select_from(keys)
            .join(Token, (Token.tokenizer_id == self.tokenizer_id) & (Token.token_id == keys.c[id_column.key]))
            .join(EmbeddingStat, (EmbeddingStat.run_id == self.stats_run_id) & (EmbeddingStat.token_id == keys.c[id_column.key]))
            .order_by(_direction(keys.c[sort], descending), keys.c[id_column.key])
        )

    def _token_ids(self, with_stat_conditions: bool = False) -> Select:
        ids = select(Token.token_id).where(Token.tokenizer_id == self.tokenizer_id, *self.token_filter.token_conditions())
        if with_stat_conditions and self.token_filter.stat_conditions():
            ids = ids.where(Token.token_id.in_(self._stat_ids(with_token_conditions=False)))
        return ids

    def _stat_ids(self, with_token_conditions: bool = True) -> Select:
        ids = select(EmbeddingStat.token_id).where(EmbeddingStat.run_id == self.stats_run_id, *self.token_filter.stat_conditions())
        # Always restricted to the tokenizer's ids: embedding matrices may have padding rows beyond the vocabulary.
        return ids.where(EmbeddingStat.token_id.in_(self._token_ids())) if with_token_conditions else ids

    def _without_stats(self) -> Select:
        """Tokenizer-only models: token facts, indicator columns NULL."""
        filters = self.token_filter
        return (
            select(*TOKEN_TABLE_COLUMNS)
            .select_from(Token)
            .outerjoin(EmbeddingStat, false())
            .where(Token.tokenizer_id == self.tokenizer_id, *filters.token_conditions(), *filters.stat_conditions())
        )


def _direction(column: ColumnElement[Any], descending: bool) -> ColumnElement[Any]:
    return column.desc() if descending else column.asc()


def _ordered_page(query: Select, column: ColumnElement[Any], tie_breaker: ColumnElement[Any], descending: bool, page: int, page_size: int) -> Select:
    return query.order_by(_direction(column, descending), tie_breaker).limit(page_size).offset(page * page_size)


def scatter_sample_query(stats_run_id: int, n_top: int, stride: int) -> Select:
    """The ``n_top`` most anomalous tokens plus every ``stride``-th token id: a plot-sized sample of the vocabulary."""
    return (
        select(
            EmbeddingStat.token_id,
            Token.piece,
            Token.category,
            EmbeddingStat.cluster_id,
            EmbeddingStat.embed_norm,
            EmbeddingStat.centroid_dist,
            EmbeddingStat.unused_cos,
            EmbeddingStat.anomaly_rank,
        )
        .join(Token, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .where(
            EmbeddingStat.run_id == stats_run_id,
            or_(EmbeddingStat.anomaly_rank <= n_top, EmbeddingStat.token_id % stride == 0),
        )
    )


def clusters_query(stats_run_id: int, n_top: int) -> Select:
    """Clusters of a run with how many of the ``n_top`` most anomalous tokens each holds."""
    anomalous = (
        select(EmbeddingStat.cluster_id, func.count().label("n_anomalous"))
        .where(EmbeddingStat.run_id == stats_run_id, EmbeddingStat.anomaly_rank <= n_top)
        .group_by(EmbeddingStat.cluster_id)
        .subquery()
    )
    return (
        select(
            Cluster.cluster_id,
            Cluster.size,
            Cluster.centroid_norm,
            Cluster.dist_to_global_centroid,
            Cluster.mean_stability,
            func.coalesce(anomalous.c.n_anomalous, 0).label("n_anomalous"),
        )
        .outerjoin(anomalous, anomalous.c.cluster_id == Cluster.cluster_id)
        .where(Cluster.run_id == stats_run_id)
        .order_by(Cluster.cluster_id)
    )


def token_facts_query(tokenizer_id: int, token_id: int) -> Select:
    return (
        select(Tokenizer.name.label("tokenizer"), Tokenizer.kind.label("tokenizer_kind"), *Token.__table__.columns)
        .join(Tokenizer, Tokenizer.id == Token.tokenizer_id)
        .where(Token.tokenizer_id == tokenizer_id, Token.token_id == token_id)
    )


def token_stats_query(tokenizer_id: int, token_id: int) -> Select:
    """The token's indicators in the latest embedding_stats run of every model that uses its tokenizer."""
    latest = latest_runs("embedding_stats")
    return (
        select(
            Model.name.label("model"),
            Model.vocab_size,
            *(c for c in TOKEN_TABLE_COLUMNS if c.table is EmbeddingStat.__table__),
            Cluster.size.label("cluster_size"),
            EmbeddingStat.run_id,
        )
        .join(latest, latest.c.run_id == EmbeddingStat.run_id)
        .join(Model, Model.id == EmbeddingStat.model_id)
        .outerjoin(Cluster, (Cluster.run_id == EmbeddingStat.run_id) & (Cluster.cluster_id == EmbeddingStat.cluster_id))
        .where(EmbeddingStat.tokenizer_id == tokenizer_id, EmbeddingStat.token_id == token_id)
        .order_by(Model.name)
    )


def token_neighbors_query(tokenizer_id: int, token_id: int) -> Select:
    """Stored nearest neighbours of the token in every model's latest run, with the neighbours' own ranks."""
    latest = latest_runs("embedding_stats")
    neighbor = aliased(Token)
    neighbor_stat = aliased(EmbeddingStat)
    return (
        select(
            Model.name.label("model"),
            Neighbor.rank,
            Neighbor.neighbor_token_id,
            neighbor.piece,
            neighbor.category,
            Neighbor.cosine,
            neighbor_stat.anomaly_rank,
        )
        .join(latest, latest.c.run_id == Neighbor.run_id)
        .join(Model, Model.id == latest.c.model_id)
        .join(neighbor, (neighbor.tokenizer_id == Neighbor.tokenizer_id) & (neighbor.token_id == Neighbor.neighbor_token_id))
        .outerjoin(
            neighbor_stat,
            (neighbor_stat.run_id == Neighbor.run_id) & (neighbor_stat.token_id == Neighbor.neighbor_token_id),
        )
        .where(Neighbor.tokenizer_id == tokenizer_id, Neighbor.token_id == token_id)
        .order_by(Model.name, Neighbor.rank)
    )


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


def search_tokens_query(text: str, limit: int) -> Select:
    """Tokens of any tokenizer whose text or piece contains ``text`` (any case); exact (normalised) matches first."""
    key = norm_key(text)
    exact = Token.norm_key == key if key is not None else Token.norm_key.is_(None) & Token.text.is_(None)
    return (
        select(Tokenizer.name.label("tokenizer"), Token.tokenizer_id, Token.token_id, Token.piece, Token.text, Token.category)
        .join(Tokenizer, Tokenizer.id == Token.tokenizer_id)
        .where(or_(exact, Token.text.icontains(text, autoescape=True), Token.piece.icontains(text, autoescape=True)))
        .order_by(case((exact, 0), else_=1), Token.n_chars, Tokenizer.name, Token.token_id)
        .limit(limit)
    )


def shared_strings_query() -> Select:
    """For every pair of tokenizers, how many distinct normalised strings are a token in both."""
    a, b = aliased(Token), aliased(Token)
    name_a, name_b = aliased(Tokenizer), aliased(Tokenizer)
    return (
        select(
            name_a.name.label("tokenizer_a"),
            name_b.name.label("tokenizer_b"),
            func.count(func.distinct(a.norm_key)).label("shared_strings"),
        )
        .select_from(a)
        .join(b, (b.norm_key == a.norm_key) & (b.tokenizer_id > a.tokenizer_id))
        .join(name_a, name_a.id == a.tokenizer_id)
        .join(name_b, name_b.id == b.tokenizer_id)
        .group_by(name_a.id, name_a.name, name_b.id, name_b.name)
        .order_by(name_a.id, name_b.id)
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
        .where(EmbeddingStat.run_id == stats_run_id, Token.norm_key.is_not(None), Token.is_special.is_(False))
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
        .where(EmbeddingStat.run_id.in_(stats_run_ids), Token.norm_key.in_(candidates), Token.is_special.is_(False))
        .group_by(Token.norm_key, Model.name)
    )


FILTERABLE_FACTS = {"category": Token.category, "script": Token.script}


def fact_values(session: Session, tokenizer_id: int, fact: str) -> list[str]:
    """Distinct values of a filterable token fact in one tokenizer (the options of a filter)."""
    column = FILTERABLE_FACTS[fact]
    return list(session.scalars(select(column).where(Token.tokenizer_id == tokenizer_id).distinct().order_by(column)))

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


@dataclass(frozen=True)
class NokenRunRow:
    run_id: int
    space: str
    layer: int | None
    mode: str
    n_nokens: int
    finished_at: Any


def noken_runs_query(model_id: int) -> Select:
    """The model's succeeded nokens runs, newest first."""
    return (
        select(IngestRun.id.label("run_id"), Noken.space, Noken.layer, Noken.mode, func.count().label("n_nokens"), IngestRun.finished_at)
        .join(Noken, Noken.run_id == IngestRun.id)
        .where(IngestRun.model_id == model_id, IngestRun.stage == "nokens", IngestRun.status == "succeeded")
        .group_by(IngestRun.id, Noken.space, Noken.layer, Noken.mode, IngestRun.finished_at)
        .order_by(IngestRun.id.desc())
    )


def noken_runs(session: Session, model_name: str) -> list[NokenRunRow]:
    model = find_model(session, model_name)
    return [NokenRunRow(**row._mapping) for row in session.execute(noken_runs_query(model.id)).all()]


def _noken_run(session: Session, model_name: str, run_id: int | None) -> int:
    """The given run if it is one of the model's succeeded nokens runs, else its latest; a one-line error if none."""
    runs = [row.run_id for row in noken_runs(session, model_name)]
    if not runs:
        raise CatalogError(f"model {model_name!r} has no nokens run yet: run `glitchdex nokens {model_name}` first")
    if run_id is not None and run_id not in runs:
        raise CatalogError(f"run {run_id} is not a succeeded nokens run of {model_name!r}; its runs: {', '.join(map(str, runs))}")
    return run_id if run_id is not None else runs[0]


@dataclass(frozen=True)
class NokenGeneratorRow:
    generator: str
    n_nokens: int
    n_verified: int
    n_weakly_verified: int
    glitch_share: float
    mean_max_target_prob: float | None
    mean_kl_from_baseline: float
    output_changed_share: float
    mean_nearest_cos: float
    mean_norm_pct: float
    mean_rms_z_pct: float


def noken_summary_query(run_id: int) -> Select:
    """Per generator: verdicts, how far outputs moved from the real nearest token's, and how out-of-distribution the vectors are."""
    per_noken = (
        select(
            NokenProbeResult.noken_id,
            func.avg(NokenProbeResult.kl_from_baseline).label("kl"),
            func.avg(case((NokenProbeResult.output_changed, 1.0), else_=0.0)).label("changed"),
        )
        .where(NokenProbeResult.run_id == run_id)
        .group_by(NokenProbeResult.noken_id)
        .subquery()
    )
    verified = func.sum(case((Noken.verdict == "verified", 1), else_=0))
    weak = func.sum(case((Noken.verdict == "weakly_verified", 1), else_=0))
    glitch_share = ((verified + weak) * 1.0 / func.count()).label("glitch_share")
    return (
        select(
            Noken.generator,
            func.count().label("n_nokens"),
            verified.label("n_verified"),
            weak.label("n_weakly_verified"),
            glitch_share,
            func.avg(Noken.max_target_prob).label("mean_max_target_prob"),
            func.avg(per_noken.c.kl).label("mean_kl_from_baseline"),
            func.avg(per_noken.c.changed).label("output_changed_share"),
            func.avg(Noken.nearest_cos).label("mean_nearest_cos"),
            func.avg(Noken.norm_pct).label("mean_norm_pct"),
            func.avg(Noken.rms_z_pct).label("mean_rms_z_pct"),
        )
        .join(per_noken, per_noken.c.noken_id == Noken.noken_id)
        .where(Noken.run_id == run_id)
        .group_by(Noken.generator)
        .order_by(glitch_share.desc(), Noken.generator)
    )


def noken_summary(session: Session, model_name: str, run_id: int | None = None) -> list[NokenGeneratorRow]:
    """Which generator makes the most glitch-like nokens, in the given (default: latest) nokens run."""
    query = noken_summary_query(_noken_run(session, model_name, run_id))
    return [NokenGeneratorRow(**row._mapping) for row in session.execute(query).all()]


def nokens_query(run_id: int) -> Select:
    """Every noken of a run with its nearest real token's piece."""
    return (
        select(
            Noken.noken_id,
            Noken.generator,
            Noken.details,
            Noken.verdict,
            Noken.max_target_prob,
            Noken.failure_category,
            Token.piece.label("nearest_piece"),
            Noken.nearest_cos,
            Noken.norm,
            Noken.norm_pct,
            Noken.centroid_dist_pct,
            Noken.rms_z,
            Noken.rms_z_pct,
            Noken.source_token_id,
            Noken.source2_token_id,
        )
        .join(Token, (Token.tokenizer_id == Noken.tokenizer_id) & (Token.token_id == Noken.nearest_token_id))
        .where(Noken.run_id == run_id)
        .order_by(Noken.noken_id)
    )


def noken_transcripts_query(run_id: int, noken_id: int) -> Select:
    """One noken's probes beside the same probes of its nearest real token."""
    return (
        select(
            ProbeTemplate.name.label("template"),
            NokenProbeResult.output,
            NokenProbeResult.baseline_output,
            NokenProbeResult.target_prob,
            NokenProbeResult.target_rank,
            NokenProbeResult.passed,
            NokenProbeResult.failure_category,
            NokenProbeResult.kl_from_baseline,
            NokenProbeResult.output_changed,
        )
        .join(ProbeTemplate, ProbeTemplate.id == NokenProbeResult.template_id)
        .where(NokenProbeResult.run_id == run_id, NokenProbeResult.noken_id == noken_id)
        .order_by(ProbeTemplate.name)
    )


def noken_transcripts(session: Session, model_name: str, noken_id: int, run_id: int | None = None) -> list[Any]:
    """One noken's probes beside its nearest real token's (given or latest nokens run); a one-line error for an unknown noken."""
    run = _noken_run(session, model_name, run_id)
    rows = session.execute(noken_transcripts_query(run, noken_id)).all()
    if not rows:
        raise CatalogError(f"nokens run {run} has no noken {noken_id}")
    return rows
