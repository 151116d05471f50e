"""embedding_projection: a 2-D map (PCA, t-SNE) per embedding_stats run; token index covering norm_key joins

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('embedding_projection',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The embedding_stats run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token id.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('pca_x', sa.Float(), nullable=False, comment='Score on the first principal axis of the centred input embeddings.'),
    sa.Column('pca_y', sa.Float(), nullable=False, comment='Score on the second principal axis.'),
    sa.Column('tsne_x', sa.Float(), nullable=False, comment="t-SNE map position, first coordinate (of the 50-axis PCA scores; cosine-nearest fitted tokens' mean when not fitted)."),
    sa.Column('tsne_y', sa.Float(), nullable=False, comment='t-SNE map position, second coordinate.'),
    sa.Column('tsne_fitted', sa.Boolean(), nullable=False, comment='The token was in the t-SNE sample (true for the top of every indicator); false: placed at the mean position of its 5 nearest fitted tokens.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_embedding_projection_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_embedding_projection_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_embedding_projection_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', name=op.f('pk_embedding_projection')),
    comment="2-D map of a model's input embeddings, per embedding_stats run: PCA of every token, and t-SNE fitted on a sample (the top of every indicator plus an even stride; sizes in the run's params) with every other token placed by its nearest fitted tokens."
    )
    with op.batch_alter_table('token', schema=None) as batch_op:
        batch_op.create_index('ix_token_norm_key_tokenizer', ['norm_key', 'tokenizer_id'], unique=False)
        batch_op.drop_index('ix_token_norm_key')


def downgrade() -> None:
    with op.batch_alter_table('token', schema=None) as batch_op:
        batch_op.create_index('ix_token_norm_key', ['norm_key'], unique=False)
        batch_op.drop_index('ix_token_norm_key_tokenizer')
    op.drop_table('embedding_projection')
