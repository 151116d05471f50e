"""catalog foundation

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 12:00:32.731570
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tokenizer',
    sa.Column('id', sa.Integer(), nullable=False, comment='Surrogate key.'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='sha256 over (id, bytes, special) of every token: equal vocabularies share one row.'),
    sa.Column('name', sa.String(length=200), nullable=False, comment='Name of the first model or encoding it was ingested from.'),
    sa.Column('kind', sa.String(length=40), nullable=False, comment='Piece encoding: byte_level (GPT-2 style BPE), sentencepiece, wordpiece or tiktoken.'),
    sa.Column('vocab_size', sa.Integer(), nullable=False, comment='Number of token ids (holes in the id range excluded).'),
    sa.Column('n_special', sa.Integer(), nullable=False, comment='Number of special / control tokens.'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, comment='When first ingested (UTC).'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokenizer')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_tokenizer_content_hash')),
    comment='A vocabulary, shared by every model that uses the same one.'
    )
    op.create_table('model',
    sa.Column('id', sa.Integer(), nullable=False, comment='Surrogate key.'),
    sa.Column('name', sa.String(length=200), nullable=False, comment="Short name, e.g. 'SmolLM2-135M-Instruct.Q4_1'."),
    sa.Column('spec', sa.Text(), nullable=False, comment='The spec given to `glitchdex ingest`.'),
    sa.Column('source_kind', sa.String(length=20), nullable=False, comment='hub, directory, gguf, package or tiktoken.'),
    sa.Column('source', sa.Text(), nullable=False, comment='Resolved location: hub id, folder or file path.'),
    sa.Column('revision', sa.String(length=64), nullable=False, comment='Hub commit, or sha256 of the weight files.'),
    sa.Column('architecture', sa.String(length=100), nullable=True, comment='transformers model_type (llama, gemma3_text, bert, ...); NULL for tokenizer-only.'),
    sa.Column('vocab_size', sa.Integer(), nullable=False, comment='Rows of the input-embedding matrix (tokenizer size for tokenizer-only).'),
    sa.Column('hidden_size', sa.Integer(), nullable=True, comment='Embedding width d_model.'),
    sa.Column('tied_embeddings', sa.Boolean(), nullable=True, comment='Unembedding is the input embedding; NULL if the model has no LM head.'),
    sa.Column('n_params', sa.BigInteger(), nullable=True, comment='Number of parameters.'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Its tokenizer.'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, comment='When first ingested (UTC).'),
    sa.ForeignKeyConstraint(['tokenizer_id'], ['tokenizer.id'], name=op.f('fk_model_tokenizer_id_tokenizer')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model')),
    sa.UniqueConstraint('name', 'revision', name=op.f('uq_model_name_revision')),
    comment='A model (or a tokenizer-only encoding) as ingested from one source at one revision.'
    )
    op.create_table('token',
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer the token belongs to.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment="The token's id in its vocabulary."),
    sa.Column('piece', sa.Text(), nullable=False, comment="Raw vocabulary entry as the tokenizer stores it (e.g. 'Ġthe', '▁the', '##s')."),
    sa.Column('text', sa.Text(), nullable=False, comment='Decoded text; undecodable bytes shown as U+FFFD.'),
    sa.Column('raw_bytes', sa.LargeBinary(), nullable=True, comment='Exact bytes the token stands for; NULL for special tokens.'),
    sa.Column('norm_key', sa.Text(), nullable=True, comment='NFKC text with surrounding whitespace stripped: joins the same string across tokenizers; NULL if undecodable or empty.'),
    sa.Column('is_special', sa.Boolean(), nullable=False, comment='Special / control / added special token.'),
    sa.Column('is_byte', sa.Boolean(), nullable=False, comment="Stands for one raw byte (byte-fallback '<0xNN>' or a single-byte BPE token)."),
    sa.Column('is_partial_utf8', sa.Boolean(), nullable=False, comment='Its bytes are not valid UTF-8 on their own (a fragment of a character).'),
    sa.Column('is_unreachable', sa.Boolean(), nullable=False, comment='Encoding the decoded text does not give this token back (special and partial-UTF-8 tokens excluded).'),
    sa.Column('unreachable_kind', sa.String(length=10), nullable=True, comment="'single' (re-encodes to one other token), 'multi' (to several) or 'empty'; NULL if reachable."),
    sa.Column('reencoded_ids', sa.Text(), nullable=True, comment='Space-separated ids the decoded text re-encodes to, when unreachable.'),
    sa.Column('is_whitespace', sa.Boolean(), nullable=False, comment='Decoded text is non-empty and only whitespace.'),
    sa.Column('n_bytes', sa.Integer(), nullable=False, comment='Length in bytes.'),
    sa.Column('n_chars', sa.Integer(), nullable=False, comment='Length in characters of the decoded text.'),
    sa.Column('script', sa.String(length=20), nullable=False, comment="Dominant Unicode script of its letters (Latin, Cyrillic, Han, ...), 'Common' if none, 'Mixed' if several."),
    sa.Column('category', sa.String(length=20), nullable=False, comment='First matching of: special, partial_utf8, byte, unreachable, whitespace, normal.'),
    sa.ForeignKeyConstraint(['tokenizer_id'], ['tokenizer.id'], name=op.f('fk_token_tokenizer_id_tokenizer'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tokenizer_id', 'token_id', name=op.f('pk_token')),
    comment='One row per token id of a tokenizer, with its tokenizer facts.'
    )
    with op.batch_alter_table('token', schema=None) as batch_op:
        batch_op.create_index('ix_token_norm_key', ['norm_key'], unique=False)

    op.create_table('ingest_run',
    sa.Column('id', sa.Integer(), nullable=False, comment='Surrogate key.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model the stage ran for.'),
    sa.Column('stage', sa.String(length=40), nullable=False, comment='tokenizer_facts or embedding_stats (later stages add theirs).'),
    sa.Column('params', sa.JSON(), nullable=False, comment='Parameters as JSON (seeds, k, thresholds, reference-token rule, ...).'),
    sa.Column('params_hash', sa.String(length=64), nullable=False, comment='sha256 of the canonical JSON params: a stage is skipped when a succeeded run has the same hash.'),
    sa.Column('code_version', sa.String(length=40), nullable=False, comment='glitchdex version that ran it.'),
    sa.Column('status', sa.String(length=12), nullable=False, comment="running, succeeded or failed; only succeeded runs' rows are ever present."),
    sa.Column('error', sa.Text(), nullable=True, comment='One-line error of a failed run.'),
    sa.Column('device', sa.String(length=40), nullable=True, comment='torch device the stage computed on.'),
    sa.Column('n_rows', sa.Integer(), nullable=True, comment='Rows written by the run.'),
    sa.Column('seconds', sa.Float(), nullable=True, comment='Wall time of the stage.'),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False, comment='Start (UTC).'),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True, comment='End (UTC); NULL while running.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_ingest_run_model_id_model'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_run')),
    comment='One execution of one stage for one model; rows of other tables point at the run that wrote them.'
    )
    with op.batch_alter_table('ingest_run', schema=None) as batch_op:
        batch_op.create_index('ix_ingest_run_lookup', ['model_id', 'stage', 'params_hash', 'code_version'], unique=False)

    op.create_table('cluster',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The embedding_stats run.'),
    sa.Column('cluster_id', sa.Integer(), autoincrement=False, nullable=False, comment='Cluster label.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model.'),
    sa.Column('size', sa.Integer(), nullable=False, comment='Number of tokens in the cluster.'),
    sa.Column('centroid_norm', sa.Float(), nullable=False, comment='L2 norm of the cluster centre.'),
    sa.Column('dist_to_global_centroid', sa.Float(), nullable=False, comment='L2 distance of the cluster centre to the mean embedding.'),
    sa.Column('mean_stability', sa.Float(), nullable=False, comment='Mean cluster_stability of its tokens.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_cluster_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_cluster_run_id_ingest_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'cluster_id', name=op.f('pk_cluster')),
    comment="k-means clusters of a model's input embeddings (reference seed), per embedding_stats run."
    )
    op.create_table('embedding_stat',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The embedding_stats run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token id.'),
    sa.Column('model_id', sa.Integer(), nullable=False, comment='Model (denormalised for joins).'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('embed_norm', sa.Float(), nullable=False, comment='L2 norm of the input embedding.'),
    sa.Column('unembed_norm', sa.Float(), nullable=True, comment='L2 norm of the unembedding row; NULL if tied or no LM head.'),
    sa.Column('centroid_dist', sa.Float(), nullable=False, comment='L2 distance of the input embedding to the mean embedding.'),
    sa.Column('centroid_cos', sa.Float(), nullable=False, comment='Cosine similarity of the input embedding to the mean embedding.'),
    sa.Column('unused_cos', sa.Float(), nullable=False, comment="Cosine similarity of the unembedding (input embedding for encoders), first principal component removed, to the mean of reference unused tokens (rule in the run's params); high = under-trained."),
    sa.Column('cluster_id', sa.Integer(), nullable=False, comment='k-means cluster of the input embedding (reference seed).'),
    sa.Column('cluster_stability', sa.Float(), nullable=False, comment='Fraction of k-means seeds whose (label-matched) cluster agrees with the reference seed.'),
    sa.Column('embed_norm_pct', sa.Float(), nullable=False, comment='Percentile of a low norm (1.0 = smallest norm).'),
    sa.Column('centroid_dist_pct', sa.Float(), nullable=False, comment='Percentile of closeness to the centroid (1.0 = nearest).'),
    sa.Column('unused_cos_pct', sa.Float(), nullable=False, comment='Percentile of unused_cos (1.0 = most similar to unused tokens).'),
    sa.Column('anomaly_score', sa.Float(), nullable=False, comment='The ranking used by `glitchdex top`; currently unused_cos_pct, the strongest published indicator.'),
    sa.Column('anomaly_rank', sa.Integer(), nullable=False, comment='1 = most anomalous token of the model in this run.'),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], name=op.f('fk_embedding_stat_model_id_model'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_embedding_stat_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_embedding_stat_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', name=op.f('pk_embedding_stat')),
    comment='Embedding indicators of every token of a model, per embedding_stats run. Percentiles: 1.0 = most anomalous.'
    )
    with op.batch_alter_table('embedding_stat', schema=None) as batch_op:
        batch_op.create_index('ix_embedding_stat_run_rank', ['run_id', 'anomaly_rank'], unique=False)

    op.create_table('neighbor',
    sa.Column('run_id', sa.Integer(), nullable=False, comment='The embedding_stats run.'),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False, comment='Token whose neighbours these are.'),
    sa.Column('rank', sa.Integer(), autoincrement=False, nullable=False, comment='1 = nearest.'),
    sa.Column('tokenizer_id', sa.Integer(), nullable=False, comment='Tokenizer (denormalised for joins with token).'),
    sa.Column('neighbor_token_id', sa.Integer(), nullable=False, comment="The neighbouring token's id."),
    sa.Column('cosine', sa.Float(), nullable=False, comment='Cosine similarity of the two input embeddings.'),
    sa.ForeignKeyConstraint(['run_id'], ['ingest_run.id'], name=op.f('fk_neighbor_run_id_ingest_run'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tokenizer_id', 'neighbor_token_id'], ['token.tokenizer_id', 'token.token_id'], name=op.f('fk_neighbor_tokenizer_id_token')),
    sa.PrimaryKeyConstraint('run_id', 'token_id', 'rank', name=op.f('pk_neighbor')),
    comment="Nearest input-embedding neighbours (cosine) of a model's most anomalous tokens, per embedding_stats run."
    )


def downgrade() -> None:
    op.drop_table('neighbor')
    with op.batch_alter_table('embedding_stat', schema=None) as batch_op:
        batch_op.drop_index('ix_embedding_stat_run_rank')

    op.drop_table('embedding_stat')
    op.drop_table('cluster')
    with op.batch_alter_table('ingest_run', schema=None) as batch_op:
        batch_op.drop_index('ix_ingest_run_lookup')

    op.drop_table('ingest_run')
    with op.batch_alter_table('token', schema=None) as batch_op:
        batch_op.drop_index('ix_token_norm_key')

    op.drop_table('token')
    op.drop_table('model')
    op.drop_table('tokenizer')
