"""Accounts: users (hashed API keys), aliases (`default` → learngene), public learngenes; jobs.progress_at
(hung-job detection) and jobs.resume_sha (a pre-training run's state in the blob store).

Existing learngenes were visible to everyone before accounts existed: they become public, and
the newest of them becomes the `default` alias target (what "default" meant until now).

Revision ID: 0004_accounts
Revises: 0003_events
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from learngene_store.models import UTCDateTime

revision = "0004_accounts"
down_revision = "0003_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("learngene_id", sa.String(128), sa.ForeignKey("learngenes.id"), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("learngenes") as batch:
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("progress_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("resume_sha", sa.String(64), nullable=True))
    op.execute(sa.text("UPDATE learngenes SET public = :t").bindparams(t=True))
    op.execute(sa.text(
        "INSERT INTO aliases (name, learngene_id, updated_by, updated_at) "
        "SELECT 'default', id, 'migration', created_at FROM learngenes ORDER BY created_at DESC, id DESC LIMIT 1"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("resume_sha")
        batch.drop_column("progress_at")
    with op.batch_alter_table("learngenes") as batch:
        batch.drop_column("public")
    op.drop_table("aliases")
    op.drop_table("users")
