"""Cross-model comparison: strings shared across tokenizers, where they are anomalous, and how far models agree."""

import streamlit as st

from dashboard import data, nav

models = data.models()
nav.require_models(models)
st.title("Compare models")

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

st.subheader("Which strings are anomalous where")
chosen = st.multiselect("Models", list(names), default=list(names), format_func=names.get)
top_k = st.number_input("Top k anomalous tokens of each model", min_value=1, max_value=10_000, value=50, step=10)
if chosen:
    where = data.anomalous_where(tuple(sorted(chosen)), int(top_k))
    st.caption(
        "Strings in the top k of at least one model; each column is the string's best anomaly rank in that model "
        "(empty: not a token there)."
    )
    st.dataframe(where)

st.subheader("Agreement between two models")
if len(names) < 2:
    st.caption("Needs two models with embedding statistics.")
    st.stop()
left, right, fraction_col = st.columns(3)
model_a = left.selectbox("Model A", list(names), index=0, format_func=names.get)
model_b = right.selectbox("Model B", list(names), index=1, format_func=names.get)
top_fraction = fraction_col.select_slider("Anomalous = top fraction", options=[0.001, 0.005, 0.01, 0.05, 0.1], value=0.01)
if model_a == model_b:
    st.caption("Pick two different models.")
    st.stop()
summary = data.agreement_summary(data.agreement(model_a, model_b), top_fraction)
st.caption(
    f"{summary.n_shared:,} strings are tokens of both; Spearman correlation of their anomaly scores: {summary.spearman:.3f}."
)
st.dataframe(summary.crosstab.rename(index=lambda v: f"A: {v}", columns=lambda v: f"B: {v}"))
st.markdown("**Anomalous in one model only** (strongest first)")
st.dataframe(summary.disagreements, hide_index=True)
