"""glitchdex dashboard: `streamlit run dashboard/app.py` (or `glitchdex dashboard`).

Reads the catalog named by GLITCHDEX_DATABASE_URL (default sqlite:///glitchdex.sqlite), like the CLI.
"""

from pathlib import Path

import streamlit as st

from catalog.database import CatalogError
from dashboard import data, nav

# A local icon: a ":material/...:" page icon makes the browser fetch it from fonts.gstatic.com.
st.set_page_config(page_title="glitchdex", page_icon=str(Path(__file__).with_name("icon.png")), layout="wide")
page = st.navigation(nav.pages())
try:
    data.check_schema()
except CatalogError as exc:
    st.error(str(exc))
    st.stop()
page.run()
