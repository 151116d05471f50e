"""Bring the catalog up to date with the model registry; safe to run from cron.

A model's stage is *pending* when no succeeded run exists for its (model
revision, stage, params hash, code version): a new registry line, a new
revision of a model file, changed parameters or a new glitchdex version make
it pending; failed and interrupted runs stay pending until they succeed.
Pending stages run through :func:`ingest.jobs.pipeline.ingest`, which skips what
succeeded meanwhile, so nothing is computed or stored twice.

One reingest at a time per catalog: an exclusive ``flock`` on a lock file, and
on PostgreSQL a session advisory lock as well (protects a catalog shared by
several machines). Exit status: 0 all up to date, 1 some model failed (the
others still ran), 2 bad registry or database, 75 another reingest holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine, text

from catalog.database import CatalogError, first_line
from ingest.jobs.executors import ClusterOptions, reingest_on_cluster
from ingest.jobs.pipeline import ingest
from ingest.jobs.planning import Plan, log, log_report, plan
from ingest.jobs.registry import RegistryEntry, load_registry
from ingest.load.models import LoadedModel

EXIT_OK = 0
EXIT_MODEL_FAILED = 1
EXIT_LOCKED = 75  # EX_TEMPFAIL: "try again later", what cron wrappers expect from a busy job
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"glitchdex reingest").digest()[:8], "big", signed=True)


class LockHeld(Exception):
    """Another reingest of the same catalog is running."""


# --- running -------------------------------------------------------------------------


def reingest(
    engine: Engine,
    entries: Sequence[RegistryEntry],
    *,
    device: str = "cpu",
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
            log.info("%s: pending %s (%s)", spec, ", ".join(item.pending), item.reason)
        else:
            runnable.append(item)
    if cluster is not None and runnable:
        failed |= not reingest_on_cluster(engine, runnable, cluster)
    else:
        for item in runnable:
            failed |= not _ingest_entry(engine, item, device, (loaded_models or {}).get(item.entry.spec))
    return EXIT_MODEL_FAILED if failed else EXIT_OK


def _ingest_entry(engine: Engine, item: Plan, device: str, loaded: LoadedModel | None) -> bool:
    entry = item.entry
    log.info("%s: running %s (%s)", entry.spec, ", ".join(item.pending), item.reason)
    try:
        report = ingest(entry.spec, engine, stages=entry.stages, params=entry.params, device=device, loaded=loaded)
    except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others; it is logged
        log.error("%s: failed: %s", entry.spec, first_line(exc))
        return False
    log_report(entry.spec, report)
    return True


# --- one scheduled run, locking, watching ------------------------------------------------


def default_lock_path(engine: Engine) -> Path:
    """One lock file per catalog, so different catalogs can be reingested side by side."""
    url = engine.url.render_as_string(hide_password=True)
    return Path(tempfile.gettempdir()) / f"glitchdex-reingest-{hashlib.sha256(url.encode()).hexdigest()[:12]}.lock"


def reingest_registry(
    engine: Engine,
    registry: Path,
    *,
    lock_path: Path | None = None,
    dry_run: bool = False,
    device: str = "cpu",
    cluster: ClusterOptions | None = None,
    loaded_models: Mapping[str, LoadedModel] | None = None,
) -> int:
    """Read the registry and reingest under the lock (a dry run takes no lock); returns the exit status."""
    entries = load_registry(registry)
    if dry_run:
        return reingest(engine, entries, dry_run=True)
    try:
        with reingest_lock(lock_path or default_lock_path(engine), engine):
            return reingest(engine, entries, device=device, cluster=cluster, loaded_models=loaded_models)
    except LockHeld as exc:
        log.warning("%s; not starting", exc)
        return EXIT_LOCKED


@contextmanager
def reingest_lock(path: Path, engine: Engine) -> Iterator[None]:
    with _file_lock(path), _advisory_lock(engine):
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another reingest holds the lock {path}") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the file releases the lock, also when the process is killed


@contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}):
            raise LockHeld(f"another reingest holds the PostgreSQL advisory lock {ADVISORY_LOCK_KEY}")
        try:
            yield
        finally:
            conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})


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
