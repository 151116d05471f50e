"""Model page: the filterable, sortable token table (paged in SQL; filters, sort and page in the URL),
the embedding map (click a point to open its card), indicator histograms and plots."""

import math

import altair as alt
import pandas as pd
import streamlit as st

from catalog.queries import INDICATORS, TOKEN_TABLE_SORTS, TokenFilter
from dashboard import data, nav

PAGE_SIZES = (50, 100, 500)
SORTABLE = list(TOKEN_TABLE_SORTS)
# Categorical palette for verdicts; unprobed tokens stay a neutral grey behind them.
VERDICT_DOMAIN = ["verified", "weakly_verified", "rejected", "untested", "unprobed"]
VERDICT_RANGE = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#c7c7c7"]
TOP_GROUP = f"top {data.SCATTER_TOP} anomalous"

models = data.models()
nav.require_models(models)
model = nav.select_model(models)
model_id = int(model.name)
has_stats = pd.notna(model["stats_run"])
st.title(model["name"])


def header() -> str:
    if pd.isna(model["architecture"]):
        facts = ["tokenizer only", f"vocabulary {model['vocab_size']:,}"]
    else:
        facts = [model["architecture"], f"vocabulary {model['vocab_size']:,}", f"d_model {int(model['hidden_size']):,}"]
    facts.append(f"tokenizer {model['tokenizer']} ({model['tokenizer_kind']})")
    facts.append(f"embedding_stats run {int(model['stats_run'])}" if has_stats else "no embedding statistics")
    return " · ".join(facts)


st.caption(header())

FILTER_DEFAULTS = {"category": [], "script": [], "text": "", "rank_from": None, "rank_to": None, "specials": False}
TABLE_DEFAULTS = {"sort": "anomaly_rank" if has_stats else "token_id", "desc": False, "rows": PAGE_SIZES[0], "page": 1}


def token_filter() -> TokenFilter:
    left, middle, right = st.columns(3)
    category_options, script_options = data.fact_values(model_id, "category"), data.fact_values(model_id, "script")
    categories = left.multiselect("Category", category_options, key=nav.url_state("category", [], many=True, options=category_options))
    scripts = middle.multiselect("Script", script_options, key=nav.url_state("script", [], many=True, options=script_options))
    text = right.text_input("Text or piece contains (any case)", key=nav.url_state("text", ""))
    rank_min, rank_max, special = None, None, True
    if has_stats:
        low, high, flag = st.columns(3)
        rank_min = low.number_input("Anomaly rank from", min_value=1, step=1, key=nav.url_state("rank_from", None, nav.parse_int_or_none))
        rank_max = high.number_input("Anomaly rank to", min_value=1, step=1, key=nav.url_state("rank_to", None, nav.parse_int_or_none))
        special = flag.checkbox("Show special tokens", key=nav.url_state("specials", False, nav.parse_bool))
    return TokenFilter(tuple(categories), tuple(scripts), text, rank_min, rank_max, special)


def token_table(flt: TokenFilter) -> None:
    sort_col, order_col, size_col, page_col = st.columns(4)
    sort = sort_col.selectbox("Sort by", SORTABLE, key=nav.url_state("sort", TABLE_DEFAULTS["sort"], options=SORTABLE))
    descending = order_col.toggle("Descending", key=nav.url_state("desc", False, nav.parse_bool))
    page_size = size_col.selectbox("Rows per page", PAGE_SIZES, key=nav.url_state("rows", PAGE_SIZES[0], int, options=PAGE_SIZES))
    page_number = page_col.number_input("Page", min_value=1, step=1, key=nav.url_state("page", 1, int))
    nav.keep_in_url({**FILTER_DEFAULTS, **TABLE_DEFAULTS})
    total = data.token_count(model_id, flt)
    rows = data.token_page(model_id, flt, sort, descending, page_number - 1, page_size)
    st.caption(f"{total:,} tokens match · page {page_number} of {max(1, math.ceil(total / page_size))} · click a row to open its card")
    shown = nav.with_card_links(rows, int(model["tokenizer_id"]))
    selection = st.dataframe(
        shown.assign(piece=shown["piece"].map(nav.visible), text=shown["text"].map(nav.visible)),
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="tokens",
        column_order=["card", *rows.columns],
        column_config={"card": nav.card_column("token")},
    )
    for index in selection.selection.rows:
        nav.open_token(int(model["tokenizer_id"]), int(rows.iloc[index]["token_id"]), model_id)


