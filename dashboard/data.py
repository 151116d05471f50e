"""Data access of the dashboard: one cached engine, cached query results, server-side paging.

Every query function runs queries of ``catalog.queries`` and returns plain data
(mostly pandas DataFrames). Results are cached with ``st.cache_data`` under the catalog's
version (ingest runs started/finished, tables present), so they refresh by
themselves after an ingest or a migration; pages never hold a whole
vocabulary, only the page of rows they show.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine, Select, inspect
from sqlalchemy.orm import Session

from catalog import queries
from catalog.database import CatalogError, current_revision, database_url, head_revision, make_engine, session_factory
from catalog.queries import StageStatus, TokenFilter, TokenTable
from catalog.schema import Model
from dashboard import later_tables

RECENT_RUNS = 20
SCATTER_TOP = 500
SCATTER_POINTS = 5000
SEARCH_LIMIT = 50
CACHE_ENTRIES = 256
STATUS_TTL_S = 60
REGISTRY = Path("models.toml")


HISTOGRAM_BINS = 60


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    """One engine (and connection pool) per database URL for the whole server."""
    return make_engine(url)


def current_engine() -> Engine:
    return engine(database_url())


@functools.cache
def code_head() -> str:
    return head_revision()


def check_schema() -> None:
    """The dashboard only reads: it refuses (rather than migrates) a catalog not at this code's revision."""
    current = current_revision(current_engine())
    if current != code_head():
        url = current_engine().url.render_as_string(hide_password=True)
        raise CatalogError(
            f"the catalog {url} is at revision {current or 'none (empty database)'}, this dashboard reads {code_head()}: "
            "run `glitchdex db upgrade` (or ingest a model)"
        )


def catalog_version() -> tuple[Any, ...]:
    """Cheap to read on every rerun: ingest runs plus the set of tables (a migration adds tables)."""
    current = current_engine()
    with session_factory(current)() as session:
        runs = queries.catalog_version(session)
    return (*runs, tuple(sorted(inspect(current).get_table_names())))


