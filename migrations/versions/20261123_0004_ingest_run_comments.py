"""ingest_run comments name the later stages and the resumable-run rule

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:40:00
"""

from collections.abc import Sequence

from migrations.comments import set_ingest_run_comments

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


def upgrade() -> None:
    set_ingest_run_comments(STAGE_NEW, STATUS_NEW, STAGE_OLD, STATUS_OLD)


def downgrade() -> None:
    set_ingest_run_comments(STAGE_OLD, STATUS_OLD, STAGE_NEW, STATUS_NEW)
