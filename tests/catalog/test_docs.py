"""docs/schema.md is generated from the ORM and must match it."""

from pathlib import Path

from catalog.docs import schema_markdown
from catalog.schema import Base

SCHEMA_DOC = Path(__file__).parents[2] / "docs" / "schema.md"


def test_schema_doc_is_current():
    assert SCHEMA_DOC.read_text() == schema_markdown(), "regenerate: python -m catalog.docs > docs/schema.md"


def test_every_table_and_column_is_documented():
    for table in Base.metadata.tables.values():
        assert table.comment, table.name
        for column in table.columns:
            assert column.comment, f"{table.name}.{column.name}"
