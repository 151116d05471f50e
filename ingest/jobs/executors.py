"""Compute stages on cluster workers (submitit: Slurm job arrays, or local processes); write here.

Workers never touch the database: each loads one model on its own GPU, computes
the token facts and embedding statistics and returns them as plain data
(:class:`ComputedModel`, pickled by submitit into the jobs folder). The calling
process is the single writer: it stores each result through the same
registration and ``run_stage`` transaction as a local ingest, so skipping,
failure handling and row layout are identical.

Needs the ``cluster`` extra (``pip install 'glitchdex[cluster]'``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from catalog.database import CatalogError, first_line
from ingest.compute.embedding_stats import EmbeddingStats, StatsParams
from ingest.compute.tokenizer_facts import compute_token_facts
from ingest.jobs.pipeline import IngestReport
from ingest.jobs.planning import Plan, log, log_report
from ingest.load.models import load
from ingest.stages.embedding_stats import compute_model_stats, write_stats
from ingest.stages.runs import run_stage
from ingest.stages.tokenizer_facts import (
    ModelRecord,
    check_vocabulary_fits_embeddings,
    model_record,
    record_tokenizer_stage,
    register_model,
)

if TYPE_CHECKING:
    import submitit


@dataclass(frozen=True)
class ClusterOptions:
    """Where workers run: ``local`` (processes on this machine, for testing) or ``slurm``."""

    executor: str
    folder: Path
    device: str = "cuda"
    partition: str | None = None
    gpus_per_task: int = 1
    timeout_min: int = 120


@dataclass
class ComputedModel:
    """Everything a worker computed for one model; tensors on the CPU so any writer can unpickle them."""

    record: ModelRecord
    facts: dict[str, list[Any]]
    facts_seconds: float
    params: StatsParams
    device: str
    stats: EmbeddingStats | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def compute_model(spec: str, stages: Sequence[str], params: StatsParams, device: str) -> ComputedModel:
    """Worker side: load ``spec`` on ``device`` and compute its stages without a database."""
    loaded = load(spec, with_weights="embedding_stats" in stages, device=device)
    check_vocabulary_fits_embeddings(loaded)
    start = time.perf_counter()
    facts = compute_token_facts(loaded.vocabulary)
    computed = ComputedModel(model_record(loaded), facts, time.perf_counter() - start, params, device)
    if "embedding_stats" in stages and loaded.has_weights:
        start = time.perf_counter()
        stats, extra = compute_model_stats(loaded, facts, params, device)
        computed.stats = _to_cpu(stats)
        computed.extra = {**extra, "worker_seconds": round(time.perf_counter() - start, 3)}
    return computed


def _to_cpu(stats: EmbeddingStats) -> EmbeddingStats:
    return dataclasses.replace(
        stats, **{f.name: getattr(stats, f.name).cpu() for f in dataclasses.fields(stats) if hasattr(getattr(stats, f.name), "cpu")}
    )


def write_computed(engine: Engine, computed: ComputedModel, *, force: bool = False) -> IngestReport:
    """Writer side: store a worker's result (skipping stages that succeeded meanwhile)."""
    model_id, tokenizer_id, facts = register_model(engine, computed.record, lambda: computed.facts)
    report = IngestReport(model_id=model_id, model_name=computed.record.model["name"])
    report.stages.append(record_tokenizer_stage(engine, model_id, facts, computed.facts_seconds))
    stats = computed.stats
    if stats is not None:
        report.stages.append(
            run_stage(
                engine,
                model_id,
                "embedding_stats",
                dataclasses.asdict(computed.params),
                force=force,
                device=computed.device,
                work=lambda conn, run_id, _params: (write_stats(conn, run_id, model_id, tokenizer_id, stats), computed.extra),
            )
        )
    return report


def make_executor(options: ClusterOptions) -> submitit.Executor:
    try:
        import submitit
    except ImportError:
        raise CatalogError("--executor needs submitit: pip install 'glitchdex[cluster]'") from None
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder=options.folder)
        executor.update_parameters(timeout_min=options.timeout_min)
        return executor
    if options.executor == "slurm":
        executor = submitit.AutoExecutor(folder=options.folder, cluster="slurm")
        executor.update_parameters(
            name="glitchdex",
            timeout_min=options.timeout_min,
            slurm_partition=options.partition,
            gpus_per_node=options.gpus_per_task,
            tasks_per_node=1,
        )
        return executor
    raise CatalogError(f"unknown executor {options.executor!r}; choose local or slurm")


def reingest_on_cluster(engine: Engine, plans: Sequence[Plan], options: ClusterOptions) -> bool:
    """One array job, one task per model; results are written here as they are collected.

    Returns False if any model failed (on its worker or while writing); the others are still written.
    """
    executor = make_executor(options)  # first: it explains a missing submitit
    import submitit.core.utils

    entries = [plan.entry for plan in plans]
    jobs = executor.map_array(
        compute_model,
        [e.spec for e in entries],
        [e.stages for e in entries],
        [e.params for e in entries],
        [options.device] * len(entries),
    )
    for entry, job in zip(entries, jobs):
        log.info("%s: submitted as job %s", entry.spec, job.job_id)
    ok = True
    for entry, job in zip(entries, jobs):
        try:
            log_report(entry.spec, write_computed(engine, job.result()))
        except submitit.core.utils.FailedJobError as exc:
            log.error("%s: failed on worker %s: %s (log: %s)", entry.spec, job.job_id, _worker_exception(exc), job.paths.stderr)
            ok = False
        except Exception as exc:  # noqa: BLE001 - a failed write is logged; the other models go on
            log.error("%s: failed: %s", entry.spec, first_line(exc))
            ok = False
    return ok


def _worker_exception(error: Exception) -> str:
    """The exception line that ends the worker's traceback, which submitit wraps between dashed rules."""
    trace = str(error).split("----------------------")
    lines = trace[1].strip().splitlines() if len(trace) > 2 else str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