_QUERIES: dict[str, Callable[..., Any]] = {}


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner=False)
def _cached(name: str, url: str, version: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
    with session_factory(engine(url))() as session:
        return _QUERIES[name](session, *args)


def versioned(function: Callable[..., Any]) -> Callable[..., Any]:
    """Cache ``function(session, *args)`` per database URL, catalog version and arguments."""
    _QUERIES[function.__qualname__] = function

    @functools.wraps(function)
    def cached_call(*args: Any) -> Any:
        return _cached(function.__qualname__, database_url(), catalog_version(), args)

    return cached_call


def frame(session: Session, query: Select) -> pd.DataFrame:
    result = session.execute(query)
    return pd.DataFrame(result.all(), columns=list(result.keys()))


# --- overview -------------------------------------------------------------------------


@versioned
def models(session: Session) -> pd.DataFrame:
    return pd.DataFrame([m.__dict__ for m in queries.list_models(session)])


@versioned
def tokenizers(session: Session) -> pd.DataFrame:
    return frame(session, queries.tokenizers_query())


@versioned
def category_counts(session: Session) -> pd.DataFrame:
    """Tokenizers as rows, token categories as columns."""
    counts = frame(session, queries.category_counts_query())
    if counts.empty:
        return counts
    return counts.pivot(index="tokenizer", columns="category", values="n_tokens").fillna(0).astype(int)


@versioned
def recent_runs(session: Session) -> pd.DataFrame:
    return frame(session, queries.recent_runs_query(RECENT_RUNS))


@st.cache_data(ttl=STATUS_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _stage_status(url: str, version: tuple[Any, ...], registry: str | None) -> pd.DataFrame:
    # Imported here: the job layer pulls in torch, which no other page needs.
    from ingest.jobs.status import status_table

    rows = status_table(engine(url), registry=Path(registry) if registry else None)
    return pd.DataFrame([dataclasses.asdict(row) for row in rows], columns=[f.name for f in dataclasses.fields(StageStatus)])


def stage_status() -> pd.DataFrame:
    """Every (model, stage) state, as `glitchdex status` shows it; with ``models.toml`` in the working
    folder its due stages are pending. Refreshed after an ingest run, else every minute (claims of live runs)."""
    return _stage_status(database_url(), catalog_version(), str(REGISTRY) if REGISTRY.exists() else None)


@versioned
def verdict_counts(session: Session) -> pd.DataFrame | None:
    """Tokens per model and verdict, or None while the catalog has no verdicts."""
    return later_tables.verdict_counts(session)


# --- model page -----------------------------------------------------------------------


@versioned
def token_count(session: Session, model_id: int, token_filter: TokenFilter) -> int:
    """Tokens of the model matching the filter (cached apart from pages: paging does not recount)."""
    return session.scalar(_token_table(session, model_id, token_filter).count_query())


@versioned
def token_page(
    session: Session, model_id: int, token_filter: TokenFilter, sort: str, descending: bool, page: int, page_size: int
) -> pd.DataFrame:
    """One page of the model's token table."""
    query = _token_table(session, model_id, token_filter).page_query(sort, descending, page, page_size)
    return frame(session, later_tables.with_verdict(session, query, model_id))


@versioned
def fact_values(session: Session, model_id: int, fact: str) -> list[str]:
    tokenizer_id, _ = _model_keys(session, model_id)
    return queries.fact_values(session, tokenizer_id, fact)


@versioned
def scatter_sample(session: Session, model_id: int) -> pd.DataFrame:
    """A plot-sized sample: the most anomalous tokens plus an even stride through the vocabulary."""
    _, run_id = _model_keys(session, model_id)
    if run_id is None:
        return pd.DataFrame()
    vocab_size = session.get(Model, model_id).vocab_size
    stride = max(1, vocab_size // SCATTER_POINTS)
    sample = queries.scatter_sample_query(run_id, SCATTER_TOP, stride)
    return frame(session, later_tables.with_verdict(session, sample, model_id))


@versioned
def indicator_histograms(session: Session, model_id: int) -> pd.DataFrame:
    """Tokens per bin of every indicator (one row per indicator, bin and, once probed, verdict); bins of equal width."""
    _, run_id = _model_keys(session, model_id)
    if run_id is None:
        return pd.DataFrame()
    verdict_run = queries.latest_run_id(session, model_id, "probes")
    bounds = session.execute(queries.indicator_range_query(run_id)).one()._mapping
    parts = []
    for name in queries.INDICATORS:
        low, high = float(bounds[f"{name}_min"]), float(bounds[f"{name}_max"])
        counts = frame(session, queries.indicator_histogram_query(run_id, name, low, high, HISTOGRAM_BINS))
        if verdict_run is not None:
            counts = _split_by_verdict(counts, frame(session, queries.indicator_histogram_query(run_id, name, low, high, HISTOGRAM_BINS, verdict_run)))
        width = (high - low) / HISTOGRAM_BINS
        parts.append(counts.assign(indicator=name, bin_low=low + counts["bin"] * width, bin_high=low + (counts["bin"] + 1) * width))
    return pd.concat(parts, ignore_index=True)


def _split_by_verdict(all_tokens: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """Per-bin counts of every token and of the judged ones by verdict -> judged rows plus an 'unprobed' row per bin."""
    judged_per_bin = judged.groupby("bin")["n_tokens"].sum()
    unprobed = all_tokens.assign(verdict="unprobed", n_tokens=all_tokens["n_tokens"] - all_tokens["bin"].map(judged_per_bin).fillna(0).astype(int))
    return pd.concat([judged, unprobed[unprobed["n_tokens"] > 0]], ignore_index=True)


@versioned
def map_points(session: Session, model_id: int) -> pd.DataFrame:
    """Map positions of the most anomalous and every probed token plus an even sample of the vocabulary."""
    _, run_id = _model_keys(session, model_id)
    if run_id is None:
        return pd.DataFrame()
    stride = max(1, session.get(Model, model_id).vocab_size // SCATTER_POINTS)
    verdict_run = queries.latest_run_id(session, model_id, "probes")
    return frame(session, queries.map_points_query(run_id, SCATTER_TOP, stride, verdict_run))


@versioned
def clusters(session: Session, model_id: int) -> pd.DataFrame:
    _, run_id = _model_keys(session, model_id)
    if run_id is None:
        return pd.DataFrame()
    return frame(session, queries.clusters_query(run_id, SCATTER_TOP))


def _token_table(session: Session, model_id: int, token_filter: TokenFilter) -> TokenTable:
    return TokenTable(*_model_keys(session, model_id), token_filter)


def _model_keys(session: Session, model_id: int) -> tuple[int, int | None]:
    """(tokenizer id, latest embedding_stats run id or None)."""
    model = session.get(Model, model_id)
    return model.tokenizer_id, queries.latest_run_id(session, model_id, "embedding_stats")


# --- token page -----------------------------------------------------------------------


@versioned
def search_tokens(session: Session, text: str) -> pd.DataFrame:
    return frame(session, queries.search_tokens_query(text, SEARCH_LIMIT))


@versioned
def token_facts(session: Session, tokenizer_id: int, token_id: int) -> dict[str, Any] | None:
    row = session.execute(queries.token_facts_query(tokenizer_id, token_id)).first()
    return None if row is None else dict(row._mapping)


@versioned
def token_stats(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_stats_query(tokenizer_id, token_id))


@versioned
def token_neighbors(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_neighbors_query(tokenizer_id, token_id))


@versioned
def same_string_status(session: Session, text: str) -> pd.DataFrame:
    query = queries.same_string_status_query(text)
    return pd.DataFrame() if query is None else frame(session, query)


@versioned
def token_verdicts(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_verdicts_query(tokenizer_id, token_id))


@versioned
def token_transcripts(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_transcripts_query(tokenizer_id, token_id))


@versioned
def token_prompts(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_prompts_query(tokenizer_id, token_id))


@versioned
def token_nokens(session: Session, tokenizer_id: int, token_id: int) -> pd.DataFrame:
    return frame(session, queries.token_nokens_query(tokenizer_id, token_id))


# --- comparison -----------------------------------------------------------------------


@versioned
def shared_strings(session: Session) -> pd.DataFrame:
    return frame(session, queries.shared_strings_query())


@versioned
def anomalous_where(session: Session, model_ids: tuple[int, ...], top_k: int) -> pd.DataFrame:
    """Strings in the top ``top_k`` of any of the models: one row per string, one rank column per model."""
    run_ids = [r for r in (queries.latest_run_id(session, m, "embedding_stats") for m in model_ids) if r is not None]
    long = frame(session, queries.anomalous_where_query(run_ids, top_k))
    if long.empty:
        return long
    wide = long.pivot(index="norm_key", columns="model", values="rank")
    return wide.assign(best_rank=wide.min(axis=1)).sort_values("best_rank").rename_axis(columns=None)


@versioned
def agreement(session: Session, model_a: int, model_b: int) -> pd.DataFrame:
    """Strings that are tokens of both models with each model's best rank and score."""
    run_a = queries.latest_run_id(session, model_a, "embedding_stats")
    run_b = queries.latest_run_id(session, model_b, "embedding_stats")
    if run_a is None or run_b is None:
        return pd.DataFrame()
    return frame(session, queries.agreement_query(run_a, run_b))


# --- nokens ---------------------------------------------------------------------------


@versioned
def noken_runs(session: Session, model_id: int) -> pd.DataFrame:
    return frame(session, queries.noken_runs_query(model_id))


@versioned
def noken_summary(session: Session, run_id: int) -> pd.DataFrame:
    return frame(session, queries.noken_summary_query(run_id))


def _settings(details: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in details.items())


@versioned
def nokens(session: Session, run_id: int) -> pd.DataFrame:
    """Every noken of a run; the generator settings as one readable string."""
    rows = frame(session, queries.nokens_query(run_id))
    return rows.assign(details=rows["details"].map(_settings))


@versioned
def noken_transcripts(session: Session, run_id: int, noken_id: int) -> pd.DataFrame:
    return frame(session, queries.noken_transcripts_query(run_id, noken_id))


@versioned
def real_token_precision(session: Session, model_id: int) -> pd.DataFrame:
    """The latest probes run's verified share per indicator and for the controls; empty without a probes run."""
    try:
        rows = queries.indicator_precision(session, str(model_id))
    except CatalogError:
        return pd.DataFrame()
    return pd.DataFrame([row.__dict__ for row in rows])


@dataclass(frozen=True)
class AgreementSummary:
    n_shared: int
    spearman: float
    crosstab: pd.DataFrame  # rows: A anomalous/normal, columns: B anomalous/normal; values: strings
    disagreements: pd.DataFrame


def agreement_summary(shared: pd.DataFrame, top_fraction: float, n_listed: int = 50) -> AgreementSummary:
    """Contingency of 'anomalous' (score in the top fraction) between two models over their shared strings."""
    if shared.empty:
        return AgreementSummary(0, float("nan"), pd.DataFrame(), shared)
    threshold = 1.0 - top_fraction
    verdict_a = (shared["score_a"] >= threshold).map({True: "anomalous", False: "normal"}).rename("A")
    verdict_b = (shared["score_b"] >= threshold).map({True: "anomalous", False: "normal"}).rename("B")
    disagree = shared[verdict_a != verdict_b]
    gap = (disagree["score_a"] - disagree["score_b"]).abs()
    return AgreementSummary(
        n_shared=len(shared),
        spearman=float(shared["score_a"].corr(shared["score_b"], method="spearman")),
        crosstab=pd.crosstab(verdict_a, verdict_b),
        disagreements=disagree.assign(gap=gap).sort_values("gap", ascending=False).head(n_listed),
    )


# --- detection quality ------------------------------------------------------------------


@versioned
def evaluation(session: Session, model_id: int) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The latest evaluation run's params and its rows (budgets in BUDGET_ORDER); None if the model has none."""
    try:
        run = queries.latest_evaluation(session, str(model_id))
    except CatalogError:
        return None
    rows = frame(session, queries.evaluation_query(run.run_id))
    rows["budget"] = pd.Categorical(rows["budget"], categories=queries.BUDGET_ORDER, ordered=True)
    return run.params, rows.sort_values(["indicator", "budget"]).drop(columns=["run_id", "model_id"])


@versioned
def missed_by_all(session: Session, model_id: int, budget: str) -> pd.DataFrame:
    """Verified tokens no indicator ranks within ``budget``, with readable text, category and verdict."""
    run = queries.latest_evaluation(session, str(model_id))
    return pd.DataFrame(
        [
            {"token_id": t.token_id, "text": t.readable, "category": t.category, "max_target_prob": t.max_target_prob, "failure": t.failure_category}
            for t in queries.missed_tokens(session, run, budget)
        ]
    )
