"""The Stage protocol every stage implements, and the one builder of stage parameters.

A stage is a module-level object with:

- ``name``: its ``ingest_run.stage`` value and its name in ``models.toml``;
- ``params_type``: a frozen dataclass of its parameters, every field with a
  default; :func:`build_params` builds it from a mapping (a ``models.toml``
  table, the CLI's options, a benchmark's settings), so there is one place
  that checks names and types;
- ``depends_on(params)``: the stages whose current (latest succeeded) run it
  reads; a newer run of one of them makes this stage stale;
- ``reads_if_present``: stages whose current run it also reads when there is
  one (it runs without); a newer run of one of them makes it stale too;
- ``tables``: every table whose rows carry its run id;
- ``needs_weights``: whether it loads the model's weights (``uses_gpu``: it
  asks a cluster for a GPU when its device is a GPU);
- ``run_params(params)``: the JSON its runs are keyed by (hashed with the
  upstream run ids and the code version by the runner), computable without
  weights so that planning loads none;
- ``prepare(unit, params)``: the body, as :class:`ResumableWork` (items done in
  committed chunks, then a finishing step).

The runner (:mod:`ingest.jobs.runner`) is the only code that runs a stage.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Engine, Table

from catalog.database import CatalogError
from ingest.load.models import LoadedModel
from ingest.stages.runs import ResumableWork

P = TypeVar("P")


@dataclass(frozen=True)
class Unit:
    """One (model, stage) to run: where its rows go and what it may read."""

    engine: Engine
    model_id: int
    tokenizer_id: int
    upstream: Mapping[str, int]  # dependency stage -> the run id this run reads
    device: str = "cpu"
    loaded: LoadedModel | None = None  # weights, for stages that need them
    chunk_size: int | None = None  # override the stage's chunk size (tests, benchmarks)


class Stage(Protocol):
    name: ClassVar[str]
    params_type: ClassVar[type]
    tables: ClassVar[tuple[Table, ...]]
    needs_weights: ClassVar[bool]
    uses_gpu: ClassVar[bool]
    reads_if_present: ClassVar[tuple[str, ...]]

    def depends_on(self, params: Any) -> tuple[str, ...]: ...

    def run_params(self, params: Any) -> dict[str, Any]: ...

    def prepare(self, unit: Unit, params: Any) -> ResumableWork: ...


def upstream_stages(stage: Stage, params: Any) -> tuple[str, ...]:
    """Every stage whose current run a run of ``stage`` reads: those it needs, then those it reads when present."""
    return stage.depends_on(params) + stage.reads_if_present


class ParamError(CatalogError):
    """A bad stage parameter; ``key`` is its dotted path (``thresholds.weak_below``), to point at its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def build_params(params_type: type[P], values: Mapping[str, Any], *, base: P | None = None, prefix: str = "") -> P:
    """``params_type`` (a frozen dataclass) from ``values`` over ``base`` (default: its defaults).

    Nested dataclass fields take a mapping; tuples take lists; ``X | None`` takes
    X; a float takes an int. Unknown names and wrong types raise :class:`ParamError`.
    """
    fields = {f.name: f for f in dataclasses.fields(params_type)}
    hints = typing.get_type_hints(params_type)
    base = base if base is not None else params_type()
    changes = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ParamError(path, f"unknown parameter {path!r}; known: {', '.join(prefix + name for name in fields)}")
        changes[key] = _coerce(hints[key], value, path, getattr(base, key))
    return dataclasses.replace(base, **changes)


def _coerce(hint: Any, value: Any, path: str, current: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ParamError(path, f"parameter {path} must be a table of {', '.join(f.name for f in dataclasses.fields(hint))}")
        return build_params(hint, value, base=current, prefix=f"{path}.")
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, path, current)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ParamError(path, f"parameter {path} must be a list of {item.__name__}, not {value!r}")
        return tuple(_coerce(item, v, path, None) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ParamError(path, f"parameter {path} must be {hint.__name__}, not {value!r}")
    return value


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options a command line actually set (argparse leaves the others None)."""
    return {key: value for key, value in values.items() if value is not None}

