"""Overview: models and tokenizers in the catalog, every stage's state, token categories, verdicts and the last ingest runs."""

import streamlit as st

from dashboard import data, nav

st.title("glitchdex catalog")
models = data.models()
nav.require_models(models)
tokenizers = data.tokenizers()

counts = st.columns(3)
counts[0].metric("Models", len(models))
counts[1].metric("Tokenizers", len(tokenizers))
counts[2].metric("Tokens", f"{int(tokenizers['vocab_size'].sum()):,}")

st.subheader("Models")
st.dataframe(
    models.assign(page=[nav.model_url(model_id) for model_id in models["id"]]),
    hide_index=True,
    column_order=["page", "name", "spec", "source_kind", "architecture", "vocab_size", "hidden_size", "tokenizer", "tokenizer_kind", "stats_run"],
    column_config={
        "page": st.column_config.LinkColumn("model page", display_text="open", help="token table, map and plots"),
        "stats_run": st.column_config.NumberColumn("embedding_stats run"),
    },
)

st.subheader("Stages")
st.caption(
    "The latest run of every (model, stage): succeeded, stale (a stage it read has a newer run), running, "
    "interrupted (resumes on the next `glitchdex reingest`), failed (with its error), or pending (models.toml "
    "asks for it). The same table as `glitchdex status`."
)
st.dataframe(
    data.stage_status().drop(columns=["model_id"]),
    hide_index=True,
    column_config={"run_id": st.column_config.NumberColumn("run"), "params_hash": st.column_config.TextColumn("params hash")},
)

st.subheader("Tokenizers")
st.dataframe(tokenizers, hide_index=True)

st.subheader("Tokens per category")
st.caption("Tokenizer facts: the first matching of special, partial_utf8, byte, unreachable, whitespace, normal.")
st.dataframe(data.category_counts())

verdicts = data.verdict_counts()
if verdicts is not None:
    st.subheader("Tokens per verdict")
    st.dataframe(verdicts.pivot(index="model", columns="verdict", values="n_tokens").fillna(0).astype(int))

st.subheader("Last ingest runs")
st.dataframe(data.recent_runs(), hide_index=True)
