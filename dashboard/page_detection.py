"""Detection page: how much of a model's behavioural truth each indicator finds, and what all of them miss."""

import altair as alt
import streamlit as st

from dashboard import data, nav

models = data.models()
nav.require_models(models)
model = nav.select_model(models)
model_id = int(model.name)
st.title("Detection quality")
st.caption(
    "The truth is the latest sweep's verified tokens (target probability below the threshold in every template). "
    "Each indicator's top k tokens are its candidates at a budget (a share of the ranked tokens); R = the number of verified tokens. "
    "Special and placeholder tokens are not ranked."
)

found = data.evaluation(model_id)
if found is None:
    st.info(f"Not evaluated yet: `glitchdex probe {model['spec']} --mode sweep` (or `--sample N`), then `glitchdex evaluate {model['spec']}`.")
    st.stop()
params, rows = found
first = rows.iloc[0]
scope = "a seeded sample (95 % Wilson intervals)" if params["sampled"] else "the whole vocabulary"
st.markdown(f"**{int(first['n_truth'])} verified** of {int(first['n_ranked'])} ranked tokens, from {scope}; probes run {params['upstream_runs']['probes']}.")
calibration = params["calibration"]
(st.success if calibration["separates"] else st.warning)(calibration["statement"])
learned = params.get("learned")
if learned:
    trained_on = ", ".join(m["model"] for m in learned.get("trained_on", []))
    st.caption(f"Learned combination{f' (trained on {trained_on})' if trained_on else ''}: {learned['statement']}")
if calibration["template_floors"]:
    st.caption("Control tokens failing each template alone: " + " · ".join(f"{name} {share:.0%}" for name, share in calibration["template_floors"].items()))

st.subheader("Precision and recall by budget")
curves = rows[rows["budget"] != "R"]
st.altair_chart(
    alt.Chart(curves)
    .mark_line(point=True)
    .encode(
        x=alt.X("recall", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision", scale=alt.Scale(domain=[0, 1])),
        color="indicator",
        tooltip=["indicator", "budget", "k", "n_hits", "precision", "recall", "f1"],
    ),
    width="stretch",
)

st.subheader("Table")
summary = rows.pivot(index="indicator", columns="budget", values="recall").add_prefix("recall@")
summary.insert(0, "R-precision", rows[rows["budget"] == "R"].set_index("indicator")["precision"])
summary.insert(1, "average precision", rows.drop_duplicates("indicator").set_index("indicator")["average_precision"])
st.dataframe(summary.sort_values("R-precision", ascending=False), width="stretch")
with st.expander("Every row (precision, recall, F1, intervals)"):
    st.dataframe(rows, hide_index=True)

st.subheader("Verified tokens every indicator missed")
budget = st.selectbox("Budget", list(params["missed_by_all"]), index=list(params["missed_by_all"]).index("2%") if "2%" in params["missed_by_all"] else 0)
missed = data.missed_by_all(model_id, budget)
st.caption(f"{len(missed)} verified tokens are in no indicator's top {budget}. Select one for its transcripts.")
selection = st.dataframe(missed, hide_index=True, on_select="rerun", selection_mode="single-row", key="missed")
for index in selection.selection.rows:
    token = missed.iloc[index]
    nav.token_link(int(model["tokenizer_id"]), int(token["token_id"]), f"{token['text']!r}: facts, statistics and probe transcripts")
