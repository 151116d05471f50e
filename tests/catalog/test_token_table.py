"""The model page's token table: two-step SQL paging gives exactly the rows of a naive sort."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.queries import TOKEN_TABLE_COLUMNS, TokenFilter, TokenTable, latest_run_id
from catalog.schema import EmbeddingStat, Token
from tests.conftest import on_postgresql

SMOLLM2_MODEL = 1
CASES = [
    (TokenFilter(include_special=False), "anomaly_rank", False, 0),
    (TokenFilter(), "anomaly_rank", False, 983),
    (TokenFilter(), "embed_norm", True, 3),
    (TokenFilter(text="ing"), "unused_cos", True, 1),
    (TokenFilter(categories=("normal",), rank_max=1000), "n_bytes", True, 2),
    pytest.param(
        TokenFilter(scripts=("Latin",), rank_min=100, rank_max=400), "piece", False, 0,
        marks=pytest.mark.skipif(on_postgresql(), reason="PostgreSQL orders text by its collation, pandas by code point"),
    ),
    (TokenFilter(categories=("byte", "whitespace")), "token_id", True, 0),
    (TokenFilter(rank_min=49_000), "centroid_dist", False, 0),
]
PAGE = 50


@pytest.fixture(scope="module")
def everything(smollm2_catalog) -> tuple[int, pd.DataFrame]:
    """The whole SmolLM2 token table in pandas, the reference for every page."""
    with smollm2_catalog.connect() as conn:
        run_id = latest_run_id(Session(conn), SMOLLM2_MODEL, "embedding_stats")
        rows = conn.execute(
            select(*TOKEN_TABLE_COLUMNS)
            .join(EmbeddingStat, (EmbeddingStat.token_id == Token.token_id) & (EmbeddingStat.tokenizer_id == Token.tokenizer_id))
            .where(EmbeddingStat.run_id == run_id)
        )
        return run_id, pd.DataFrame(rows.all(), columns=list(rows.keys()))


def naive_page(frame: pd.DataFrame, flt: TokenFilter, sort: str, descending: bool, page: int) -> tuple[list[int], int]:
    keep = pd.Series(True, index=frame.index)
    if flt.categories:
        keep &= frame["category"].isin(flt.categories)
    if flt.scripts:
        keep &= frame["script"].isin(flt.scripts)
    if flt.text:
        keep &= frame["text"].str.contains(flt.text, case=False, regex=False) | frame["piece"].str.contains(flt.text, case=False, regex=False)
    if flt.rank_min is not None:
        keep &= frame["anomaly_rank"] >= flt.rank_min
    if flt.rank_max is not None:
        keep &= frame["anomaly_rank"] <= flt.rank_max
    if not flt.include_special:
        keep &= ~frame["is_special"].astype(bool)
    chosen = frame[keep]
    keys = [sort] if sort == "token_id" else [sort, "token_id"]
    ordered = chosen.sort_values(keys, ascending=[not descending] + [True] * (len(keys) - 1), kind="stable")
    return ordered["token_id"].iloc[page * PAGE : (page + 1) * PAGE].tolist(), len(chosen)


@pytest.mark.parametrize("flt, sort, descending, page", CASES)
def test_pages_and_counts_match_a_naive_sort(smollm2_catalog, everything, flt, sort, descending, page):
    run_id, frame = everything
    table = TokenTable(tokenizer_id=1, stats_run_id=run_id, token_filter=flt)
    expected_ids, expected_count = naive_page(frame, flt, sort, descending, page)
    with smollm2_catalog.connect() as conn:
        assert conn.execute(table.count_query()).scalar() == expected_count
        rows = conn.execute(table.page_query(sort, descending, page, PAGE)).all()
    assert [r.token_id for r in rows] == expected_ids
    assert all(len(row) == len(TOKEN_TABLE_COLUMNS) for row in rows)


def test_a_tokenizer_only_table_has_facts_and_no_indicators(smollm2_catalog):
    table = TokenTable(tokenizer_id=1, stats_run_id=None, token_filter=TokenFilter(categories=("byte",)))
    with smollm2_catalog.connect() as conn:
        count = conn.execute(table.count_query()).scalar()
        rows = conn.execute(table.page_query("token_id", False, 0, PAGE)).all()
    assert count == len(rows) == 19
    assert all(r.category == "byte" and r.anomaly_rank is None for r in rows)
