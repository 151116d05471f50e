"""Verdicts of the probes stage, found by reflection, for the overview counts and the token table's column.

Assumes no more than the probes stage's ``VERDICT_TABLE`` with columns ``run_id`` (-> ingest_run),
``token_id`` and ``verdict``; the latest succeeded run of a model holding verdicts is the current one.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Select, Subquery, Table, func, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.schema import MetaData

from catalog.schema import IngestRun, Model, Token

VERDICT_TABLE = "token_verdict"


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
