"""Learngene tags: free labels an owner (or an admin) puts on a set, to browse the registry by.

Revision ID: 0005_learngene_tags
Revises: 0004_accounts
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_learngene_tags"
down_revision = "0004_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("learngenes") as batch:
        batch.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("learngenes") as batch:
        batch.drop_column("tags")
