"""embedding_fix: rows changed by `glitchdex check --fix`; model.source_kind names tokenizer files

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.comments import set_column_comment

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCE_KIND_OLD = "hub, directory, gguf, package or tiktoken."
SOURCE_KIND_NEW = "hub, directory, gguf, package, tiktoken or tokenizer_file (tokenizer.json, encoder.json + vocab.bpe, NAME.tiktoken)."


def upgrade() -> None:
    set_column_comment("model", "source_kind", sa.String(20), SOURCE_KIND_NEW, SOURCE_KIND_OLD)
    op.create_table(
        "embedding_fix",
        sa.Column("run_id", sa.Integer(), nullable=False, comment="The embedding_fix run."),
        sa.Column("token_id", sa.Integer(), autoincrement=False, nullable=False, comment="Token whose row was changed."),
        sa.Column("matrix", sa.String(length=10), nullable=False, comment="'input' (the input embedding; also the unembedding when tied) or 'output' (an untied unembedding)."),
        sa.Column("model_id", sa.Integer(), nullable=False, comment="Model the copy was made from."),
        sa.Column("tokenizer_id", sa.Integer(), nullable=False, comment="Tokenizer (denormalised for joins with token)."),
        sa.Column("reason", sa.String(length=20), nullable=False, comment="Why the row counts as untrained: verified, weakly_verified (latest probes run) or anomalous (top of the anomaly ranking)."),
        sa.Column("old_norm", sa.Float(), nullable=False, comment="L2 norm of the row before."),
        sa.Column("new_norm", sa.Float(), nullable=False, comment="L2 norm after (the norm of the trained rows' mean)."),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], name=op.f("fk_embedding_fix_model_id_model"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["ingest_run.id"], name=op.f("fk_embedding_fix_run_id_ingest_run"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tokenizer_id", "token_id"], ["token.tokenizer_id", "token.token_id"], name=op.f("fk_embedding_fix_tokenizer_id_token")),
        sa.PrimaryKeyConstraint("run_id", "token_id", "matrix", name=op.f("pk_embedding_fix")),
        comment="Rows of a model copy written by `glitchdex check --fix`, set to the mean of trained rows, per embedding_fix run "
        "(the run's params: output folder, which tokens, how many trained rows were averaged).",
    )


def downgrade() -> None:
    op.drop_table("embedding_fix")
    set_column_comment("model", "source_kind", sa.String(20), SOURCE_KIND_OLD, SOURCE_KIND_NEW)
