"""prompt_search: step budget and restarts per target (elicitability within a budget); comments of the new searches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUDGET = (
    "Step budget the method had for this target (gcg: params.search.max_steps; continuous: continuous_steps); "
    "not greedy_emits and budget_steps >= B: not elicited within budget B. NULL for rows older than migration 0010."
)
RESTARTS = "gcg: restarts from random tokens after params.search.patience steps without progress; 0 for continuous. NULL before migration 0010."
# (column, type, nullable, old comment, new comment)
COMMENTS = [
    (
        "loss_trajectory",
        sa.JSON(),
        True,
        "Loss (negative target log-prob) after every step, if kept; JSON array.",
        "Loss after every step, if kept (JSON array): gcg, minus the best params.search.objective so far (margin or log-prob); continuous, the cross-entropy of the step's projected prompt.",
    ),
    (
        "target_role",
        sa.String(12),
        False,
        "Why the token was searched: 'anomalous' (top by anomaly_score), 'control' (random normal token) or 'requested'.",
        "Why the token was searched: 'anomalous' (top by anomaly_score), 'verified' (verified by the latest probes run), 'control' (random normal token) or 'requested'.",
    ),
    (
        "method",
        sa.String(12),
        False,
        "'gcg' (discrete gradient-guided token swaps) or 'continuous' (optimised embeddings snapped to the nearest allowed tokens).",
        "'gcg' (discrete gradient-guided token swaps) or 'continuous' (embeddings optimised through their projection to the nearest allowed tokens).",
    ),
    (
        "prompt_ids",
        sa.Text(),
        False,
        "Space-separated ids of the best prompt (after the model's BOS, if it uses one).",
        "Space-separated ids of the best prompt: the optimised slot between the run's params.prefix_ids and params.suffix_ids.",
    ),
    (
        "relaxed_logprob",
        sa.Float(),
        True,
        "Continuous method: target log-prob from the un-snapped embeddings, an optimistic bound; NULL for gcg.",
        "Continuous method: target log-prob from the final soft (unprojected) embeddings, an optimistic bound; NULL for gcg.",
    ),
]


def upgrade() -> None:
    with op.batch_alter_table("prompt_search") as batch_op:
        batch_op.add_column(sa.Column("budget_steps", sa.Integer(), nullable=True, comment=BUDGET))
        batch_op.add_column(sa.Column("restarts", sa.Integer(), nullable=True, comment=RESTARTS))
    _set_comments(new=True)


def downgrade() -> None:
    _set_comments(new=False)
    with op.batch_alter_table("prompt_search") as batch_op:
        batch_op.drop_column("restarts")
        batch_op.drop_column("budget_steps")


def _set_comments(*, new: bool) -> None:
    # SQLite keeps no column comments.
    if op.get_bind().dialect.name == "sqlite":
        return
    for column, type_, nullable, old_comment, new_comment in COMMENTS:
        comment, existing = (new_comment, old_comment) if new else (old_comment, new_comment)
        op.alter_column("prompt_search", column, existing_type=type_, existing_nullable=nullable, comment=comment, existing_comment=existing)
