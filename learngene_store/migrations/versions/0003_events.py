"""Job events (status changes and progress per job, numbered: the SSE stream's event ids) and
learngene files (training curve, sample grids per width).

Revision ID: 0003_events
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from learngene_store.models import UTCDateTime

revision = "0003_events"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "learngene_files",
        sa.Column("learngene_id", sa.String(128), sa.ForeignKey("learngenes.id"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
    )
    op.create_index("ix_learngene_files_sha256", "learngene_files", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_learngene_files_sha256", "learngene_files")
    op.drop_table("learngene_files")
    op.drop_table("job_events")
