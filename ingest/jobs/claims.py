"""Exclusive claims that end with their holder: a ``flock`` on a lock file, and on PostgreSQL a
session advisory lock too (which guards a catalog shared by several machines).

One claim per (model, stage) unit keeps two processes from running the same
unit at once; one claim per catalog keeps scheduled reingests from overlapping.
A killed holder releases both (the kernel closes its file, the server its session),
so a ``running`` run whose unit claim is free was interrupted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text


class ClaimHeld(Exception):
    """Another process holds the claim."""


def catalog_key(engine: Engine) -> str:
    """Names one catalog, so different catalogs are claimed side by side."""
    url = engine.url.render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def lock_path(engine: Engine, name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"glitchdex-{name}-{catalog_key(engine)}.lock"


def advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"glitchdex {name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def claim(engine: Engine, name: str, path: Path | None = None) -> Iterator[None]:
    """Hold ``name`` (a lock file, ``path`` or one per catalog and name) until the block ends; ClaimHeld if taken."""
    with _file_lock(path or lock_path(engine, name)), _advisory_lock(engine, name):
        yield


def unit_claim_name(model_id: int, stage: str) -> str:
    return f"unit-{model_id}-{stage}"


def is_claimed(engine: Engine, name: str) -> bool:
    """Whether another process holds ``name`` now (this process takes and releases it to find out)."""
    try:
        with claim(engine, name):
            return False
    except ClaimHeld:
        return True


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClaimHeld(f"another process holds the lock {path}") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the file releases the lock, also when the process is killed


@contextmanager
def _advisory_lock(engine: Engine, name: str) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        yield
        return
    key = advisory_key(name)
    with engine.connect() as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            raise ClaimHeld(f"another process holds the PostgreSQL advisory lock {key} ({name})")
        try:
            yield
        finally:
            conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
