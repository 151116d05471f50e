"""A token's card and a model's map: transcripts, found prompts, nearby nokens, indicator histograms, map points.

Every query reads the latest succeeded run of its stage per model, as the rest of the read side does.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, Select, case, cast, func, or_, select
from sqlalchemy.orm import aliased

from catalog.queries.runs import every_stat_of, latest_runs
from catalog.schema import (
    EmbeddingProjection,
    EmbeddingStat,
    IngestRun,
    Model,
    Noken,
    NokenNeighbor,
    ProbeResult,
    ProbeTemplate,
    PromptSearch,
    Token,
    TokenVerdict,
)

# Indicators with a histogram, and their percentiles (1.0 = most anomalous end).
INDICATORS = {"unused_cos": EmbeddingStat.unused_cos, "embed_norm": EmbeddingStat.embed_norm, "centroid_dist": EmbeddingStat.centroid_dist}
INDICATOR_PCTS = {"unused_cos": EmbeddingStat.unused_cos_pct, "embed_norm": EmbeddingStat.embed_norm_pct, "centroid_dist": EmbeddingStat.centroid_dist_pct}


def token_verdicts_query(tokenizer_id: int, token_id: int) -> Select:
    """The token's verdict in the latest probes run of every model of its tokenizer."""
    latest = latest_runs("probes")
    return (
        select(Model.name.label("model"), TokenVerdict.verdict, TokenVerdict.failure_category, TokenVerdict.max_target_prob, TokenVerdict.n_probes, TokenVerdict.n_passed)
        .join(latest, latest.c.run_id == TokenVerdict.run_id)
        .join(Model, Model.id == TokenVerdict.model_id)
        .where(TokenVerdict.tokenizer_id == tokenizer_id, TokenVerdict.token_id == token_id)
        .order_by(Model.name)
    )


def token_transcripts_query(tokenizer_id: int, token_id: int) -> Select:
    """Every probe of the token in the latest probes run of each model, with its template's text."""
    latest = latest_runs("probes")
    return (
        select(
            Model.name.label("model"),
            ProbeTemplate.name.label("template"),
            ProbeTemplate.kind,
            ProbeTemplate.chat,
            ProbeTemplate.text.label("prompt"),
            ProbeTemplate.response_prefix,
            ProbeResult.output,
            ProbeResult.target_prob,
            ProbeResult.target_rank,
            ProbeResult.passed,
            ProbeResult.failure_category,
        )
        .join(latest, latest.c.run_id == ProbeResult.run_id)
        .join(Model, Model.id == ProbeResult.model_id)
        .join(ProbeTemplate, ProbeTemplate.id == ProbeResult.template_id)
        .where(ProbeResult.tokenizer_id == tokenizer_id, ProbeResult.token_id == token_id)
        .order_by(Model.name, ProbeTemplate.id)
    )


def token_prompts_query(tokenizer_id: int, token_id: int) -> Select:
    """Prompts found for the token, from the latest succeeded run that searched it per model and method."""
    latest = (
        select(PromptSearch.model_id, PromptSearch.method, func.max(PromptSearch.run_id).label("run_id"))
        .join(IngestRun, IngestRun.id == PromptSearch.run_id)
        .where(IngestRun.status == "succeeded", PromptSearch.tokenizer_id == tokenizer_id, PromptSearch.token_id == token_id)
        .group_by(PromptSearch.model_id, PromptSearch.method)
        .subquery()
    )
    return (
        select(
            Model.name.label("model"),
            PromptSearch.method,
            PromptSearch.target_role,
            PromptSearch.prompt_text,
            PromptSearch.target_logprob,
            PromptSearch.target_rank,
            PromptSearch.greedy_emits,
            PromptSearch.reencodes,
        )
        .join(latest, (latest.c.run_id == PromptSearch.run_id) & (latest.c.method == PromptSearch.method))
        .join(Model, Model.id == PromptSearch.model_id)
        .where(PromptSearch.token_id == token_id)
        .order_by(Model.name, PromptSearch.method)
    )


