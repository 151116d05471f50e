"""Run (model, stage) units on an existing distributed engine: Ray, or submitit (Slurm job arrays, local processes).

A unit is one model's one pending stage. Its worker runs it exactly as an
inline reingest does (:func:`ingest.jobs.pipeline.ingest` with that one stage:
registration, the runner, its claims), writing to the catalog through the
database URL, so skipping, resuming and failure handling are the same. Workers
on other hosts need a catalog they can reach (PostgreSQL); local workers can
share a SQLite file.

Units run in waves: a unit starts once the units it depends on (same model)
have finished. A failed unit fails only itself; the units that needed it are
not started, and the run exits non-zero. On Ray, a unit whose stage can use a
GPU asks for one (``num_gpus``) when its device is a GPU; CPU units ask none.

Needs the ``cluster`` extra (``pip install 'glitchdex[cluster]'``: ray, submitit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from catalog.database import CatalogError, first_line, make_engine
from ingest.jobs.pipeline import IngestReport, StageConfig, ingest
from ingest.jobs.planning import Plan, log, log_report
from ingest.stages.all import STAGES, TOKENIZER_FACTS
from ingest.stages.base import upstream_stages

EXECUTORS = ("ray", "local", "slurm")


@dataclass(frozen=True)
class ClusterOptions:
    """Where units run: ``ray`` (``ray_address``, or a local cluster), ``local`` (submitit processes) or ``slurm``."""

    executor: str
    folder: Path = Path("glitchdex-jobs")
    ray_address: str | None = None
    ray_workers: int = 2  # CPUs of a local Ray cluster started here
    partition: str | None = None
    gpus_per_task: int = 1
    timeout_min: int = 120


@dataclass(frozen=True)
class WorkUnit:
    """One model's one stage, as a worker receives it."""

    spec: str
    stage: str
    config: StageConfig | None  # None for tokenizer_facts (registration only)

    @property
    def label(self) -> str:
        return f"{self.spec} {self.stage}"

    @property
    def wants_gpu(self) -> bool:
        return self.config is not None and STAGES[self.stage].uses_gpu and self.config.device.startswith("cuda")


def run_unit(url: str, unit: WorkUnit) -> IngestReport:
    """Worker side: register the model if needed and run the unit's stage, writing to the catalog at ``url``."""
    engine = make_engine(url)
    try:
        return ingest(unit.spec, engine, configs={unit.stage: unit.config} if unit.config else {})
    finally:
        engine.dispose()


def unit_waves(plans: Sequence[Plan]) -> list[list[WorkUnit]]:
    """Every pending stage as a unit, wave k holding the units whose upstream units are in earlier waves."""
    waves: list[list[WorkUnit]] = []
    for item in plans:
        entry, level = item.entry, {}
        for name in item.pending:
            config = entry.configs.get(name)
            upstream = (TOKENIZER_FACTS, *upstream_stages(STAGES[name], config.params)) if config else ()
            level[name] = 1 + max((level[dep] for dep in upstream if dep in level), default=-1)
            while len(waves) <= level[name]:
                waves.append([])
            waves[level[name]].append(WorkUnit(entry.spec, name, config))
    return waves


def reingest_on_cluster(engine: Engine, plans: Sequence[Plan], options: ClusterOptions) -> bool:
    """Run every pending unit on the cluster, wave by wave; returns False if any unit failed or could not start."""
    submit = _ray_submitter(options) if options.executor == "ray" else _submitit_submitter(options)
    url = engine.url.render_as_string(hide_password=False)
    failed: set[str] = set()
    for wave in unit_waves(plans):
        runnable = [unit for unit in wave if not _blocked(unit, failed)]
        for unit in (unit for unit in wave if unit not in runnable):
            log.error("%s: not started: a stage it needs failed", unit.label)
            failed.add(unit.label)
        for unit, outcome in zip(runnable, submit(url, runnable)):
            if isinstance(outcome, IngestReport):
                log_report(unit.spec, outcome)
            else:
                log.error("%s: failed: %s", unit.label, outcome)
                failed.add(unit.label)
    return not failed


def _blocked(unit: WorkUnit, failed: set[str]) -> bool:
    if unit.config is None:
        return False
    needed = STAGES[unit.stage].depends_on(unit.config.params)
    return any(f"{unit.spec} {dep}" in failed for dep in (TOKENIZER_FACTS, *needed))


Submitter = Callable[[str, Sequence[WorkUnit]], list[IngestReport | str]]


def _ray_submitter(options: ClusterOptions) -> Submitter:
    try:
        import ray
    except ImportError:
        raise CatalogError("--executor ray needs Ray: pip install 'glitchdex[cluster]'") from None
    if not ray.is_initialized():
        if options.ray_address:
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=options.ray_workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(run_unit)

    def submit(url: str, units: Sequence[WorkUnit]) -> list[IngestReport | str]:
        refs = [remote.options(num_cpus=1, num_gpus=int(unit.wants_gpu), name=unit.label).remote(url, unit) for unit in units]
        return [_ray_outcome(ray, ref) for ref in refs]

    return submit


def _ray_outcome(ray: Any, ref: Any) -> IngestReport | str:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        return first_line(exc.cause) if exc.cause is not None else first_line(exc)
    except ray.exceptions.RayError as exc:  # a worker died (out of memory, killed)
        return first_line(exc)


def _submitit_submitter(options: ClusterOptions) -> Submitter:
    try:
        import submitit
        import submitit.core.utils
    except ImportError:
        raise CatalogError("--executor local/slurm needs submitit: pip install 'glitchdex[cluster]'") from None
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder=options.folder)
        executor.update_parameters(timeout_min=options.timeout_min)
    else:
        executor = submitit.AutoExecutor(folder=options.folder, cluster="slurm")
        executor.update_parameters(
            name="glitchdex", timeout_min=options.timeout_min, slurm_partition=options.partition, gpus_per_node=options.gpus_per_task, tasks_per_node=1
        )

    def submit(url: str, units: Sequence[WorkUnit]) -> list[IngestReport | str]:
        jobs = executor.map_array(run_unit, [url] * len(units), list(units))
        outcomes: list[IngestReport | str] = []
        for unit, job in zip(units, jobs):
            log.info("%s: submitted as job %s", unit.label, job.job_id)
            try:
                outcomes.append(job.result())
            except submitit.core.utils.FailedJobError as exc:
                outcomes.append(f"{_worker_exception(exc)} (log: {job.paths.stderr})")
        return outcomes

    return submit


def _worker_exception(error: Exception) -> str:
    """The exception line that ends the worker's traceback, which submitit wraps between dashed rules."""
    trace = str(error).split("----------------------")
    lines = trace[1].strip().splitlines() if len(trace) > 2 else str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
