"""Model page: the filterable, sortable token table (paged in SQL) and plots of the indicators."""

import math

import altair as alt
import pandas as pd
import streamlit as st

from catalog.queries import TOKEN_TABLE_SORTS, TokenFilter
from dashboard import data, nav

PAGE_SIZES = (50, 100, 500)
SORTABLE = list(TOKEN_TABLE_SORTS)

models = data.models()
nav.require_models(models)
model = nav.select_model(models)
model_id = int(model.name)
st.title(model["name"])
st.caption(
    f"{model['architecture'] or 'tokenizer only'} · vocabulary {model['vocab_size']:,} · d_model {model['hidden_size'] or '-'} · "
    f"tokenizer {model['tokenizer']} ({model['tokenizer_kind']}) · "
    + (f"embedding_stats run {int(model['stats_run'])}" if pd.notna(model["stats_run"]) else "no embedding statistics")
)
has_stats = pd.notna(model["stats_run"])


def token_filter() -> TokenFilter:
    left, middle, right = st.columns(3)
    categories = left.multiselect("Category", data.fact_values(model_id, "category"))
    scripts = middle.multiselect("Script", data.fact_values(model_id, "script"))
    text = right.text_input("Text or piece contains (any case)")
    rank_min, rank_max, special = None, None, True
    if has_stats:
        low, high, flag = st.columns(3)
        rank_min = low.number_input("Anomaly rank from", min_value=1, value=None, step=1)
        rank_max = high.number_input("Anomaly rank to", min_value=1, value=None, step=1)
        special = not flag.checkbox("Hide special tokens", value=True)
    return TokenFilter(tuple(categories), tuple(scripts), text, rank_min, rank_max, special)


def token_table(flt: TokenFilter) -> None:
    sort_col, order_col, size_col, page_col = st.columns(4)
    sort = sort_col.selectbox("Sort by", SORTABLE, index=SORTABLE.index("anomaly_rank" if has_stats else "token_id"))
    descending = order_col.toggle("Descending")
    page_size = size_col.selectbox("Rows per page", PAGE_SIZES)
    page_number = page_col.number_input("Page", min_value=1, value=1, step=1)
    total = data.token_count(model_id, flt)
    rows = data.token_page(model_id, flt, sort, descending, page_number - 1, page_size)
    st.caption(f"{total:,} tokens match · page {page_number} of {max(1, math.ceil(total / page_size))}")
    selection = st.dataframe(rows, hide_index=True, on_select="rerun", selection_mode="single-row", key="tokens")
    for index in selection.selection.rows:
        token = rows.iloc[index]
        nav.token_link(model["tokenizer_id"], int(token["token_id"]), f"Open {nav.token_label(token['piece'], int(token['token_id']), model['name'])}")


def indicator_plots() -> None:
    sample = data.scatter_sample(model_id)
    top = f"top {data.SCATTER_TOP} anomalous"
    if "verdict" not in sample:
        # Categories alone hide the anomalous tokens among the normal ones: give them their own colour.
        sample = sample.assign(group=sample["category"].where(sample["anomaly_rank"] > data.SCATTER_TOP, top))
    colour = "verdict" if "verdict" in sample else "group"
    tooltip = ["token_id", "piece", "category", "anomaly_rank", "embed_norm", "centroid_dist", "unused_cos"]
    st.caption(f"{len(sample):,} tokens: the {data.SCATTER_TOP} most anomalous plus an even sample of the vocabulary.")
    points = alt.Chart(sample).mark_circle(size=18, opacity=0.6).encode(
        color=colour, tooltip=tooltip, order=alt.Order("anomaly_rank", sort="descending")
    )
    left, right = st.columns(2)
    left.altair_chart(
        points.encode(x="embed_norm", y="centroid_dist").properties(title="Norm vs distance to centroid").interactive(),
        width="stretch",
    )
    right.altair_chart(
        points.encode(x="unused_cos", y="embed_norm").properties(title="Unused-token cosine vs norm").interactive(),
        width="stretch",
    )
    clusters = data.clusters(model_id)
    st.subheader("Clusters of the input embeddings")
    st.caption(
        "Each k-means cluster at its centre's norm and distance to the mean embedding; size = tokens, "
        f"colour = how many of the {data.SCATTER_TOP} most anomalous tokens it holds."
    )
    st.altair_chart(
        alt.Chart(clusters)
        .mark_circle(opacity=0.7)
        .encode(
            x="centroid_norm",
            y="dist_to_global_centroid",
            size="size",
            color=alt.Color("n_anomalous", scale=alt.Scale(scheme="reds")),
            tooltip=list(clusters.columns),
        )
        .interactive(),
        width="stretch",
    )
    st.dataframe(clusters, hide_index=True)


st.subheader("Tokens")
token_table(token_filter())
if has_stats:
    st.subheader("Indicators")
    indicator_plots()
