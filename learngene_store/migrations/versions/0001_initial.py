"""Initial registry: learngenes, datasets, jobs, checkpoints, checkpoint_files.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from learngene_store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learngenes",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("hidden_size", sa.Integer, nullable=False),
        sa.Column("head_dim", sa.Integer, nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("patch_size", sa.Integer, nullable=False),
        sa.Column("image_size", sa.Integer, nullable=False),
        sa.Column("in_channels", sa.Integer, nullable=False),
        sa.Column("num_classes", sa.Integer, nullable=False),
        sa.Column("source_dataset", sa.String(256), nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("widths", sa.JSON, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_learngenes_created_at", "learngenes", ["created_at"])
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("bytes", sa.Integer),
        sa.Column("num_images", sa.Integer, nullable=False),
        sa.Column("image_size", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("num_classes", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(256)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("learngene_id", sa.String(128), sa.ForeignKey("learngenes.id"), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(32)),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease", sa.String(64)),
        sa.Column("worker_id", sa.String(256)),
        sa.Column("heartbeat_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    )
    for col in ("learngene_id", "dataset", "method", "status", "created_at"):
        op.create_index(f"ix_jobs_{col}", "jobs", [col])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False, unique=True),
        sa.Column("learngene_id", sa.String(128), sa.ForeignKey("learngenes.id"), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("hidden_size", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_checkpoints_learngene_id", "checkpoints", ["learngene_id"])
    op.create_table(
        "checkpoint_files",
        sa.Column("checkpoint_id", sa.String(64), sa.ForeignKey("checkpoints.id"), primary_key=True),
        sa.Column("format", sa.String(16), primary_key=True),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
    )
    op.create_index("ix_checkpoint_files_sha256", "checkpoint_files", ["sha256"])


def downgrade() -> None:
    op.drop_table("checkpoint_files")
    op.drop_table("checkpoints")
    op.drop_table("jobs")
    op.drop_table("datasets")
    op.drop_table("learngenes")
