"""Bring the catalog up to date with the model registry; safe to run from cron.

A model's stage is *pending* when no succeeded run exists for its (model
revision, stage, params hash, code version): a new registry line, a new
revision of a model file, changed parameters or a new glitchdex version make
it pending; failed and interrupted runs stay pending until they succeed.
Pending stages run through :func:`ingest.jobs.pipeline.ingest`, which skips what
succeeded meanwhile, so nothing is computed or stored twice.

One reingest at a time per catalog (a claim, :mod:`ingest.jobs.claims`: an
exclusive ``flock`` on a lock file, and on PostgreSQL a session advisory lock
as well, which protects a catalog shared by several machines); each (model,
stage) unit is claimed too, so even reingests with different lock files, or a
hand-run stage, never run one unit twice. Exit status: 0 all up to date, 1 some
model failed (the others still ran), 2 bad registry or database, 75 another
reingest holds the lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine

from catalog.database import CatalogError, first_line
from ingest.jobs.claims import ClaimHeld, claim
from ingest.jobs.executors import ClusterOptions, reingest_on_cluster
from ingest.jobs.pipeline import ingest
from ingest.jobs.planning import Plan, log, log_report, plan
from ingest.jobs.registry import RegistryEntry, load_registry
from ingest.load.models import LoadedModel

EXIT_OK = 0
EXIT_MODEL_FAILED = 1
EXIT_LOCKED = 75  # EX_TEMPFAIL: "try again later", what cron wrappers expect from a busy job
LOCK_NAME = "reingest"


# --- running -------------------------------------------------------------------------


def reingest(
    engine: Engine,
    entries: Sequence[RegistryEntry],
    *,
    dry_run: bool = False,
    cluster: ClusterOptions | None = None,
    loaded_models: Mapping[str, LoadedModel] | None = None,
) -> int:
    """Run every pending stage, one model after another (or on ``cluster``); returns the exit status.

    ``loaded_models`` maps specs to models already in memory, which are used instead of loading them.
    """
    plans = plan(engine, entries)
    failed = False
    runnable: list[Plan] = []
    for item in plans:
        spec = item.entry.spec
        if item.error:
            log.error("%s: failed: %s", spec, item.error)
            failed = True
        elif not item.pending:
            log.info("%s: up to date", spec)
        elif dry_run:
            for stage in item.pending:
                log.info("%s %s: pending (%s)", spec, stage, item.reasons[stage])
        else:
            runnable.append(item)
    if cluster is not None and runnable:
        failed |= not reingest_on_cluster(engine, runnable, cluster)
    else:
        for item in runnable:
            failed |= not _ingest_entry(engine, item, (loaded_models or {}).get(item.entry.spec))
    return EXIT_MODEL_FAILED if failed else EXIT_OK


def _ingest_entry(engine: Engine, item: Plan, loaded: LoadedModel | None) -> bool:
    entry = item.entry
    for stage in item.pending:
        log.info("%s %s: running (%s)", entry.spec, stage, item.reasons[stage])
    try:
        report = ingest(entry.spec, engine, loaded=loaded, configs=pending_configs(item))
    except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others; it is logged
        log.error("%s: failed: %s", entry.spec, first_line(exc))
        return False
    log_report(entry.spec, report)
    return True


def pending_configs(item: Plan) -> dict:
    """The settings of the entry's pending stages (tokenizer_facts runs with any ingest)."""
    return {name: item.entry.configs[name] for name in item.pending if name in item.entry.configs}


# --- one scheduled run, locking, watching ------------------------------------------------


def reingest_registry(
    engine: Engine,
    registry: Path,
    *,
    lock_path: Path | None = None,
    dry_run: bool = False,
    device: str | None = None,
    cluster: ClusterOptions | None = None,
    loaded_models: Mapping[str, LoadedModel] | None = None,
) -> int:
    """Read the registry and reingest under the lock (a dry run takes no lock); returns the exit status."""
    entries = [entry.on_device(device) if device else entry for entry in load_registry(registry)]
    if dry_run:
        return reingest(engine, entries, dry_run=True)
    try:
        with reingest_lock(lock_path, engine):
            return reingest(engine, entries, cluster=cluster, loaded_models=loaded_models)
    except ClaimHeld as exc:
        log.warning("another reingest is running (%s); not starting", exc)
        return EXIT_LOCKED


@contextmanager
def reingest_lock(path: Path | None, engine: Engine) -> Iterator[None]:
    """One reingest per catalog: ``path`` (default: a lock file per catalog in the temp folder)."""
    with claim(engine, LOCK_NAME, path):
        yield


def watch(cycle: Callable[[], int], seconds: float) -> NoReturn:
    """Run ``cycle`` every ``seconds`` until interrupted; a failing cycle is logged, the next one still runs."""
    while True:
        try:
            status = cycle()
        except CatalogError as exc:
            log.error("%s", exc)
            status = 2
        log.info("cycle finished with status %d; next in %gs", status, seconds)
        time.sleep(seconds)
