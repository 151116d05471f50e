"""Where every stage of every model stands, from the catalog alone: the latest run of each (model, stage).

States: ``succeeded``; ``stale`` (succeeded, but a stage it read has a newer
succeeded run since); ``running`` (a run not finished: live, or interrupted
and resumable, which only the job layer can tell by its claim); ``failed``
(with its error). Stages a registry lists but the catalog lacks are added by
the job layer as ``pending``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.queries.runs import find_model
from catalog.schema import IngestRun, Model

UPSTREAM_KEY = "upstream_runs"  # the run params that name the upstream runs a run read


@dataclass(frozen=True)
class StageStatus:
    model_id: int
    model: str
    stage: str
    state: str
    run_id: int | None = None
    n_rows: int | None = None
    seconds: float | None = None
    params_hash: str | None = None
    started_at: dt.datetime | None = None
    detail: str = ""  # the error of a failed run, what a stale run read, why a stage is pending

    def with_state(self, state: str, detail: str) -> StageStatus:
        return replace(self, state=state, detail=detail)


def stage_status(session: Session, model: str | None = None) -> list[StageStatus]:
    """The latest run of every (model, stage), by model name and then run order; one model with ``model``."""
    latest = select(func.max(IngestRun.id)).group_by(IngestRun.model_id, IngestRun.stage)
    query = select(IngestRun, Model.name).join(Model, Model.id == IngestRun.model_id).where(IngestRun.id.in_(latest))
    if model is not None:
        query = query.where(Model.id == find_model(session, model).id)
    rows = session.execute(query.order_by(Model.name, Model.id, IngestRun.id)).all()
    current = _latest_succeeded(session, {run.model_id for run, _ in rows})
    return [_status(run, name, current) for run, name in rows]


def _latest_succeeded(session: Session, model_ids: set[int]) -> dict[tuple[int, str], int]:
    rows = session.execute(
        select(IngestRun.model_id, IngestRun.stage, func.max(IngestRun.id))
        .where(IngestRun.status == "succeeded", IngestRun.model_id.in_(model_ids))
        .group_by(IngestRun.model_id, IngestRun.stage)
    ).all()
    return {(model_id, stage): run_id for model_id, stage, run_id in rows}


def _status(run: IngestRun, model: str, current: dict[tuple[int, str], int]) -> StageStatus:
    status = StageStatus(run.model_id, model, run.stage, run.status, run.id, run.n_rows, run.seconds, run.params_hash, run.started_at)
    if run.status == "failed":
        return status.with_state("failed", run.error or "")
    if run.status != "succeeded":
        return status.with_state("running", f"{run.n_rows or 0} rows committed")
    read = (run.params or {}).get(UPSTREAM_KEY) or {}
    newer = [(stage, run_id) for stage, run_id in read.items() if current.get((run.model_id, stage), run_id) != run_id]
    if newer:
        stage, run_id = newer[0]
        return status.with_state("stale", f"read {stage} run {run_id}; run {current[(run.model_id, stage)]} is newer")
    return status
