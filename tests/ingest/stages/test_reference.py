"""docs/reingest.md's parameter table is generated from the stages' parameter dataclasses and must match them."""

from __future__ import annotations

from pathlib import Path

from ingest.compute.prompts import SearchParams
from ingest.stages.reference import parameter_table, shown

REINGEST_DOC = Path(__file__).parents[3] / "docs" / "reingest.md"


def test_parameter_table_in_the_docs_matches_the_code():
    assert parameter_table() in REINGEST_DOC.read_text(), "regenerate the table in docs/reingest.md: python -m ingest.stages.reference"


def test_defaults_are_shown_as_the_docs_write_them():
    assert shown(("gcg", "continuous")) == "['gcg', 'continuous']"
    assert shown(None) == "none" and shown(True) == "true" and shown(0.5) == "0.5"
    assert shown("x" * 40) == f"'{'x' * 32}…' (40 characters)"
    assert shown(SearchParams()).startswith("{ frame 'Repeat the word.") and "max_steps 48" in shown(SearchParams())
