"""Generate the SQL users' schema reference (docs/schema.md) from the ORM's comments.

    python -m catalog.docs > docs/schema.md

A test regenerates it and fails when the committed file differs, so the
reference cannot drift from the tables.
"""

from __future__ import annotations

import sys

from sqlalchemy import JSON, Column, Table

from catalog.schema import Base

HEADER = """# Catalog schema

Generated from `catalog/schema.py` by `python -m catalog.docs > docs/schema.md`; do not edit by hand.
Every stage writes rows tagged with the `ingest_run` that produced them; the latest run with
`status = 'succeeded'` of a stage is the current one. One-transaction stages leave no rows from
other runs; resumable stages (`probes`, `prompt_search`) keep the rows of an unfinished run for the next
attempt, so always join on a succeeded run.
"""


def _column_type(column: Column) -> str:
    text = "JSON" if isinstance(column.type, JSON) else str(column.type.compile())
    return text + ("" if column.nullable else " NOT NULL")


def _keys(column: Column) -> str:
    marks = []
    if column.primary_key:
        marks.append("PK")
    marks.extend(f"→ {fk.target_fullname}" for fk in column.foreign_keys)
    return ", ".join(marks)


def table_markdown(table: Table) -> str:
    lines = [f"## `{table.name}`", "", table.comment or "", "", "| column | type | keys | meaning |", "|---|---|---|---|"]
    for column in table.columns:
        lines.append(f"| `{column.name}` | {_column_type(column)} | {_keys(column)} | {column.comment or ''} |")
    # foreign_key_constraints is a set: sort for a stable document.
    composite = sorted((fk for fk in table.foreign_key_constraints if len(fk.columns) > 1), key=lambda fk: [c.name for c in fk.columns])
    for fk in composite:
        local = ", ".join(c.name for c in fk.columns)
        remote = ", ".join(e.target_fullname for e in fk.elements)
        lines += ["", f"Foreign key ({local}) → ({remote})."]
    return "\n".join(lines)


def schema_markdown() -> str:
    tables = [Base.metadata.tables[name] for name in sorted(Base.metadata.tables)]
    return "\n\n".join([HEADER.rstrip(), *map(table_markdown, tables)]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_markdown())
