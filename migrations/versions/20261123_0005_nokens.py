"""nokens: synthetic vectors, their neighbours and probe results; ingest_run comments name the stage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 15:03:17.861540
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.comments import set_ingest_run_comments

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


STAGE_OLD = "tokenizer_facts, embedding_stats, probes or prompt_search."
STAGE_NEW = "tokenizer_facts, embedding_stats, probes, prompt_search or nokens."
STATUS_OLD = (
    "running, succeeded or failed. Read rows of succeeded runs only: resumable stages (probes, prompt_search) "
    "keep an unfinished run's rows for the next attempt."
)
STATUS_NEW = STATUS_OLD.replace("(probes, prompt_search)", "(probes, prompt_search, nokens)")


def upgrade() -> None:
    set_ingest_run_comments(STAGE_NEW, STATUS_NEW, STAGE_OLD, STATUS_OLD)
    op.create_table('noken',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The nokens run.'),
    sa.Column('noken_id', sa.Integer(), autoincrement=False, nullable=False, comment='Index of the noken within its run (0, 1, ...).'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('space', sa.String(length=10), nullable=False, comment="'input': the vector replaces the token's embedding (in embedding-matrix units); 'residual': it is placed in the residual stream entering decoder layer `layer`."),
    sa.Column('layer', sa.Integer(), nullable=True, comment="Decoder layer whose input holds the vector (0 = first layer); NULL for space 'input'."),
    sa.Column('mode', sa.String(length=10), nullable=False, comment="'replace': the vector takes the slot token's place; 'add': it is added to the slot token's activation (residual only)."),
    sa.Column('generator', sa.String(length=30), nullable=False, comment='gaussian_typical, anomalous_shell, centroid, interpolation, scaled_token or direction_sweep (docs/nokens.md).'),
    sa.Column('generator_seed', sa.BigInteger(), nullable=False, comment="Seed of the generator's CPU torch.Generator (from the run's seed and the generator name): regenerates the vector."),
    sa.Column('details', sa.JSON(), nullable=False, comment='Generator settings of this vector: alpha, scale, norm_multiple, matched_norm, ... (JSON object).'),
    sa.Column('source_token_id', sa.Integer(), nullable=True, comment="Real token the vector derives from (scaled_token's token, interpolation's normal end, anomalous_shell's matched token)."),
    sa.Column('source2_token_id', sa.Integer(), nullable=True, comment="interpolation's anomalous end; NULL otherwise."),
    sa.Column('vector', sa.LargeBinary(), nullable=False, comment='The vector: d_model float32 values, little-endian.'),
    sa.Column('d_model', sa.Integer(), nullable=False, comment='Length of the vector.'),
    sa.Column('norm', sa.Float(), nullable=False, comment='L2 norm.'),
    sa.Column('norm_pct', sa.Float(), nullable=False, comment="% of the space's reference vectors with a smaller norm."),
    sa.Column('centroid_dist', sa.Float(), nullable=False, comment='L2 distance to the mean of the reference vectors.'),
    sa.Column('centroid_dist_pct', sa.Float(), nullable=False, comment='% of reference vectors nearer the mean.'),
    sa.Column('centroid_cos', sa.Float(), nullable=False, comment='Cosine with the mean of the reference vectors.'),
    sa.Column('rms_z', sa.Float(), nullable=False, comment='Out-of-distribution measure: root-mean-square over dimensions of (value - reference mean) / reference std.'),
    sa.Column('rms_z_pct', sa.Float(), nullable=False, comment='% of reference vectors with a smaller rms_z; 100 = beyond every real one.'),
    sa.Column('nearest_token_id', sa.Integer(), nullable=False, comment="Real token of highest cosine (a tie goes to the token the vector was made from): the probes' target and the slot's carrier token."),
    sa.Column('nearest_cos', sa.Float(), nullable=False, comment='Its cosine.'),
    sa.Column('verdict', sa.String(length=20), nullable=False, comment="As token_verdict.verdict, from this noken's probes with the run's thresholds: verified, weakly_verified or rejected."),
    sa.Column('max_target_prob', sa.Float(), nullable=True, comment='Highest probability of the target over its target probes.'),
    sa.Column('n_probes', sa.Integer(), nullable=False, comment='Probes run on the noken.'),
    sa.Column('n_passed', sa.Integer(), nullable=False, comment='Probes it passed.'),
    sa.Column('failure_category', sa.String(length=20), nullable=True, comment='Most frequent failure category of its failed probes.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_noken_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_noken_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'nearest_token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_noken_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'noken_id', name=op.f('pk_noken')),
    comment="A synthetic vector ('noken') put where a token would be, per nokens run: how it was made, where it sits relative to real tokens, and the verdict of probing it. Probes score its nearest real token as the target."
    )
    with op.batch_alter_table('noken', schema=None) as batch_op:
        batch_op.create_index('ix_noken_run_generator', ['run_id', 'generator'], unique=False)

    op.create_table('noken_neighbor',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The nokens run.'),
    sa.Column('noken_id', sa.Integer(), autoincrement=False, nullable=False, comment='The noken.'),
    sa.Column('rank', sa.Integer(), autoincrement=False, nullable=False, comment='1 = nearest.'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (for joins with token).'),
    sa.Column('token_id', sa.Integer(), nullable=False, comment='Real token id.'),
    sa.Column('cosine', sa.Float(), nullable=False, comment="Cosine between the noken and the token's reference vector."),
    sa.ForeignKeyConstraint(['run_id', 'noken_id'], ['noken.run_id', 'noken.noken_id'], name=op.f('fk_noken_neighbor_run_id_noken'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_noken_neighbor_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'noken_id', 'rank', name=op.f('pk_noken_neighbor')),
    comment="Nearest real tokens of each noken by cosine in its space (residual: a token's best prompt)."
    )
    op.create_table('noken_probe_result',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The nokens run.'),
    sa.Column('noken_id', sa.Integer(), autoincrement=False, nullable=False, comment='The noken.'),
    sa.Column('template_id', sa.Integer(), nullable=False, comment='Probe template (name + version).'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('target_token_id', sa.Integer(), nullable=False, comment="The scored target: the noken's nearest real token."),
    sa.Column('output', sa.Text(), nullable=False, comment='Greedy output, decoded, special tokens kept, cut after the end-of-turn token.'),
    sa.Column('output_ids', sa.Text(), nullable=False, comment='Space-separated ids of the greedy output.'),
    sa.Column('target_prob', sa.Float(), nullable=False, comment='Highest probability of the target over the scored positions.'),
    sa.Column('target_rank', sa.Integer(), nullable=False, comment='Best rank of the target over the scored positions (1 = greedy choice).'),
    sa.Column('position_probs', sa.JSON(), nullable=False, comment='Target probability at each of the first generated positions.'),
    sa.Column('position_ranks', sa.JSON(), nullable=False, comment='Target rank at each of those positions.'),
    sa.Column('passed', sa.Boolean(), nullable=False, comment='As probe_result.passed, for the target.'),
    sa.Column('failure_category', sa.String(length=20), nullable=True, comment='As probe_result.failure_category.'),
    sa.Column('baseline_output', sa.Text(), nullable=False, comment='Greedy output of the same probe with the target token itself in the slots (decoded as output).'),
    sa.Column('baseline_output_ids', sa.Text(), nullable=False, comment='Space-separated ids of that baseline output.'),
    sa.Column('output_changed', sa.Boolean(), nullable=False, comment="The greedy output differs from the baseline's."),
    sa.Column('kl_from_baseline', sa.Float(), nullable=False, comment='KL(baseline || noken) in nats between the next-token distributions at the first generated position.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_noken_probe_result_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id', 'noken_id'], ['noken.run_id', 'noken.noken_id'], name=op.f('fk_noken_probe_result_run_id_noken'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['probe_template.id'], name=op.f('fk_noken_probe_result_template_id_probe_template')),
    sa.PrimaryKeyConstraint('run_id', 'noken_id', 'template_id', name=op.f('pk_noken_probe_result')),
    comment="One probe of one noken, per nokens run: the fields of probe_result for the noken's target (nearest real token), and how the output differs from the same probe of that real token (the baseline)."
    )


def downgrade() -> None:
    set_ingest_run_comments(STAGE_OLD, STATUS_OLD, STAGE_NEW, STATUS_NEW)
    op.drop_table('noken_probe_result')
    op.drop_table('noken_neighbor')
    with op.batch_alter_table('noken', schema=None) as batch_op:
        batch_op.drop_index('ix_noken_run_generator')

    op.drop_table('noken')
