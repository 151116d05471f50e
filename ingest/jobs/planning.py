"""What each registry entry still needs, decided from file hashes and the catalog without loading weights."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from catalog.database import ensure_schema, first_line
from catalog.schema import Model
from ingest.jobs.pipeline import IngestReport
from ingest.jobs.registry import RegistryEntry
from ingest.load.models import identify
from ingest.stages.runs import succeeded_run

TOKENIZER_STAGE = "tokenizer_facts"

log = logging.getLogger("glitchdex.reingest")


@dataclass(frozen=True)
class Plan:
    """What one registry entry still needs."""

    entry: RegistryEntry
    pending: tuple[str, ...] = ()
    reason: str = ""
    error: str | None = None



def plan(engine: Engine, entries: Sequence[RegistryEntry]) -> list[Plan]:
    """Pending stages of every entry, decided from file hashes and the catalog, without loading weights."""
    ensure_schema(engine)
    with engine.connect() as conn:
        return [_plan_entry(conn, entry) for entry in entries]


def _plan_entry(conn: Connection, entry: RegistryEntry) -> Plan:
    try:
        identity = identify(entry.spec)
    except Exception as exc:  # noqa: BLE001 - an unreadable model is that model's failure, not the run's
        return Plan(entry, error=first_line(exc))
    if identity is None:
        return Plan(entry, entry.stages, "hub model: its revision is known only once loaded")
    # Tokenizer-only encodings have no embeddings for the weight stages to look at.
    stages = entry.stages if identity.has_weights else tuple(s for s in entry.stages if s == TOKENIZER_STAGE)
    model_id = conn.scalar(select(Model.id).where(Model.name == identity.name, Model.revision == identity.revision))
    if model_id is None:
        return Plan(entry, stages, f"revision {identity.revision[:12]} not catalogued")
    # Token facts belong to the tokenizer, catalogued with the model row in one transaction.
    pending = tuple(
        stage for stage in stages if stage != TOKENIZER_STAGE and succeeded_run(conn, model_id, stage, entry.stage_params(stage)) is None
    )
    return Plan(entry, pending, "no succeeded run with these params and code version" if pending else "up to date")


def log_report(spec: str, report: IngestReport) -> None:
    for stage in report.stages:
        detail = f", {stage.detail}" if stage.detail else ""
        log.info("%s %s: %s (%d rows, %.1fs%s)", spec, stage.stage, stage.status, stage.n_rows, stage.seconds, detail)
