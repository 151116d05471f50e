"""``glitchdex status``: the catalog's stage states, with what only the job layer knows.

A ``running`` run whose unit claim is free was interrupted (it resumes on the
next run); a stage the registry lists whose key has no succeeded run is
``pending``, with the planner's reason (no weights are loaded).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from catalog.database import ensure_schema
from catalog.queries.status import StageStatus, stage_status
from ingest.jobs.claims import is_claimed, unit_claim_name
from ingest.jobs.planning import plan
from ingest.jobs.registry import load_registry
from ingest.stages.all import STAGE_NAMES

KEPT_STATES = ("failed", "interrupted", "stale")  # say more than "pending" does


def status_table(engine: Engine, model: str | None = None, registry: Path | None = None) -> list[StageStatus]:
    """Every (model, stage) state; with ``registry``, its listed stages that are due are pending."""
    ensure_schema(engine)
    with Session(engine) as session:
        rows = [_live(engine, row) for row in stage_status(session, model)]
    if registry is None:
        return rows
    by_unit = {(row.model, row.stage): row for row in rows}
    names = {row.model for row in rows}
    for item in plan(engine, load_registry(registry)):
        name = item.model or item.entry.spec
        if model is not None and name not in names:
            continue
        for stage in item.pending:
            row = by_unit.get((name, stage))
            if row is None:
                by_unit[(name, stage)] = StageStatus(0, name, stage, "pending", detail=item.reasons[stage])
            elif row.state not in KEPT_STATES:
                by_unit[(name, stage)] = row.with_state("pending", item.reasons[stage])
    order = {name: index for index, name in enumerate(STAGE_NAMES)}
    return sorted(by_unit.values(), key=lambda row: (row.model, order.get(row.stage, len(order)), row.stage))


def _live(engine: Engine, row: StageStatus) -> StageStatus:
    if row.state == "running" and not is_claimed(engine, unit_claim_name(row.model_id, row.stage)):
        return row.with_state("interrupted", f"resumable: {row.detail}")
    return row
