"""Tables of the later stages (probes and verdicts, found prompts), found by reflection.

A catalog may sit at an older revision than the code that reads it, so this module assumes no
more about them than:

- verdicts: the probes stage's ``VERDICT_TABLE`` with columns ``run_id`` (-> ingest_run),
  ``token_id`` and ``verdict``; the latest succeeded run of a model holding verdicts is the current one;
- per-token results (probe transcripts in ``probe_result``, found prompts in ``prompt_search``,
  ...): every table with ``run_id`` and ``token_id`` columns that the token page does not
  already show, listed with the rows of succeeded runs (``noken_neighbor`` too: the nokens this
  token is a nearest neighbour of).
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Select, Subquery, Table, func, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.schema import MetaData

from catalog.schema import IngestRun, Model, Token

VERDICT_TABLE = "token_verdict"
SHOWN_ELSEWHERE = frozenset({"embedding_stat", "neighbor"})
ROW_LIMIT = 500


def _table(session: Session, name: str) -> Table | None:
    if not inspect(session.connection()).has_table(name):
        return None
    return Table(name, MetaData(), autoload_with=session.connection())


def _verdict_table(session: Session) -> Table | None:
    table = _table(session, VERDICT_TABLE)
    if table is None or not {"run_id", "token_id", "verdict"} <= set(table.c.keys()):
        return None
    return table


def _latest_runs_with_rows(table: Table) -> Subquery:
    """(model_id, run_id) of every model's latest succeeded run that wrote rows into ``table``."""
    return (
        select(IngestRun.model_id, func.max(IngestRun.id).label("run_id"))
        .where(IngestRun.status == "succeeded", IngestRun.id.in_(select(table.c.run_id).distinct()))
        .group_by(IngestRun.model_id)
        .subquery()
    )


def verdict_counts(session: Session) -> pd.DataFrame | None:
    table = _verdict_table(session)
    if table is None:
        return None
    latest = _latest_runs_with_rows(table)
    result = session.execute(
        select(Model.name.label("model"), table.c.verdict, func.count().label("n_tokens"))
        .join(latest, latest.c.run_id == table.c.run_id)
        .join(Model, Model.id == latest.c.model_id)
        .group_by(Model.name, table.c.verdict)
        .order_by(Model.name, table.c.verdict)
    )
    counts = pd.DataFrame(result.all(), columns=list(result.keys()))
    return None if counts.empty else counts  # the table exists from migration 0002 on, verdicts only after a probe run


def with_verdict(session: Session, query: Select, model_id: int) -> Select:
    """Add a ``verdict`` column (the model's latest verdict run) to a query over ``Token``."""
    table = _verdict_table(session)
    if table is None:
        return query
    latest = _latest_runs_with_rows(table)
    run_id = session.scalar(select(latest.c.run_id).where(latest.c.model_id == model_id))
    if run_id is None:
        return query
    return query.add_columns(table.c.verdict).outerjoin(
        table, (table.c.run_id == run_id) & (table.c.token_id == Token.token_id)
    )


def token_rows(session: Session, tokenizer_id: int, token_id: int) -> dict[str, pd.DataFrame]:
    """For every per-token table of a later stage, this token's rows from succeeded runs, newest first."""
    found = {}
    for name in sorted(set(inspect(session.connection()).get_table_names()) - SHOWN_ELSEWHERE):
        table = _table(session, name)
        if not {"run_id", "token_id"} <= set(table.c.keys()):
            continue
        result = session.execute(
            select(Model.name.label("model"), table)
            .join(IngestRun, IngestRun.id == table.c.run_id)
            .join(Model, Model.id == IngestRun.model_id)
            .where(IngestRun.status == "succeeded", Model.tokenizer_id == tokenizer_id, table.c.token_id == token_id)
            .order_by(table.c.run_id.desc())
            .limit(ROW_LIMIT)
        )
        rows = result.all()
        if rows:
            found[name] = pd.DataFrame(rows, columns=list(result.keys()))
    return found
