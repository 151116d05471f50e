"""behavioural probes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:16:31.092195
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('probe_template',
    sa.Column('id', sa.Integer(), nullable=False, comment='Surrogate key.'),
    sa.Column('name', sa.String(length=60), nullable=False, comment="Template name, e.g. 'echo_fewshot'."),
    sa.Column('version', sa.Integer(), nullable=False, comment='Bumped whenever text, prefix or generation length change; old versions stay for old runs.'),
    sa.Column('kind', sa.String(length=20), nullable=False, comment='repeat, meaning, continue (the token itself should come back) or spell (its letters should).'),
    sa.Column('chat', sa.Boolean(), nullable=False, comment="Rendered as a user turn with the model's chat template (plain 'Question:/Answer:' text without one)."),
    sa.Column('text', sa.Text(), nullable=False, comment='Prompt (user message when chat) with one or more «TOKEN» placeholders.'),
    sa.Column('response_prefix', sa.Text(), nullable=False, comment='Text the answer is primed with, appended after the rendered prompt.'),
    sa.Column('max_new_tokens', sa.Integer(), nullable=False, comment='Greedy tokens generated in candidate mode (sweeps generate only the scored positions).'),
    sa.Column('description', sa.Text(), nullable=False, comment='What the probe tests.'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_probe_template')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_probe_template_name_version')),
    comment='A versioned probe prompt; the probed token is inserted by id where the text says «TOKEN».'
    )
    op.create_table('indicator_precision',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The probes run.'),
    sa.Column('indicator', sa.String(length=30), nullable=False, comment='anomaly_score, unused_cos, centroid_dist, embed_norm, or control (random normal tokens).'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model.'),
    sa.Column('n_selected', sa.Integer(), nullable=False, comment='Tokens in its top N (or in the control sample).'),
    sa.Column('n_tested', sa.Integer(), nullable=False, comment='Of those, tokens probed (special tokens are not).'),
    sa.Column('n_verified', sa.Integer(), nullable=False, comment='Of those, verdict verified.'),
    sa.Column('n_weakly_verified', sa.Integer(), nullable=False, comment='Of those, verdict weakly_verified.'),
    sa.Column('precision', sa.Float(), nullable=True, comment='n_verified / n_tested; NULL if nothing was tested.'),
    sa.Column('precision_weak', sa.Float(), nullable=True, comment='(n_verified + n_weakly_verified) / n_tested.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_indicator_precision_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_indicator_precision_run_id_ingest_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'indicator', name=op.f('pk_indicator_precision')),
    comment="How many of each indicator's top-N candidates (and of the random control sample) the probes verified, per probes run."
    )
    op.create_table('probe_determinism',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The probes run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token id.'),
    sa.Column('template_id', sa.Integer(), nullable=False, comment='Probe template.'),
    sa.Column('trial', sa.String(length=20), nullable=False, comment="'alone' (batch of one, no padding) or 'reshuffled' (the sample in reverse order as one batch)."),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model.'),
    sa.Column('batch_size', sa.Integer(), nullable=False, comment='Batch size of the re-run.'),
    sa.Column('output_ids', sa.Text(), nullable=False, comment="Space-separated ids of the re-run's greedy output."),
    sa.Column('changed', sa.Boolean(), nullable=False, comment='The greedy output differs from the one stored in probe_result.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_probe_determinism_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_probe_determinism_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['probe_template.id'], name=op.f('fk_probe_determinism_template_id_probe_template')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', 'template_id', 'trial', name=op.f('pk_probe_determinism')),
    comment='Re-runs of a sample of probes in other batch compositions: did the greedy output change?'
    )
    op.create_table('probe_result',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The probes run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Probed token (inserted by id).'),
    sa.Column('template_id', sa.Integer(), nullable=False, comment='Probe template (name + version).'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('output', sa.Text(), nullable=False, comment='Greedy output, decoded, special tokens kept, cut after the end-of-turn token.'),
    sa.Column('output_ids', sa.Text(), nullable=False, comment='Space-separated ids of the greedy output.'),
    sa.Column('target_prob', sa.Float(), nullable=False, comment='Highest probability of the target token over the scored positions.'),
    sa.Column('target_rank', sa.Integer(), nullable=False, comment='Best rank of the target token over the scored positions (1 = greedy choice).'),
    sa.Column('position_probs', sa.JSON(), nullable=False, comment='Target probability at each of the first generated positions (teacher-forced on the greedy output).'),
    sa.Column('position_ranks', sa.JSON(), nullable=False, comment='Target rank at each of those positions.'),
    sa.Column('passed', sa.Boolean(), nullable=False, comment='repeat/meaning/continue: the target was generated within the scored positions; spell: the output spells the token.'),
    sa.Column('failure_category', sa.String(length=20), nullable=True, comment='For failed probes, from the output: empty, evasion, question_repeat, spelling_out, random_chars, substitution or hallucination.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_probe_result_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_probe_result_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['probe_template.id'], name=op.f('fk_probe_result_template_id_probe_template')),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_probe_result_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', 'template_id', name=op.f('pk_probe_result')),
    comment="One probe of one token of a model, per probes run: greedy output and the target token's probability."
    )
    op.create_table('token_verdict',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The probes run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token id.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('selected_by', sa.String(length=120), nullable=False, comment="Why it was probed: comma-separated indicators whose top N it is in, 'control' or 'sweep'."),
    sa.Column('verdict', sa.String(length=20), nullable=False, comment='verified (target probability below params.thresholds.verified_below in every target probe), weakly_verified (below weak_below), rejected, or untested (special tokens).'),
    sa.Column('max_target_prob', sa.Float(), nullable=True, comment='Highest target probability over its target probes; NULL if untested.'),
    sa.Column('n_probes', sa.Integer(), nullable=False, comment='Probes run on the token.'),
    sa.Column('n_passed', sa.Integer(), nullable=False, comment='Probes it passed.'),
    sa.Column('failure_category', sa.String(length=20), nullable=True, comment='Most frequent failure category of its failed probes (ties: the order listed in probe_result); NULL if none failed.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_token_verdict_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_token_verdict_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_token_verdict_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', name=op.f('pk_token_verdict')),
    comment="Verdict on each selected token of a model, per probes run; thresholds are in the run's params."
    )
    with op.batch_alter_table('token_verdict', schema=None) as batch_op:
        batch_op.create_index('ix_token_verdict_run_verdict', ['run_id', 'verdict'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('token_verdict', schema=None) as batch_op:
        batch_op.drop_index('ix_token_verdict_run_verdict')

    op.drop_table('token_verdict')
    op.drop_table('probe_result')
    op.drop_table('probe_determinism')
    op.drop_table('indicator_precision')
    op.drop_table('probe_template')
