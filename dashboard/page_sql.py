"""SQL page: the user's query on a read-only connection with a time limit; CSV/Parquet downloads.

The query lives in the URL (``/sql?sql=...``, datasette-style): a shared link runs its query on opening.
Results with ``tokenizer_id`` and ``token_id`` columns get a link to each token's card.
"""

import io

import pandas as pd
import pyarrow as pa
import streamlit as st

from catalog.database import CatalogError
from catalog.docs import schema_markdown
from catalog.readonly import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, run_readonly_sql
from dashboard import nav
from dashboard.sql_examples import EXAMPLES

QUESTIONS = {example.question: example.sql for example in EXAMPLES}


def load_example() -> None:
    st.session_state.sql = QUESTIONS[st.session_state.example]


def parquet_bytes(rows: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    try:
        rows.to_parquet(buffer, index=False)
    except (pa.ArrowException, ValueError):
        # SQLite columns may mix types (e.g. ints and text); Parquet needs one type per column.
        as_text = {c: rows[c].map(lambda v: v if v is None else str(v)) for c in rows.columns if rows[c].dtype == object}
        buffer = io.BytesIO()
        rows.assign(**as_text).to_parquet(buffer, index=False)
    return buffer.getvalue()


def run(sql: str, timeout_s: float) -> None:
    try:
        result = run_readonly_sql(sql, timeout_s=timeout_s)
    except CatalogError as exc:
        st.session_state.pop("sql_result", None)
        st.error(str(exc))
        return
    rows = pd.DataFrame(result.rows, columns=result.columns)
    st.query_params["sql"] = sql
    note = f"{len(rows):,} rows in {result.seconds:.2f} s" + (f" (first {DEFAULT_MAX_ROWS:,} shown)" if result.truncated else "")
    st.session_state.sql_result = (rows, note)


st.title("SQL")
st.caption(
    "Read-only: the catalog is opened read-only, so writes, ATTACH and extension loading fail; "
    "each query stops at the time limit and returns at most "
    f"{DEFAULT_MAX_ROWS:,} rows. The schema reference is below."
)
st.selectbox("Saved questions", list(QUESTIONS), index=None, placeholder="Pick a saved question…", key="example", on_change=load_example)
shared_link = "sql" not in st.session_state and bool(st.query_params.get("sql"))
sql = st.text_area("Query", key=nav.url_state("sql", ""), height=220, placeholder="SELECT * FROM model")
timeout_s = st.number_input("Time limit (seconds)", min_value=1.0, max_value=120.0, value=DEFAULT_TIMEOUT_S, step=1.0)
if st.button("Run query", type="primary") or shared_link:
    run(sql, timeout_s)

if "sql_result" in st.session_state:
    rows, note = st.session_state.sql_result
    st.caption(note)
    if all(c in rows and pd.api.types.is_integer_dtype(rows[c]) for c in ("tokenizer_id", "token_id")):
        st.dataframe(
            nav.with_card_links(rows), hide_index=True, column_order=["card", *rows.columns], column_config={"card": nav.card_column("token")}
        )
    else:
        st.dataframe(rows, hide_index=True)
    csv_col, parquet_col = st.columns(2)
    csv_col.download_button("Download CSV", rows.to_csv(index=False).encode(), "glitchdex_query.csv", "text/csv")
    parquet_col.download_button(
        "Download Parquet", parquet_bytes(rows), "glitchdex_query.parquet", "application/vnd.apache.parquet"
    )

with st.expander("Schema reference (tables, columns, meanings)"):
    st.markdown(schema_markdown())