def token_nokens_query(tokenizer_id: int, token_id: int) -> Select:
    """Nokens (of succeeded runs) that have this token among their nearest real tokens, nearest first."""
    return (
        select(
            Model.name.label("model"),
            Noken.model_id,
            NokenNeighbor.run_id,
            NokenNeighbor.noken_id,
            Noken.generator,
            Noken.space,
            NokenNeighbor.rank,
            NokenNeighbor.cosine,
            Noken.verdict,
        )
        .join(Noken, (Noken.run_id == NokenNeighbor.run_id) & (Noken.noken_id == NokenNeighbor.noken_id))
        .join(IngestRun, IngestRun.id == NokenNeighbor.run_id)
        .join(Model, Model.id == Noken.model_id)
        .where(IngestRun.status == "succeeded", NokenNeighbor.tokenizer_id == tokenizer_id, NokenNeighbor.token_id == token_id)
        .order_by(NokenNeighbor.cosine.desc())
        .limit(20)
    )


def indicator_histogram_query(stats_run_id: int, indicator: str, low: float, high: float, n_bins: int, verdict_run_id: int | None = None) -> Select:
    """Tokens per bin of one indicator (bins of equal width from ``low`` to ``high``).

    With ``verdict_run_id``: only the tokens that probes run judged, per bin and verdict (a few hundred
    rows, read from the verdict table first; a join from every token would cost a lookup per token).
    """
    column = INDICATORS[indicator]
    width = (high - low) / n_bins or 1.0
    raw_bin = cast(func.floor((cast(column, Float) - low) / width), Integer)
    bin_index = case((raw_bin >= n_bins, n_bins - 1), else_=raw_bin)  # the maximum itself falls in the last bin
    if verdict_run_id is None:
        return select(bin_index.label("bin"), func.count().label("n_tokens")).where(every_stat_of(stats_run_id)).group_by(bin_index)
    return (
        select(bin_index.label("bin"), TokenVerdict.verdict, func.count().label("n_tokens"))
        .select_from(TokenVerdict)
        .join(EmbeddingStat, (EmbeddingStat.run_id == stats_run_id) & (EmbeddingStat.token_id == TokenVerdict.token_id))
        .where(TokenVerdict.run_id == verdict_run_id)
        .group_by(bin_index, TokenVerdict.verdict)
    )


def indicator_range_query(stats_run_id: int) -> Select:
    """Minimum and maximum of every histogram indicator in one run."""
    bounds = []
    for name, column in INDICATORS.items():
        bounds += [func.min(column).label(f"{name}_min"), func.max(column).label(f"{name}_max")]
    return select(*bounds).where(every_stat_of(stats_run_id))


def map_points_query(stats_run_id: int, n_top: int, stride: int, verdict_run_id: int | None) -> Select:
    """Map positions of a plot-sized sample: the ``n_top`` most anomalous tokens, every probed token and every ``stride``-th token."""
    keep = [EmbeddingStat.anomaly_rank <= n_top, EmbeddingProjection.token_id % stride == 0]
    query = (
        select(
            EmbeddingProjection.token_id,
            Token.piece,
            Token.text,
            Token.category,
            EmbeddingProjection.pca_x,
            EmbeddingProjection.pca_y,
            EmbeddingProjection.tsne_x,
            EmbeddingProjection.tsne_y,
            EmbeddingProjection.tsne_fitted,
            EmbeddingStat.anomaly_rank,
            *INDICATORS.values(),
        )
        .join(EmbeddingStat, (EmbeddingStat.run_id == EmbeddingProjection.run_id) & (EmbeddingStat.token_id == EmbeddingProjection.token_id))
        .join(Token, (Token.tokenizer_id == EmbeddingProjection.tokenizer_id) & (Token.token_id == EmbeddingProjection.token_id))
        .where(EmbeddingProjection.run_id == stats_run_id)
    )
    if verdict_run_id is not None:
        verdict = aliased(TokenVerdict)
        query = query.add_columns(verdict.verdict).outerjoin(
            verdict, (verdict.run_id == verdict_run_id) & (verdict.token_id == EmbeddingProjection.token_id)
        )
        keep.append(verdict.verdict.is_not(None))
    return query.where(or_(*keep))
