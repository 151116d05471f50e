"""The one runner of every stage: skip, resume, redo, with the same failure rule for all.

A run is keyed by (model revision, stage, params hash, code version); the
hashed params are the stage's :meth:`run_params` plus ``upstream_runs``, the
run id of each dependency's current (latest succeeded) run, so a new upstream
run makes the stage pending again.

- A succeeded run with the key: the stage is skipped.
- A ``running`` run with the key whose unit nobody holds: it was interrupted
  (killed, Ctrl-C); it is resumed (same run id, its committed chunks kept, the
  items' primary keys forbid duplicates).
- Otherwise a new run starts; running runs of other keys are superseded (marked
  failed, their rows removed).
- An exception fails the run: its error is kept, its rows are removed. Only a
  succeeded run's rows are results; queries read nothing else.

A unit claim (:mod:`ingest.jobs.claims`) is held while a (model, stage) runs,
so two processes never run the same unit at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sqlalchemy import Engine, Table, delete, func, select, update
from sqlalchemy.engine import Connection
from tqdm import tqdm

from catalog.database import CatalogError, ensure_schema, first_line
from catalog.queries.status import UPSTREAM_KEY
from catalog.schema import IngestRun, Model
from ingest import __version__
from ingest.jobs.claims import ClaimHeld, claim, unit_claim_name
from ingest.load.models import LoadedModel
from ingest.stages.base import Stage, Unit, upstream_stages
from ingest.stages.runs import StageResult, finish_run, insert_run, params_hash, succeeded_run


def keyed_params(stage: Stage, params: Any, upstream: Mapping[str, int]) -> dict[str, Any]:
    """The params a run of ``stage`` is recorded and skipped by."""
    recorded = stage.run_params(params)
    return {**recorded, UPSTREAM_KEY: dict(sorted(upstream.items()))} if upstream else recorded


def current_runs(conn: Connection, model_id: int, stages: Sequence[str]) -> dict[str, int]:
    """The latest succeeded run of each of ``stages`` that has one."""
    rows = conn.execute(
        select(IngestRun.stage, func.max(IngestRun.id))
        .where(IngestRun.model_id == model_id, IngestRun.stage.in_(stages), IngestRun.status == "succeeded")
        .group_by(IngestRun.stage)
    ).all()
    return dict(rows)


def upstream_runs(conn: Connection, model_id: int, model_name: str, stage: Stage, params: Any) -> dict[str, int]:
    needed = stage.depends_on(params)
    found = current_runs(conn, model_id, upstream_stages(stage, params))
    missing = [name for name in needed if name not in found]
    if missing:
        raise CatalogError(f"stage {stage.name} of {model_name!r} needs a succeeded {missing[0]} run first")
    return found


def catalogued_ids(engine: Engine, loaded: LoadedModel) -> tuple[int, int]:
    """(model id, tokenizer id) of the loaded model's catalog row (same name and revision), or a one-line error."""
    with engine.connect() as conn:
        row = conn.execute(select(Model.id, Model.tokenizer_id).where(Model.name == loaded.name, Model.revision == loaded.revision)).first()
    if row is None:
        raise CatalogError(f"model {loaded.name!r} at this revision is not in the catalog: run `glitchdex ingest {loaded.spec}` first")
    return row.id, row.tokenizer_id


def run_stage(
    engine: Engine,
    stage: Stage,
    params: Any,
    *,
    loaded: LoadedModel | None = None,
    ids: tuple[int, int] | None = None,
    device: str = "cpu",
    force: bool = False,
    show_progress: bool = False,
    chunk_size: int | None = None,
) -> StageResult:
    """Run ``stage`` for one catalogued model: ``ids`` (model id, tokenizer id), else the row of ``loaded``.

    Returns a skipped result when a succeeded run has the key (unless ``force``)
    or when another process holds the unit; raises a one-line CatalogError when the stage fails.
    """
    ensure_schema(engine)
    if stage.needs_weights and (loaded is None or not loaded.has_weights):
        raise CatalogError(f"stage {stage.name} needs the model's weights")
    model_id, tokenizer_id = ids or catalogued_ids(engine, loaded)
    name = loaded.name if loaded is not None else str(model_id)
    try:
        with claim(engine, unit_claim_name(model_id, stage.name)):
            return _run_claimed(engine, stage, params, Unit(engine, model_id, tokenizer_id, {}, device, loaded, chunk_size), name, force, show_progress)
    except ClaimHeld:
        return StageResult(stage.name, "skipped", None, 0.0, detail="another process is running this unit")