def verdict_colour(points: pd.DataFrame) -> tuple[pd.DataFrame, alt.Color]:
    """Verdicts when the model was probed (unprobed grey), else the top anomalous tokens against the rest."""
    if "verdict" in points:
        coloured = points.assign(verdict=points["verdict"].fillna("unprobed"))
        return coloured, alt.Color("verdict:N", scale=alt.Scale(domain=VERDICT_DOMAIN, range=VERDICT_RANGE))
    group = points["anomaly_rank"].le(data.SCATTER_TOP).map({True: TOP_GROUP, False: "other tokens"})
    scale = alt.Scale(domain=[TOP_GROUP, "other tokens"], range=[VERDICT_RANGE[0], VERDICT_RANGE[-1]])
    return points.assign(group=group), alt.Color("group:N", title="", scale=scale)


def embedding_map() -> None:
    points = data.map_points(model_id)
    st.subheader("Embedding map")
    if points.empty:
        st.caption(f"This statistics run has no stored map (made before maps existed): `glitchdex ingest {model['spec']} --force --stages embedding_stats`.")
        return
    left, right = st.columns(2)
    layout = left.radio("Layout", ["t-SNE", "PCA"], horizontal=True, key=nav.url_state("layout", "t-SNE", options=["t-SNE", "PCA"]))
    colours = ["verdict", *INDICATORS]
    colour_by = right.radio("Colour", colours, horizontal=True, key=nav.url_state("colour", "verdict", options=colours))
    nav.keep_in_url({"layout": "t-SNE", "colour": "verdict"})
    x, y = ("tsne_x", "tsne_y") if layout == "t-SNE" else ("pca_x", "pca_y")
    points, colour = verdict_colour(points)
    if colour_by != "verdict":
        colour = alt.Color(f"{colour_by}:Q", scale=alt.Scale(scheme="viridis"))
    points = points.assign(label=points["piece"].map(nav.visible))
    pick = alt.selection_point(name="token", fields=["token_id"], on="click")
    chart = (
        alt.Chart(points)
        .mark_circle(size=30)
        .encode(
            x=alt.X(x, axis=None),
            y=alt.Y(y, axis=None),
            color=colour,
            opacity=alt.condition(pick, alt.value(0.85), alt.value(0.3)),
            order=alt.Order("anomaly_rank", sort="descending"),  # the most anomalous drawn on top
            tooltip=["token_id", "label", "category", "anomaly_rank", *(["verdict"] if "verdict" in points else []), *INDICATORS],
        )
        .add_params(pick)
        .properties(height=520)
    )
    st.caption(
        f"{len(points):,} tokens: the {data.SCATTER_TOP} most anomalous, every probed token and an even sample of the vocabulary. "
        "Click a point to open its card; drag to pan, scroll to zoom."
    )
    event = st.altair_chart(chart.interactive(), width="stretch", on_select="rerun", key="map")
    for picked in event.selection.get("token", []):
        nav.open_token(int(model["tokenizer_id"]), int(picked["token_id"]), model_id)


def histograms() -> None:
    counts = data.indicator_histograms(model_id)
    st.subheader("Indicator distributions")
    st.caption("Tokens per bin (log scale)" + (", stacked by verdict" if "verdict" in counts else "") + ".")
    columns = st.columns(len(INDICATORS))
    for column, name in zip(columns, INDICATORS):
        bins = counts[counts["indicator"] == name]
        encoding = {"x": alt.X("bin_low:Q", bin="binned", title=name), "x2": "bin_high:Q", "y": alt.Y("n_tokens:Q", title="tokens", stack=True, scale=alt.Scale(type="symlog"))}
        if "verdict" in bins:
            encoding["color"] = alt.Color("verdict:N", scale=alt.Scale(domain=VERDICT_DOMAIN, range=VERDICT_RANGE))
        column.altair_chart(alt.Chart(bins).mark_bar().encode(**encoding, tooltip=["bin_low", "bin_high", "n_tokens"]).properties(height=200), width="stretch")


def indicator_plots() -> None:
    sample, colour = verdict_colour(data.scatter_sample(model_id))
    tooltip = ["token_id", "piece", "category", "anomaly_rank", "embed_norm", "centroid_dist", "unused_cos"]
    st.caption(f"{len(sample):,} tokens: the {data.SCATTER_TOP} most anomalous plus an even sample of the vocabulary.")
    points = alt.Chart(sample).mark_circle(size=18, opacity=0.6).encode(color=colour, tooltip=tooltip, order=alt.Order("anomaly_rank", sort="descending"))
    left, right = st.columns(2)
    left.altair_chart(points.encode(x="embed_norm", y="centroid_dist").properties(title="Norm vs distance to centroid").interactive(), width="stretch")
    right.altair_chart(points.encode(x="unused_cos", y="embed_norm").properties(title="Unused-token cosine vs norm").interactive(), width="stretch")
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
    embedding_map()
    histograms()
    st.subheader("Indicators")
    indicator_plots()
