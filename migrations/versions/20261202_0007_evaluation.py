"""evaluation: detection quality per indicator and budget; token_indicator: weight-derived indicators

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-02 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


CATEGORY_OLD = "First matching of: special, partial_utf8, byte, unreachable, whitespace, normal."
CATEGORY_NEW = (
    "First matching of: placeholder (<unusedN>, [unusedN], reserved specials: the unused-token reference, never counted as findings), "
    "special, partial_utf8, byte, unreachable, whitespace, normal."
)


def _set_category_comment(comment: str, old: str) -> None:
    # SQLite keeps no column comments, and rebuilding token there would cascade into every table that joins it.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("token", "category", existing_type=sa.String(20), existing_nullable=False, comment=comment, existing_comment=old)


def upgrade() -> None:
    _set_category_comment(CATEGORY_NEW, CATEGORY_OLD)
    op.create_table('evaluation',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The evaluation run.'),
    sa.Column('indicator', sa.String(length=40), nullable=False, comment="Embedding statistic (embed_norm, centroid_dist, unused_cos, anomaly_score, ...), token_indicator name, tokenizer category ('category:unreachable'), or any_indicator (the union of every indicator's candidates at the budget)."),
    sa.Column('budget', sa.String(length=8), nullable=False, comment="Candidate budget: '0.5%', '1%', '2%', '5%', '10%' of the ranked tokens, or 'R' (k = n_truth: R-precision)."),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('probes_run_id', sa.Integer(), nullable=False, comment='The probes run whose verdicts are the truth.'),
    sa.Column('k', sa.Integer(), nullable=False, comment="Candidates: the indicator's top k ranked tokens (any_indicator: the union's size)."),
    sa.Column('n_ranked', sa.Integer(), nullable=False, comment='Tokens ranked: probed, neither special nor placeholder.'),
    sa.Column('n_truth', sa.Integer(), nullable=False, comment='Of those, verified tokens (the truth).'),
    sa.Column('n_hits', sa.Integer(), nullable=False, comment='Verified tokens among the candidates.'),
    sa.Column('precision', sa.Float(), nullable=True, comment='n_hits / k.'),
    sa.Column('recall', sa.Float(), nullable=True, comment='n_hits / n_truth; NULL without verified tokens.'),
    sa.Column('f1', sa.Float(), nullable=True, comment='Harmonic mean of precision and recall.'),
    sa.Column('average_precision', sa.Float(), nullable=True, comment='Mean precision at the rank of each verified token (the same on every budget row of the indicator; NULL for any_indicator).'),
    sa.Column('precision_low', sa.Float(), nullable=True, comment='Lower 95 % Wilson bound of precision when the truth is a sample; NULL for a whole sweep.'),
    sa.Column('precision_high', sa.Float(), nullable=True, comment='Upper 95 % Wilson bound of precision when the truth is a sample.'),
    sa.Column('recall_low', sa.Float(), nullable=True, comment='Lower 95 % Wilson bound of recall when the truth is a sample.'),
    sa.Column('recall_high', sa.Float(), nullable=True, comment='Upper 95 % Wilson bound of recall when the truth is a sample.'),
    sa.Column('n_missed', sa.Integer(), nullable=False, comment='n_truth - n_hits: verified tokens outside the candidates (any_indicator: missed by every indicator).'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_evaluation_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['probes_run_id'], ['ingest_run.id'], name=op.f('fk_evaluation_probes_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_evaluation_run_id_ingest_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'indicator', 'budget', name=op.f('pk_evaluation')),
    comment="How much of a model's behavioural truth (the verified tokens of a probes run) each indicator finds, per evaluation run: precision, recall and F1 of its top candidates at each budget. Special and placeholder tokens are not counted; the run's params hold the control floor and the statement of whether the truth separates glitch tokens from ordinary ones."
    )
    op.create_table('token_indicator',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The evaluation run.'),
    sa.Column('indicator', sa.String(length=40), nullable=False, comment='head_projection or identical_rows (docs/evaluation.md).'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token id.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('value', sa.Float(), nullable=False, comment="The indicator's value; higher = more anomalous."),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_token_indicator_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_token_indicator_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_token_indicator_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'indicator', 'token_id', name=op.f('pk_token_indicator')),
    comment='Indicators computed by the evaluation stage from the model\'s weights, one row per token and indicator: head_projection (LM-head singular directions) and identical_rows (tokens sharing one embedding row). Higher = more anomalous.'
    )


def downgrade() -> None:
    _set_category_comment(CATEGORY_OLD, CATEGORY_NEW)
    op.drop_table('token_indicator')
    op.drop_table('evaluation')
