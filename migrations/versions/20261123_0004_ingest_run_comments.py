"""ingest_run comments name the later stages and the resumable-run rule

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGE_OLD = "tokenizer_facts or embedding_stats (later stages add theirs)."
STAGE_NEW = "tokenizer_facts, embedding_stats, probes or prompt_search."
STATUS_OLD = "running, succeeded or failed; only succeeded runs' rows are ever present."
STATUS_NEW = (
    "running, succeeded or failed. Read rows of succeeded runs only: resumable stages (probes, prompt_search) "
    "keep an unfinished run's rows for the next attempt."
)


def _set_comments(stage: str, status: str, old_stage: str, old_status: str) -> None:
    # SQLite keeps no column comments, and rebuilding ingest_run there would cascade into every stage table.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("ingest_run", "stage", existing_type=sa.String(40), existing_nullable=False, comment=stage, existing_comment=old_stage)
    op.alter_column("ingest_run", "status", existing_type=sa.String(12), existing_nullable=False, comment=status, existing_comment=old_status)


def upgrade() -> None:
    _set_comments(STAGE_NEW, STATUS_NEW, STAGE_OLD, STATUS_OLD)


def downgrade() -> None:
    _set_comments(STAGE_OLD, STATUS_OLD, STAGE_NEW, STATUS_NEW)
