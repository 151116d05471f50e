"""The parameter reference of every stage (docs/reingest.md), generated from the stages' parameter dataclasses.

    python -m ingest.stages.reference

prints the table; a test fails when the one in docs/reingest.md differs, so the
documented defaults cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ingest.stages.all import STAGES
from ingest.stages.base import upstream_stages

HEADER = "| stage | parameters (defaults) | reads (at these defaults) |\n|---|---|---|"
LONGEST_SHOWN = 32  # longer texts (the prompt frame) are cut, with their length


def shown(value: Any) -> str:
    """A default as the docs write it: nested parameters as ``{ name value, ... }``, lists in brackets."""
    if dataclasses.is_dataclass(value):
        return "{ " + ", ".join(f"{f.name} {shown(getattr(value, f.name))}" for f in dataclasses.fields(value)) + " }"
    if isinstance(value, tuple):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, str):
        text = repr(value)
        return text if len(value) <= LONGEST_SHOWN else f"{repr(value[:LONGEST_SHOWN])[:-1]}…' ({len(value)} characters)"
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def parameter_row(name: str) -> str:
    stage = STAGES[name]
    defaults = stage.params_type()
    cells = ", ".join(
        f"`{f.name}` = {shown(getattr(defaults, f.name))}" if dataclasses.is_dataclass(getattr(defaults, f.name)) else f"`{f.name}` {shown(getattr(defaults, f.name))}"
        for f in dataclasses.fields(defaults)
    )
    reads = ", ".join(f"`{dep}`" for dep in upstream_stages(stage, defaults)) or "–"
    return f"| `{name}` | {cells} | {reads} |".replace("\n", "\\n")


def parameter_table() -> str:
    return "\n".join([HEADER, *(parameter_row(name) for name in STAGES)])


if __name__ == "__main__":
    print(parameter_table())
