"""Token card: one URL per token (``/token?tokenizer=ID&token=ID``, ``&model=ID`` to put a model first).

The decoded text large with its escapes and bytes, badges, where the token sits in each
indicator's distribution, probe transcripts, found prompts, nearby nokens, neighbours and
the same string in other tokenizers; ``?q=TEXT`` opens the search instead.
"""

import html

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, nav

SEARCH_BUTTONS = 20
PLACEHOLDER = "«TOKEN»"  # where probe_template.text puts the token (ingest.compute.probes.PLACEHOLDER)
VERDICT_COLOURS = {"verified": "red", "weakly_verified": "orange", "rejected": "green", "untested": "gray"}
PERCENT = st.column_config.NumberColumn(format="%.1f%%")
COSINE = st.column_config.NumberColumn("cosine", format="%.4f")


def search() -> None:
    text = st.text_input("Search a token", key=nav.url_state("q", ""), placeholder="text or piece, e.g. firstsum or Ġthe")
    nav.keep_in_url({"q": ""})
    if not text:
        return
    hits = data.search_tokens(text)
    if hits.empty:
        st.caption(f"No token contains {text!r}.")
        return
    st.caption(f"{len(hits)} tokens{' (first ones)' if len(hits) == data.SEARCH_LIMIT else ''}; exact matches first:")
    for hit in hits.head(SEARCH_BUTTONS).itertuples():
        nav.token_link(hit.tokenizer_id, hit.token_id, nav.token_label(hit.piece, hit.token_id, hit.tokenizer))


def selected_token() -> tuple[int, int] | None:
    tokenizer, token = st.query_params.get("tokenizer", ""), st.query_params.get("token", "")
    return (int(tokenizer), int(token)) if tokenizer.isdigit() and token.isdigit() else None


def headline(facts: dict) -> None:
    """The decoded text large (escapes, never a '□'), then the piece, escapes and bytes."""
    shown = nav.visible(facts["text"], facts["raw_bytes"])
    large = shown or nav.visible(facts["piece"])  # a padding row decodes to nothing: its piece '[PADn]' names it
    st.markdown(
        f'<div style="font-size:3.2rem;font-family:monospace;white-space:pre;line-height:1.3">'
        f'<span style="background:rgba(255,200,0,.25);border-radius:.3rem">{html.escape(large) or "&nbsp;"}</span></div>',
        unsafe_allow_html=True,
    )
    raw = facts["raw_bytes"]
    st.markdown(
        f"piece `{nav.visible(facts['piece'])}` · text `{shown}` · bytes `{raw.hex(' ') if raw is not None else '-'}` · "
        f"{facts['n_bytes']} bytes, {facts['n_chars']} characters · script {facts['script']}"
    )


def badges(facts: dict, verdicts: pd.DataFrame) -> None:
    parts = [f":blue-badge[tokenizer {facts['tokenizer']} ({facts['tokenizer_kind']})]", f":violet-badge[{facts['category']}]"]
    if facts["is_unreachable"]:
        parts.append(f":orange-badge[unreachable ({facts['unreachable_kind']})]")
    for row in verdicts.itertuples():
        colour = VERDICT_COLOURS.get(row.verdict, "gray")
        parts.append(f":{colour}-badge[{row.model}: {row.verdict}]")
        if row.failure_category:
            parts.append(f":gray-badge[{row.model}: fails by {row.failure_category}]")
    st.markdown(" ".join(parts))


def distribution(histogram: pd.DataFrame, indicator: str, value: float, percentile: float) -> alt.LayerChart:
    """The model's histogram of one indicator with a rule at the token's value."""
    bins = histogram[histogram["indicator"] == indicator].groupby(["bin_low", "bin_high"], as_index=False)["n_tokens"].sum()
    bars = alt.Chart(bins).mark_bar(color="#9aa5b1").encode(
        x=alt.X("bin_low:Q", bin="binned", title=indicator), x2="bin_high:Q", y=alt.Y("n_tokens:Q", title="tokens", scale=alt.Scale(type="symlog"))
    )
    marker = alt.Chart(pd.DataFrame({"value": [value]})).mark_rule(color="#d62728", size=3).encode(x="value:Q")
    return (bars + marker).properties(height=140, title=f"{indicator} = {value:.4g} · more anomalous than {percentile:.1%}")


def indicators(stats: pd.DataFrame, first_model: str | None) -> None:
    st.subheader("Where it sits in each model")
    if stats.empty:
        st.caption("No model with embedding statistics uses this tokenizer.")
        return
    stats = stats.sort_values("model", key=lambda names: names != first_model, kind="stable")
    for row in stats.itertuples():
        st.markdown(
            f"**{row.model}** · anomaly rank **{row.anomaly_rank:,}** of {row.vocab_size:,} · "
            f"k-means cluster {row.cluster_id} ({row.cluster_size:,} tokens, stability {row.cluster_stability:.2f})"
        )
        histogram = data.indicator_histograms(row.model_id)
        columns = st.columns(3)
        for column, (name, pct) in zip(columns, (("unused_cos", "unused_cos_pct"), ("embed_norm", "embed_norm_pct"), ("centroid_dist", "centroid_dist_pct"))):
            column.altair_chart(distribution(histogram, name, getattr(row, name), getattr(row, pct)), width="stretch")


def expected_answer(kind: str, text: str) -> str:
    """What a model that can read the token answers: the text itself, or its letters for the spelling probe."""
    return " ".join(text.strip()) if kind == "spell" else text


