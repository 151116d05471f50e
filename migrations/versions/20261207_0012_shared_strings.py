"""shared_strings: strings in common per pair of tokenizers, kept at ingest instead of counted per view;
ingest_run.stage names evaluation and embedding_fix

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.comments import set_column_comment

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGE_OLD = "tokenizer_facts, embedding_stats, probes, prompt_search or nokens."
STAGE_NEW = "tokenizer_facts, embedding_stats, probes, prompt_search, nokens, evaluation or embedding_fix."

# Every pair catalogued so far, from the distinct (string, tokenizer) keys of the covering norm_key index.
BACKFILL = """
INSERT INTO shared_strings (tokenizer_a_id, tokenizer_b_id, n_strings)
WITH string_keys AS (SELECT DISTINCT norm_key, tokenizer_id FROM token WHERE norm_key IS NOT NULL)
SELECT a.tokenizer_id, b.tokenizer_id, count(*)
FROM string_keys AS a JOIN string_keys AS b ON b.norm_key = a.norm_key AND b.tokenizer_id > a.tokenizer_id
GROUP BY a.tokenizer_id, b.tokenizer_id
"""


def upgrade() -> None:
    set_column_comment("ingest_run", "stage", sa.String(40), STAGE_NEW, STAGE_OLD)
    op.create_table(
        "shared_strings",
        sa.Column("tokenizer_a_id", sa.Integer(), nullable=False, comment="The pair's tokenizer with the lower id."),
        sa.Column("tokenizer_b_id", sa.Integer(), nullable=False, comment="The pair's tokenizer with the higher id."),
        sa.Column("n_strings", sa.Integer(), nullable=False, comment="Distinct normalised strings (token.norm_key) that are a token of both."),
        sa.ForeignKeyConstraint(["tokenizer_a_id"], ["tokenizer.id"], name=op.f("fk_shared_strings_tokenizer_a_id_tokenizer"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tokenizer_b_id"], ["tokenizer.id"], name=op.f("fk_shared_strings_tokenizer_b_id_tokenizer"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tokenizer_a_id", "tokenizer_b_id", name=op.f("pk_shared_strings")),
        comment="For every pair of tokenizers, how many distinct norm_key strings are a token in both; written when a "
        "tokenizer is catalogued (its tokens never change afterwards), so the comparison needs no scan of token.",
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("shared_strings")
    set_column_comment("ingest_run", "stage", sa.String(40), STAGE_OLD, STAGE_NEW)
