"""One tokenizer's tokens: the anomaly ranking, the filtered and paged token table, a token's facts, statistics and neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, case, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from catalog.database import CatalogError
from catalog.keys import norm_key, readable_text
from catalog.queries.runs import every_stat_of, latest_runs, require_run
from catalog.schema import (
    Cluster,
    EmbeddingStat,
    Model,
    Neighbor,
    Token,
    Tokenizer,
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
    raw_bytes: bytes | None

    @property
    def readable(self) -> str:
        return readable_text(self.raw_bytes, self.piece)


def in_tokenizer() -> ColumnElement[bool]:
    """The tokenizer's own ids, padding rows left out: a ``[PADn]`` row alone has neither bytes nor is special
    (special tokens have no bytes; every other token of a tokenizer has some), and no text ever holds one."""
    return or_(Token.raw_bytes.is_not(None), Token.is_special.is_(True))


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
            Token.raw_bytes,
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
            Token.raw_bytes,
        )
        .join(Token, (Token.tokenizer_id == EmbeddingStat.tokenizer_id) & (Token.token_id == EmbeddingStat.token_id))
        .where(
            every_stat_of(stats_run_id),
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
            Model.id.label("model_id"),
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


FILTERABLE_FACTS = {"category": Token.category, "script": Token.script}


def fact_values(session: Session, tokenizer_id: int, fact: str) -> list[str]:
    """Distinct values of a filterable token fact in one tokenizer (the options of a filter)."""
    column = FILTERABLE_FACTS[fact]
    return list(session.scalars(select(column).where(Token.tokenizer_id == tokenizer_id).distinct().order_by(column)))