def highlighted_prompt(prompt: str, response_prefix: str, text: str) -> str:
    token = f'<mark style="background:rgba(255,200,0,.45)">{html.escape(nav.visible(text)) or "&nbsp;"}</mark>'
    rendered = html.escape(prompt).replace(html.escape(PLACEHOLDER), token)
    prefix = f'<br><span style="opacity:.6">answer primed with:</span> {html.escape(response_prefix)}' if response_prefix else ""
    return f'<div style="font-family:monospace;white-space:pre-wrap">{rendered}{prefix}</div>'


def transcripts(rows: pd.DataFrame, facts: dict) -> None:
    st.subheader("Probe transcripts")
    if rows.empty:
        st.caption("Not probed yet: `glitchdex probe SPEC` probes each model's top candidates and controls.")
        return
    for row in rows.itertuples():
        with st.container(border=True):
            mark = ":green[passed]" if row.passed else f":red[failed{f' ({row.failure_category})' if row.failure_category else ''}]"
            st.markdown(
                f"**{row.template}** ({row.kind}{', chat' if row.chat else ''}) · {row.model} · {mark} · "
                f"target probability **{row.target_prob:.4f}** (rank {row.target_rank})"
            )
            prompt, answer = st.columns(2)
            prompt.markdown(highlighted_prompt(row.prompt, row.response_prefix, facts["text"]), unsafe_allow_html=True)
            answer.markdown(f"expected: `{nav.visible(expected_answer(row.kind, facts['text']))}`")
            answer.code(nav.visible(row.output) or "(empty)", language=None, wrap_lines=True)


def found_prompts(rows: pd.DataFrame) -> None:
    st.subheader("Prompts found to make a model say it")
    if rows.empty:
        st.caption("No prompt search targeted this token: `glitchdex prompts SPEC --top N`.")
        return
    shown = rows.assign(prompt_text=rows["prompt_text"].map(nav.visible))
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "prompt_text": st.column_config.TextColumn("prompt", width="large"),
            "target_logprob": st.column_config.NumberColumn("log-prob", format="%.3f"),
            "greedy_emits": st.column_config.CheckboxColumn("success (greedy emits it)"),
        },
    )


def nearby_nokens(rows: pd.DataFrame) -> None:
    if rows.empty:
        return
    st.subheader("Nokens nearest to it")
    st.caption("Synthetic vectors whose nearest real tokens include this one (the nokens page has their transcripts).")
    st.dataframe(
        rows.drop(columns=["model_id", "run_id"]).rename(columns={"rank": "its rank among the noken's neighbours"}),
        hide_index=True,
        column_config={"cosine": COSINE},
    )


def neighbours(rows: pd.DataFrame, tokenizer_id: int) -> None:
    st.subheader("Nearest neighbours (input embeddings)")
    if rows.empty:
        st.caption("Neighbours are stored only for each model's most anomalous tokens.")
        return
    linked = nav.with_card_links(rows, tokenizer_id, "neighbor_token_id").drop(columns="neighbor_token_id")
    st.dataframe(
        linked.assign(piece=linked["piece"].map(nav.visible)),
        hide_index=True,
        column_order=["model", "rank", "card", "piece", "category", "cosine", "anomaly_rank"],
        column_config={"card": nav.card_column("token"), "cosine": COSINE},
    )


def elsewhere(facts: dict, tokenizer_id: int, token_id: int) -> None:
    st.subheader("The same string elsewhere")
    same = data.same_string_status(facts["text"])
    same = same[(same["tokenizer_id"] != tokenizer_id) | (same["token_id"] != token_id)] if not same.empty else same
    if same.empty:
        st.caption("No other catalogued token has this normalised text.")
        return
    st.caption("Every other token, in every catalogued tokenizer, whose normalised text equals this token's, with its rank in each model.")
    linked = nav.with_card_links(same).drop(columns=["tokenizer_id", "token_id"])
    st.dataframe(
        linked.assign(piece=linked["piece"].map(nav.visible)),
        hide_index=True,
        column_order=["tokenizer", "card", "piece", "category", "model", "anomaly_rank", "anomaly_score", "vocab_size"],
        column_config={"card": nav.card_column("token"), "anomaly_score": st.column_config.NumberColumn(format="%.4f")},
    )


def card(tokenizer_id: int, token_id: int) -> None:
    facts = data.token_facts(tokenizer_id, token_id)
    if facts is None:
        st.error(f"No token {token_id} in tokenizer {tokenizer_id}.")
        return
    model_param = st.query_params.get("model", "")
    stats = data.token_stats(tokenizer_id, token_id)
    first_model = None
    if model_param.isdigit() and not stats.empty and int(model_param) in set(stats["model_id"]):
        first_model = stats.set_index("model_id").loc[int(model_param), "model"]
    st.header(f"{nav.visible(facts['piece'])!r} · token {token_id} of {facts['tokenizer']}")
    headline(facts)
    badges(facts, data.token_verdicts(tokenizer_id, token_id))
    indicators(stats, first_model)
    transcripts(data.token_transcripts(tokenizer_id, token_id), facts)
    found_prompts(data.token_prompts(tokenizer_id, token_id))
    nearby_nokens(data.token_nokens(tokenizer_id, token_id))
    neighbours(data.token_neighbors(tokenizer_id, token_id), tokenizer_id)
    elsewhere(facts, tokenizer_id, token_id)


st.title("Token")
search()
chosen = selected_token()
if chosen is None:
    st.info("Search a token above, or open one from a model's token table or map.")
else:
    card(*chosen)
