"""Run records (``ingest_run``) and the shape of a stage's work; :mod:`ingest.jobs.runner` runs it.

A stage's work is :class:`ResumableWork`: items processed in committed chunks
under a ``running`` run (which every query ignores), then one finishing step in
the transaction that marks the run succeeded. A stage without items (embedding
statistics) is all finishing step: its rows and its ``succeeded`` status commit
together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

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


@dataclass
class ResumableWork:
    """A stage's body: items processed in committed chunks (none by default), then one finishing step.

    ``pending(conn, run_id)`` lists the items the run has not done yet (in a fixed
    order); ``process(conn, run_id, chunk)`` writes one chunk's rows and returns
    their number; ``finish(conn, run_id, params)`` runs in the transaction that
    marks the run succeeded and returns (rows written, facts to merge into the run's params).
    """

    finish: StageWork
    pending: Callable[[Connection, int], list[Any]] = lambda _conn, _run_id: []
    process: Callable[[Connection, int, list[Any]], int] = lambda _conn, _run_id, _chunk: 0
    chunk_size: int = 1

