"""prompt search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:09:52.497371
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('prompt_search',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The prompt_search run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Target token id.'),
    sa.Column('method', sa.String(length=12), nullable=False, comment="'gcg' (discrete gradient-guided token swaps) or 'continuous' (optimised embeddings snapped to the nearest allowed tokens)."),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('target_role', sa.String(length=12), nullable=False, comment="Why the token was searched: 'anomalous' (top by anomaly_score), 'control' (random normal token) or 'requested'."),
    sa.Column('prompt_ids', sa.Text(), nullable=False, comment="Space-separated ids of the best prompt (after the model's BOS, if it uses one)."),
    sa.Column('prompt_text', sa.Text(), nullable=False, comment='The best prompt decoded to text.'),
    sa.Column('target_logprob', sa.Float(), nullable=False, comment='Log-probability of the target as the next token after the prompt.'),
    sa.Column('target_rank', sa.Integer(), nullable=False, comment='Rank of the target among next tokens; 1 = greedy next token.'),
    sa.Column('margin', sa.Float(), nullable=False, comment='Target logit minus the highest other logit; > 0 iff the target is the greedy next token.'),
    sa.Column('relaxed_logprob', sa.Float(), nullable=True, comment='Continuous method: target log-prob from the un-snapped embeddings, an optimistic bound; NULL for gcg.'),
    sa.Column('greedy_emits', sa.Boolean(), nullable=False, comment="Greedy decoding from the prompt ids (through the model's input_ids path) emits the target first."),
    sa.Column('reencodes', sa.Boolean(), nullable=False, comment='Decoding the prompt to text and encoding it again gives back the same ids.'),
    sa.Column('prompt_contains_target', sa.Boolean(), nullable=False, comment="The decoded prompt contains the target's (stripped) text, spelt with other tokens."),
    sa.Column('anomalous_allowed', sa.Boolean(), nullable=False, comment="The catalog's most anomalous tokens (count in the run's params) were allowed in the prompt."),
    sa.Column('n_banned', sa.Integer(), nullable=False, comment="Token ids banned from this target's prompt (target, tokens containing its text, specials, ...)."),
    sa.Column('steps', sa.Integer(), nullable=False, comment='Optimisation steps spent.'),
    sa.Column('n_evaluations', sa.Integer(), nullable=False, comment='Prompts scored by a forward pass (candidates and gradient passes).'),
    sa.Column('seconds', sa.Float(), nullable=False, comment="Wall time the target spent in its batch (shared with the batch's other targets)."),
    sa.Column('device', sa.String(length=40), nullable=False, comment='torch device the search ran on.'),
    sa.Column('seed', sa.BigInteger(), nullable=False, comment="Seed of this target's random draws (from the run's seed and the token id)."),
    sa.Column('loss_trajectory', sa.JSON(), nullable=True, comment='Loss (negative target log-prob) after every step, if kept; JSON array.'),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False, comment="When this target's search finished (UTC)."),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_prompt_search_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_prompt_search_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_prompt_search_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', 'method', name=op.f('pk_prompt_search')),
    comment="Best prompt found for making a model output a target token next, per prompt_search run, target and method. Hyperparameters are in the run's params; rows appear per finished target, so read only succeeded runs."
    )


def downgrade() -> None:
    op.drop_table('prompt_search')
