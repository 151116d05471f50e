"""Column-comment changes shared by migrations."""

import sqlalchemy as sa
from alembic import op


def set_ingest_run_comments(stage: str, status: str, old_stage: str, old_status: str) -> None:
    """Set the comments of ``ingest_run.stage`` and ``ingest_run.status`` (a no-op on SQLite)."""
    # SQLite keeps no column comments, and rebuilding ingest_run there would cascade into every stage table.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("ingest_run", "stage", existing_type=sa.String(40), existing_nullable=False, comment=stage, existing_comment=old_stage)
    op.alter_column("ingest_run", "status", existing_type=sa.String(12), existing_nullable=False, comment=status, existing_comment=old_status)
