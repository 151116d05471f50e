"""Token page: search a token; its facts, indicators per model, neighbours, later stages' results
(probe transcripts, found prompts, ...) and the same string's status in every other tokenizer."""

import pandas as pd
import streamlit as st

from dashboard import data, nav


def table_or_note(title: str, frame: pd.DataFrame, empty_note: str) -> None:
    """A titled table, or a caption saying why it is empty."""
    st.subheader(title)
    if frame.empty:
        st.caption(empty_note)
    else:
        st.dataframe(frame, hide_index=True)


SEARCH_BUTTONS = 20


def open_token(tokenizer_id: int, token_id: int) -> None:
    st.query_params.update(tokenizer=str(tokenizer_id), token=str(token_id))


def search() -> None:
    text = st.text_input("Search a token", placeholder="text or piece, e.g. firstsum or Ġthe")
    if not text:
        return
    hits = data.search_tokens(text)
    if hits.empty:
        st.caption(f"No token contains {text!r}.")
        return
    st.caption(f"{len(hits)} tokens{' (first ones)' if len(hits) == data.SEARCH_LIMIT else ''}; exact matches first:")
    for hit in hits.head(SEARCH_BUTTONS).itertuples():
        st.button(
            nav.token_label(hit.piece, hit.token_id, hit.tokenizer),
            key=f"open-{hit.tokenizer_id}-{hit.token_id}",
            on_click=open_token,
            args=(hit.tokenizer_id, hit.token_id),
        )


def selected_token() -> tuple[int, int] | None:
    tokenizer, token = st.query_params.get("tokenizer", ""), st.query_params.get("token", "")
    return (int(tokenizer), int(token)) if tokenizer.isdigit() and token.isdigit() else None


def facts_table(facts: dict) -> pd.DataFrame:
    shown = {**facts, "raw_bytes": None if facts["raw_bytes"] is None else facts["raw_bytes"].hex(" ")}
    return pd.DataFrame({"fact": list(shown), "value": [repr(v) if isinstance(v, str) else str(v) for v in shown.values()]})


def token_details(tokenizer_id: int, token_id: int) -> None:
    facts = data.token_facts(tokenizer_id, token_id)
    if facts is None:
        st.error(f"No token {token_id} in tokenizer {tokenizer_id}.")
        return
    st.header(f"{facts['piece']!r} · token {token_id} of {facts['tokenizer']}")
    st.subheader("Tokenizer facts")
    st.dataframe(facts_table(facts), hide_index=True)

    table_or_note("Indicators per model", data.token_stats(tokenizer_id, token_id), "No model with embedding statistics uses this tokenizer.")
    table_or_note(
        "Nearest neighbours (input embeddings)",
        data.token_neighbors(tokenizer_id, token_id),
        "Neighbours are stored only for each model's most anomalous tokens.",
    )

    st.subheader("Probes, verdicts and found prompts")
    stage_rows = data.token_stage_rows(tokenizer_id, token_id)
    if not stage_rows:
        st.caption("No later stage (probes, prompt search) has results for this token yet.")
    for table, rows in stage_rows.items():
        st.markdown(f"**`{table}`**")
        st.dataframe(rows, hide_index=True)

    st.subheader("The same string elsewhere")
    same = data.same_string_status(facts["text"])
    if same.empty:
        st.caption("The token's text is empty or undecodable, so it has no normalised string.")
        return
    st.caption("Every token, in every catalogued tokenizer, whose normalised text equals this token's, with its rank in each model.")
    st.dataframe(same, hide_index=True)
    for other in same.drop_duplicates(["tokenizer_id", "token_id"]).itertuples():
        if (other.tokenizer_id, other.token_id) != (tokenizer_id, token_id):
            nav.token_link(other.tokenizer_id, other.token_id, nav.token_label(other.piece, other.token_id, other.tokenizer))


st.title("Token")
search()
chosen = selected_token()
if chosen is None:
    st.info("Search a token above, or open one from a model's token table.")
else:
    token_details(*chosen)

