"""Cross-model comparison: strings shared across tokenizers, where they are anomalous, and how far models agree.

The chosen models, k, the pair and the threshold live in the URL; every string links to the token search.
"""

import pandas as pd
import streamlit as st

from dashboard import data, nav

FRACTIONS = [0.001, 0.005, 0.01, 0.05, 0.1]
SEARCH_LINK = st.column_config.LinkColumn("tokens", display_text="open", help="every token that spells this string")

models = data.models()
nav.require_models(models)
st.title("Compare models")


def with_search_links(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``tokens`` column that opens the token search for its ``norm_key``, placed first."""
    linked = frame.assign(tokens=frame["norm_key"].map(nav.search_url))
    return linked[["tokens", *frame.columns]]


st.subheader("Strings shared across tokenizers")
st.caption("Distinct normalised strings (NFKC, surrounding whitespace stripped) that are a token in both tokenizers.")
shared = data.shared_strings()
if shared.empty:
    st.caption("Only one tokenizer is catalogued.")
else:
    st.dataframe(shared, hide_index=True)

with_stats = models[models["stats_run"].notna()]
if with_stats.empty:
    st.info("No model has embedding statistics yet.")
    st.stop()
names = dict(zip(with_stats["id"], with_stats["name"]))
ids = list(names)

st.subheader("Which strings are anomalous where")
chosen = st.multiselect("Models", ids, format_func=names.get, key=nav.url_state("models", ids, int, many=True, options=ids))
top_k = st.number_input("Top k anomalous tokens of each model", min_value=1, max_value=10_000, step=10, key=nav.url_state("k", 50, int))
if chosen:
    where = data.anomalous_where(tuple(sorted(chosen)), int(top_k))
    st.caption(
        "Strings in the top k of at least one model; each column is the string's best anomaly rank in that model "
        "(empty: not a token there). A string opens every token that spells it."
    )
    st.dataframe(with_search_links(where.reset_index()) if not where.empty else where, hide_index=True, column_config={"tokens": SEARCH_LINK})

st.subheader("Agreement between two models")
if len(names) < 2:
    nav.keep_in_url({"models": ids, "k": 50})
    st.caption("Needs two models with embedding statistics.")
    st.stop()
left, right, fraction_col = st.columns(3)
model_a = left.selectbox("Model A", ids, format_func=names.get, key=nav.url_state("a", ids[0], int, options=ids))
model_b = right.selectbox("Model B", ids, format_func=names.get, key=nav.url_state("b", ids[1], int, options=ids))
top_fraction = fraction_col.select_slider("Anomalous = top fraction", options=FRACTIONS, key=nav.url_state("fraction", 0.01, float, options=FRACTIONS))
nav.keep_in_url({"models": ids, "k": 50, "a": ids[0], "b": ids[1], "fraction": 0.01})
if model_a == model_b:
    st.caption("Pick two different models.")
    st.stop()
summary = data.agreement_summary(data.agreement(model_a, model_b), top_fraction)
st.caption(
    f"{summary.n_shared:,} strings are tokens of both; Spearman correlation of their anomaly scores: {summary.spearman:.3f}."
)
st.dataframe(summary.crosstab.rename(index=lambda v: f"A: {v}", columns=lambda v: f"B: {v}"))
st.markdown("**Anomalous in one model only** (strongest first)")
disagreements = summary.disagreements
st.dataframe(with_search_links(disagreements) if not disagreements.empty else disagreements, hide_index=True, column_config={"tokens": SEARCH_LINK})