def _run_claimed(engine: Engine, stage: Stage, params: Any, unit: Unit, name: str, force: bool, show_progress: bool) -> StageResult:
    with engine.connect() as conn:
        upstream = upstream_runs(conn, unit.model_id, name, stage, params)
        key = keyed_params(stage, params, upstream)
        done = succeeded_run(conn, unit.model_id, stage.name, key)
    if done is not None and not force:
        return StageResult(stage.name, "skipped", done, 0.0, detail=f"run {done} already succeeded with these params")
    work = stage.prepare(Unit(unit.engine, unit.model_id, unit.tokenizer_id, upstream, unit.device, unit.loaded, unit.chunk_size), params)
    with engine.begin() as conn:
        run_id, resumed = _resume_or_insert_run(conn, unit.model_id, stage, key, unit.device, resume=not force)
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            pending = work.pending(conn, run_id)
        size = unit.chunk_size or work.chunk_size
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        for chunk in tqdm(chunks, desc=stage.name, unit="chunk", disable=not show_progress):
            chunk_start = time.perf_counter()
            with engine.begin() as conn:
                n_rows = work.process(conn, run_id, chunk)
                _add_progress(conn, run_id, n_rows, time.perf_counter() - chunk_start)
        finish_start = time.perf_counter()
        with engine.begin() as conn:
            n_rows, extra = work.finish(conn, run_id, key)
            previous = conn.execute(select(IngestRun.n_rows, IngestRun.seconds).where(IngestRun.id == run_id)).one()
            seconds = (previous.seconds or 0.0) + time.perf_counter() - finish_start
            total = (previous.n_rows or 0) + n_rows
            finish_run(conn, run_id, "succeeded", n_rows=total, seconds=seconds, params={**key, **extra})
    except Exception as exc:
        _fail_run(engine, stage, run_id, exc, time.perf_counter() - start)
    return StageResult(stage.name, "succeeded", run_id, seconds, total, detail=f"resumed run {run_id}" if resumed else "")


def _resume_or_insert_run(conn: Connection, model_id: int, stage: Stage, key: dict[str, Any], device: str, *, resume: bool) -> tuple[int, bool]:
    """The interrupted run of this key to resume, else a new run; other running runs of the unit are superseded."""
    running = conn.execute(
        select(IngestRun.id, IngestRun.params_hash, IngestRun.code_version).where(
            IngestRun.model_id == model_id, IngestRun.stage == stage.name, IngestRun.status == "running"
        )
    ).all()
    same_key = [r.id for r in running if resume and r.params_hash == params_hash(key) and r.code_version == __version__]
    for run in running:
        if run.id not in same_key[-1:]:
            _delete_run_rows(conn, run.id, stage.tables)
            finish_run(conn, run.id, "failed", error="interrupted and superseded by a run with other parameters")
    if same_key:
        conn.execute(update(IngestRun).where(IngestRun.id == same_key[-1]).values(device=device))
        return same_key[-1], True
    return insert_run(conn, model_id, stage.name, key, device), False


def _add_progress(conn: Connection, run_id: int, n_rows: int, seconds: float) -> None:
    """Running totals, so a resumed run reports the rows and time of all its invocations."""
    conn.execute(
        update(IngestRun)
        .where(IngestRun.id == run_id)
        .values(n_rows=func.coalesce(IngestRun.n_rows, 0) + n_rows, seconds=func.coalesce(IngestRun.seconds, 0.0) + seconds)
    )


def _fail_run(engine: Engine, stage: Stage, run_id: int, exc: Exception, seconds: float) -> NoReturn:
    """Mark the run failed, remove whatever rows it committed, and re-raise as a one-line CatalogError."""
    message = first_line(exc)
    with engine.begin() as conn:
        _delete_run_rows(conn, run_id, stage.tables)
        finish_run(conn, run_id, "failed", error=message, seconds=seconds)
    if isinstance(exc, CatalogError):
        raise exc
    raise CatalogError(f"stage {stage.name} failed: {message}") from exc


def _delete_run_rows(conn: Connection, run_id: int, tables: Sequence[Table]) -> None:
    for table in tables:
        conn.execute(delete(table).where(table.c.run_id == run_id))
