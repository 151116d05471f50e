"""What each registry entry still needs, and why, decided from file hashes and the catalog without loading weights.

A stage is pending when no succeeded run has its key (model revision, stage,
params with the current upstream run ids, code version). The reason says which
part changed: never run, parameters, code version, a newer upstream run
(stale), an interrupted run to resume, a failed run to redo, or an upstream
stage that is itself pending.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from catalog.database import ensure_schema, first_line
from catalog.schema import IngestRun, Model
from ingest import __version__
from ingest.jobs.pipeline import IngestReport
from ingest.jobs.registry import RegistryEntry
from ingest.jobs.runner import UPSTREAM_KEY, current_runs, keyed_params
from ingest.load.models import identify
from ingest.stages.all import STAGES, TOKENIZER_FACTS
from ingest.stages.base import upstream_stages
from ingest.stages.runs import params_hash

log = logging.getLogger("glitchdex.reingest")


@dataclass(frozen=True)
class Plan:
    """What one registry entry still needs: pending stages (in run order) with the reason of each."""

    entry: RegistryEntry
    pending: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    model: str | None = None  # the model's catalog name, when known without loading it

    @property
    def reason(self) -> str:
        return "; ".join(f"{stage}: {self.reasons[stage]}" for stage in self.pending) or "up to date"


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
        return _all_pending(entry, entry.stages, "hub model: its revision is known only once loaded")
    # Tokenizer-only encodings have no embeddings for the weight stages to look at.
    stages = entry.stages if identity.has_weights else (TOKENIZER_FACTS,)
    model_id = conn.scalar(select(Model.id).where(Model.name == identity.name, Model.revision == identity.revision))
    if model_id is None:
        return dataclasses.replace(_all_pending(entry, stages, f"revision {identity.revision[:12]} not catalogued"), model=identity.name)
    # Token facts belong to the tokenizer, catalogued with the model row in one transaction.
    reasons: dict[str, str] = {}
    for name in stages[1:]:
        reason = _stage_reason(conn, model_id, name, entry.configs[name].params, reasons)
        if reason is not None:
            reasons[name] = reason
    return Plan(entry, tuple(reasons), reasons, model=identity.name)


def _all_pending(entry: RegistryEntry, stages: Sequence[str], reason: str) -> Plan:
    return Plan(entry, tuple(stages), dict.fromkeys(stages, reason))


def _stage_reason(conn: Connection, model_id: int, name: str, params: Any, pending: dict[str, str]) -> str | None:
    """Why stage ``name`` must run, or None when a succeeded run has its key."""
    stage = STAGES[name]
    needed = stage.depends_on(params)
    waiting = [dep for dep in upstream_stages(stage, params) if dep in pending]
    if waiting:
        return f"after {waiting[0]}, which is pending"
    upstream = current_runs(conn, model_id, upstream_stages(stage, params))
    missing = [dep for dep in needed if dep not in upstream]
    if missing:
        return f"needs a succeeded {missing[0]} run (not listed for this model)"
    key = keyed_params(stage, params, upstream)
    latest = conn.execute(
        select(IngestRun.id, IngestRun.status, IngestRun.params, IngestRun.params_hash, IngestRun.code_version, IngestRun.error, IngestRun.n_rows)
        .where(IngestRun.model_id == model_id, IngestRun.stage == name)
        .order_by(IngestRun.id.desc())
    ).all()
    same_key = [run for run in latest if run.params_hash == params_hash(key) and run.code_version == __version__]
    if any(run.status == "succeeded" for run in same_key):
        return None
    if same_key and same_key[0].status == "running":
        return f"run {same_key[0].id} was interrupted after {same_key[0].n_rows or 0} rows: it resumes"
    if same_key and same_key[0].status == "failed":
        return f"run {same_key[0].id} failed ({same_key[0].error}): redo"
    succeeded = next((run for run in latest if run.status == "succeeded"), None)
    if succeeded is None:
        return "never succeeded"
    return _what_changed(succeeded, key)


def _what_changed(run: Any, key: dict[str, Any]) -> str:
    key = json.loads(json.dumps(key))  # tuples as the stored JSON has them: lists
    stored = {k: run.params.get(k) for k in key}
    if _without_upstream(stored) == _without_upstream(key):
        if run.code_version != __version__:
            return f"code version {run.code_version} -> {__version__}"
        before, now = stored.get(UPSTREAM_KEY) or {}, key.get(UPSTREAM_KEY) or {}
        newer = next(dep for dep in now if before.get(dep) != now[dep])
        return f"stale: {newer} run {now[newer]} is newer than run {before.get(newer)} that run {run.id} read"
    return f"parameters differ from run {run.id}"


def _without_upstream(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != UPSTREAM_KEY}


def log_report(spec: str, report: IngestReport) -> None:
    for stage in report.stages:
        detail = f", {stage.detail}" if stage.detail else ""
        log.info("%s %s: %s (%d rows, %.1fs%s)", spec, stage.stage, stage.status, stage.n_rows, stage.seconds, detail)
