"""Column-comment changes shared by migrations."""

import sqlalchemy as sa
from alembic import op


def set_column_comment(table: str, column: str, existing_type: sa.types.TypeEngine, comment: str, old_comment: str) -> None:
    """Set a NOT NULL column's comment (a no-op on SQLite)."""
    # SQLite keeps no column comments, and rebuilding a table there would cascade into every table that points at it.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(table, column, existing_type=existing_type, existing_nullable=False, comment=comment, existing_comment=old_comment)


def set_ingest_run_comments(stage: str, status: str, old_stage: str, old_status: str) -> None:
    """Set the comments of ``ingest_run.stage`` and ``ingest_run.status`` (a no-op on SQLite)."""
    set_column_comment("ingest_run", "stage", sa.String(40), stage, old_stage)
    set_column_comment("ingest_run", "status", sa.String(12), status, old_status)
