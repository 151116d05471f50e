"""Nokens page: the catalog's noken experiments, once a stage writes them."""

import streamlit as st

from dashboard import data, later_tables

st.title("Nokens")
tables = data.noken_tables()
if not tables:
    st.info(
        f"No noken experiments are in the catalog yet: tables named `{later_tables.NOKEN_PREFIX}*` "
        "appear here as soon as a stage writes them."
    )
for name, rows in tables.items():
    st.subheader(f"`{name}`")
    st.caption(f"First {later_tables.ROW_LIMIT} rows; query the whole table on the SQL page.")
    st.dataframe(rows, hide_index=True)
