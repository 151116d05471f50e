"""token: index on (tokenizer_id, category), so the overview's tokens per category and the model page's
category filter read the index alone

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 17:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.create_index("ix_token_tokenizer_category", ["tokenizer_id", "category"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_index("ix_token_tokenizer_category")
