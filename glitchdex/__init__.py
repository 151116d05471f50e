"""glitchdex from Python: the catalog's answers as polars DataFrames, for notebooks.

    import glitchdex
    cat = glitchdex.open()                       # $GLITCHDEX_DATABASE_URL, else ./glitchdex.sqlite
    cat.models()                                 # one row per catalogued model
    cat.tokens("SmolLM2", verdict="verified")    # tokens with every indicator and verdict
    cat.token(" the")                            # the same string in every catalogued tokenizer
    cat.probe_transcripts("SmolLM2", 23134)      # every probe of one token

A thin layer over :mod:`catalog.queries`: the CLI, the dashboard and the exports read the same queries.
Errors (an unknown model, a model never probed) raise :class:`CatalogError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl
from sqlalchemy import Engine

from catalog.database import CatalogError, ensure_schema, make_engine, session_factory
from catalog.queries import ModelSummary, ProbeTranscript, TokenAcrossTokenizers, list_models, probe_transcripts, same_string_everywhere
from catalog.queries.exports import TokenSelection, model_runs, tokens_frame

__all__ = ["Catalog", "CatalogError", "open"]


class Catalog:
    """A glitchdex catalog (SQLite or PostgreSQL), read through the same queries as the CLI."""

    def __init__(self, engine: Engine) -> None:
        ensure_schema(engine)
        self.engine = engine
        self._sessions = session_factory(engine)

    def models(self) -> pl.DataFrame:
        """Every catalogued model: name, spec, source, architecture, sizes, tokenizer, latest statistics run."""
        with self._sessions() as session:
            return _frame(list_models(session), ModelSummary)

    def tokens(self, model: str, verdict: str | None = None, category: str | None = None, top: int | None = None) -> pl.DataFrame:
        """A model's tokens, most anomalous first: tokenizer facts, every indicator of its latest statistics run and
        the verdict of its latest probes run (null where not probed). ``verdict``, ``category`` and ``top``
        (anomaly rank <= top) filter, as ``glitchdex export`` does."""
        with self._sessions() as session:
            return tokens_frame(session, model_runs(session, model), TokenSelection(verdict, category, top))

    def token(self, text: str) -> pl.DataFrame:
        """Where ``text`` (NFKC, surrounding whitespace stripped) is one token, in every catalogued tokenizer."""
        with self._sessions() as session:
            return _frame(same_string_everywhere(session, text), TokenAcrossTokenizers)

    def probe_transcripts(self, model: str, token_id: int) -> pl.DataFrame:
        """Every probe of one token in the model's latest probes run: template, output, target probability and rank."""
        with self._sessions() as session:
            return _frame(probe_transcripts(session, model, token_id), ProbeTranscript)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"glitchdex.Catalog({self.engine.url.render_as_string(hide_password=True)!r})"


def open(url: str | None = None) -> Catalog:  # noqa: A001 - the API's entry point mirrors the builtin on purpose
    """The catalog at ``url`` (an SQLAlchemy URL); default ``$GLITCHDEX_DATABASE_URL``, else ``sqlite:///glitchdex.sqlite``."""
    return Catalog(make_engine(url))


def _frame(rows: list[Any], kind: type) -> pl.DataFrame:
    """Query dataclasses as a DataFrame; an empty result still has the dataclass's columns."""
    if not rows:
        return pl.DataFrame(schema=[field.name for field in dataclasses.fields(kind)])
    return pl.DataFrame([dataclasses.asdict(row) for row in rows], infer_schema_length=None)
