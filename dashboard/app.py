"""glitchdex dashboard: `streamlit run dashboard/app.py` (or `glitchdex dashboard`).

Reads the catalog named by GLITCHDEX_DATABASE_URL (default sqlite:///glitchdex.sqlite), like the CLI.
"""

import streamlit as st

from dashboard import nav

st.set_page_config(page_title="glitchdex", page_icon=":material/bug_report:", layout="wide")
st.navigation(nav.pages()).run()
