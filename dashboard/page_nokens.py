"""Nokens page: synthetic vectors probed like tokens, by generator, beside the model's real tokens."""

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, nav

models = data.models()
nav.require_models(models)
model = nav.select_model(models)
model_id = int(model.name)
st.title("Nokens")
st.caption(
    "Synthetic vectors put in the probe prompts' token slots (at the input, or in the residual stream entering a layer). "
    "The probes score each noken's nearest real token; the baseline is the same probe of that token."
)

runs = data.noken_runs(model_id)
if runs.empty:
    st.info(
        f"No noken experiments for {model['name']} yet: run `glitchdex nokens {model['spec']}` "
        f"(input space) or `glitchdex nokens {model['spec']} --space residual --layer 6`."
    )
    st.stop()


def run_label(run: pd.Series) -> str:
    where = "input embeddings" if run["space"] == "input" else f"residual stream into layer {int(run['layer'])} ({run['mode']})"
    return f"run {run['run_id']} · {where} · {run['n_nokens']} nokens"


labels = {int(run["run_id"]): run_label(run) for _, run in runs.iterrows()}
run_id = st.selectbox("Experiment", list(labels), format_func=labels.get)

st.subheader("Which generator makes glitch-like nokens?")
summary = data.noken_summary(run_id)
st.dataframe(
    summary,
    hide_index=True,
    column_config={
        "glitch_share": st.column_config.ProgressColumn("glitch share", help="verified + weakly verified", min_value=0.0, max_value=1.0),
        "output_changed_share": st.column_config.ProgressColumn("output changed", min_value=0.0, max_value=1.0),
    },
)
real = data.real_token_precision(model_id)
if real.empty:
    st.caption(f"No probes run of real tokens to compare with: `glitchdex probe {model['spec']}`.")
else:
    shares = real.set_index("indicator")["precision_weak"]
    st.caption(
        "Real tokens, latest probes run: "
        + " · ".join(f"{name} top-N {share:.0%} glitch-like" if name != "control" else f"random normal controls {share:.0%}" for name, share in shares.dropna().items())
    )

nokens = data.nokens(run_id)
st.subheader("Out-of-distribution against glitch behaviour")
st.altair_chart(
    alt.Chart(nokens)
    .mark_circle(size=70)
    .encode(
        x=alt.X("rms_z_pct", title="rms z-score percentile among real vectors"),
        y=alt.Y("max_target_prob", title="max target probability", scale=alt.Scale(type="symlog", constant=0.001)),
        color="generator",
        tooltip=["noken_id", "generator", "details", "nearest_piece", "nearest_cos", "verdict", "max_target_prob", "norm_pct"],
    ),
    width="stretch",
)

st.subheader("Nokens")
selection = st.dataframe(
    nav.with_card_links(nokens, int(model["tokenizer_id"]), "nearest_token_id"),
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="nokens",
    column_config={"card": nav.card_column("nearest token's card"), "nearest_cos": st.column_config.NumberColumn(format="%.4f")},
)
for index in selection.selection.rows:
    noken = nokens.iloc[index]
    st.markdown(f"**Noken {noken['noken_id']}** ({noken['generator']}, {noken['details'] or 'no settings'}) beside its nearest token `{noken['nearest_piece']}`")
    st.dataframe(data.noken_transcripts(run_id, int(noken["noken_id"])), hide_index=True)
