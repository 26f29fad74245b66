"""Pre-training jobs: jobs.kind, jobs.result_learngene_id; init-only columns become nullable.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="init"))
        batch.add_column(sa.Column("result_learngene_id", sa.String(128), nullable=True))
        batch.alter_column("learngene_id", existing_type=sa.String(128), nullable=True)
        batch.create_index("ix_jobs_kind", ["kind"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_kind")
        batch.alter_column("learngene_id", existing_type=sa.String(128), nullable=False)
        batch.drop_column("result_learngene_id")
        batch.drop_column("kind")
