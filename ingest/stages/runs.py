"""Run records (``ingest_run``) and the two ways a stage's work is run against them.

Guarantees:
- a stage's rows and its run's ``succeeded`` status commit in one transaction,
  so a failure (or a killed process) leaves no partial rows;
- a stage with a succeeded run of the same (model revision, params, code
  version) is skipped, so re-running an ingest is idempotent;
- a failed stage leaves a ``failed`` run with its one-line error;
- long stages (probes) use :func:`run_resumable_stage` instead: chunks commit as
  they go under a ``running`` run that queries ignore, and a killed process
  resumes that run on the next invocation with the same params.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Engine, Table, delete, func, select, update
from sqlalchemy.engine import Connection
from tqdm import tqdm

from catalog.database import CatalogError
from catalog.schema import IngestRun, utcnow
from ingest import __version__


@dataclass
class StageResult:
    stage: str
    status: str  # succeeded, skipped or failed
    run_id: int | None
    seconds: float
    n_rows: int = 0
    detail: str = ""



def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()



def insert_run(conn: Connection, model_id: int, stage: str, params: dict[str, Any], device: str) -> int:
    return conn.scalar(
        IngestRun.__table__.insert()
        .values(
            model_id=model_id,
            stage=stage,
            params=params,
            params_hash=params_hash(params),
            code_version=__version__,
            status="running",
            device=device,
            started_at=utcnow(),
        )
        .returning(IngestRun.id)
    )


def finish_run(conn: Connection, run_id: int, status: str, **values: Any) -> None:
    conn.execute(update(IngestRun).where(IngestRun.id == run_id).values(status=status, finished_at=utcnow(), **values))


def succeeded_run(conn: Connection, model_id: int, stage: str, params: dict[str, Any]) -> int | None:
    return conn.scalar(
        select(IngestRun.id)
        .where(
            IngestRun.model_id == model_id,
            IngestRun.stage == stage,
            IngestRun.params_hash == params_hash(params),
            IngestRun.code_version == __version__,
            IngestRun.status == "succeeded",
        )
        .order_by(IngestRun.id.desc())
        .limit(1)
    )


StageWork = Callable[[Connection, int, dict[str, Any]], tuple[int, dict[str, Any]]]


def run_stage(
    engine: Engine, model_id: int, stage: str, params: dict[str, Any], *, force: bool, device: str, work: StageWork
) -> StageResult:
    """Skip, or run ``work`` inside one transaction that also marks the run succeeded.

    ``work`` returns (rows written, facts to merge into the run's params).
    """
    with engine.begin() as conn:
        done = succeeded_run(conn, model_id, stage, params)
        if done is not None and not force:
            return StageResult(stage, "skipped", done, 0.0, detail=f"run {done} already succeeded with these params")
        # A 'running' run of this key can only be left over from a killed process.
        conn.execute(
            update(IngestRun)
            .where(IngestRun.model_id == model_id, IngestRun.stage == stage, IngestRun.status == "running")
            .values(status="failed", error="interrupted (process ended before the stage finished)", finished_at=utcnow())
        )
        run_id = insert_run(conn, model_id, stage, params, device)
    start = time.perf_counter()
    try:
        with engine.begin() as conn:
            n_rows, extra = work(conn, run_id, params)
            seconds = time.perf_counter() - start
            finish_run(conn, run_id, "succeeded", n_rows=n_rows, seconds=seconds, params={**params, **extra})
    except Exception as exc:
        _fail_run(engine, stage, run_id, exc, time.perf_counter() - start, tables=())
    return StageResult(stage, "succeeded", run_id, seconds, n_rows)


def _fail_run(engine: Engine, stage: str, run_id: int, exc: Exception, seconds: float, tables: Sequence[Table]) -> NoReturn:
    """Mark the run failed, remove whatever rows it committed, and re-raise as a one-line CatalogError."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    with engine.begin() as conn:
        _delete_run_rows(conn, run_id, tables)
        finish_run(conn, run_id, "failed", error=message, seconds=seconds)
    if isinstance(exc, CatalogError):
        raise exc
    raise CatalogError(f"stage {stage} failed: {message}") from exc


def _delete_run_rows(conn: Connection, run_id: int, tables: Sequence[Table]) -> None:
    for table in tables:
        conn.execute(delete(table).where(table.c.run_id == run_id))


@dataclass
class ResumableWork:
    """A stage too long for one transaction: items processed in committed chunks, then one finishing step.

    ``pending(conn, run_id)`` lists the items the run has not done yet (in a fixed
    order); ``process(conn, run_id, chunk)`` writes one chunk's rows and returns
    their number; ``finish`` is a :data:`StageWork` run in the transaction that
    marks the run succeeded. ``tables`` are every table whose rows carry the run id.
    """

    pending: Callable[[Connection, int], list[Any]]
    process: Callable[[Connection, int, list[Any]], int]
    finish: StageWork
    tables: Sequence[Table]
    chunk_size: int


def run_resumable_stage(
    engine: Engine,
    model_id: int,
    stage: str,
    params: dict[str, Any],
    *,
    force: bool,
    device: str,
    work: ResumableWork,
    show_progress: bool = False,
) -> StageResult:
    """Like :func:`run_stage`, but committing chunk by chunk so a killed process resumes where it stopped.

    Chunk rows belong to a ``running`` run, which every query ignores until the
    finishing transaction marks it succeeded. The next invocation with the same
    params and code version picks the running run up again (same run id, no
    duplicate rows: the item keys are primary keys); a running run of other params
    is marked failed and its rows removed. An exception other than an interrupt
    fails the run and removes its rows, as in :func:`run_stage`.
    """
    with engine.begin() as conn:
        done = succeeded_run(conn, model_id, stage, params)
        if done is not None and not force:
            return StageResult(stage, "skipped", done, 0.0, detail=f"run {done} already succeeded with these params")
        run_id, resumed = _resume_or_insert_run(conn, model_id, stage, params, device, work.tables)
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            pending = work.pending(conn, run_id)
        chunks = [pending[i : i + work.chunk_size] for i in range(0, len(pending), work.chunk_size)]
        for chunk in tqdm(chunks, desc=stage, unit="chunk", disable=not show_progress):
            chunk_start = time.perf_counter()
            with engine.begin() as conn:
                n_rows = work.process(conn, run_id, chunk)
                _add_progress(conn, run_id, n_rows, time.perf_counter() - chunk_start)
        finish_start = time.perf_counter()
        with engine.begin() as conn:
            n_rows, extra = work.finish(conn, run_id, params)
            previous = conn.execute(select(IngestRun.n_rows, IngestRun.seconds).where(IngestRun.id == run_id)).one()
            seconds = (previous.seconds or 0.0) + time.perf_counter() - finish_start
            finish_run(conn, run_id, "succeeded", n_rows=(previous.n_rows or 0) + n_rows, seconds=seconds, params={**params, **extra})
    except Exception as exc:
        _fail_run(engine, stage, run_id, exc, time.perf_counter() - start, work.tables)
    detail = f"resumed run {run_id}" if resumed else ""
    return StageResult(stage, "succeeded", run_id, seconds, (previous.n_rows or 0) + n_rows, detail=detail)


def _resume_or_insert_run(
    conn: Connection, model_id: int, stage: str, params: dict[str, Any], device: str, tables: Sequence[Table]
) -> tuple[int, bool]:
    running = conn.execute(
        select(IngestRun.id, IngestRun.params_hash, IngestRun.code_version).where(
            IngestRun.model_id == model_id, IngestRun.stage == stage, IngestRun.status == "running"
        )
    ).all()
    resumable = [r.id for r in running if r.params_hash == params_hash(params) and r.code_version == __version__]
    for run in running:
        if run.id not in resumable[-1:]:
            _delete_run_rows(conn, run.id, tables)
            finish_run(conn, run.id, "failed", error="interrupted and superseded by a run with other parameters")
    if resumable:
        conn.execute(update(IngestRun).where(IngestRun.id == resumable[-1]).values(device=device))
        return resumable[-1], True
    return insert_run(conn, model_id, stage, params, device), False


def _add_progress(conn: Connection, run_id: int, n_rows: int, seconds: float) -> None:
    """Running totals, so a resumed run reports the rows and time of all its invocations."""
    conn.execute(
        update(IngestRun)
        .where(IngestRun.id == run_id)
        .values(n_rows=func.coalesce(IngestRun.n_rows, 0) + n_rows, seconds=func.coalesce(IngestRun.seconds, 0.0) + seconds)
    )
