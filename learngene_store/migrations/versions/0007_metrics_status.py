"""Checkpoint first, evaluation after (issue 17): a checkpoint's metrics have a status (pending, running,
ready, failed, canceled) and an evaluation lease of their own; jobs keep the seconds of each phase.
Checkpoints from before were evaluated before they were registered: they are `ready`.

Revision ID: 0007_metrics_status
Revises: 0006_webhooks
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from learngene_store.models import UTCDateTime

revision = "0007_metrics_status"
down_revision = "0006_webhooks"
branch_labels = None
depends_on = None

EVAL_COLUMNS = ("metrics_error", "metrics_at", "eval_lease", "eval_worker_id", "eval_heartbeat_at",
                "eval_dispatched_at", "eval_attempts", "eval_cancel_requested")


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("metrics_status", sa.String(16), nullable=False, server_default="ready"))
        batch.add_column(sa.Column("metrics_error", sa.Text, nullable=True))
        batch.add_column(sa.Column("metrics_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("eval_lease", sa.String(64), nullable=True))
        batch.add_column(sa.Column("eval_worker_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("eval_heartbeat_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("eval_dispatched_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("eval_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("eval_cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_checkpoints_metrics_status", ["metrics_status"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("timings", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("timings")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_index("ix_checkpoints_metrics_status")
        for name in (*reversed(EVAL_COLUMNS), "metrics_status"):
            batch.drop_column(name)
