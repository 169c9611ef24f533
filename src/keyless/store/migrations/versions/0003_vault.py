"""Vaults, secrets and their versions, role assignments.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("name", sa.String(24), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column(
            "vault",
            sa.String(24),
            sa.ForeignKey("vaults.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(127), primary_key=True),
        sa.Column("current_version", sa.String(32), nullable=False),
        sa.Column("deleted_at", sa.Float),
        sa.Column("purge_at", sa.Float),
    )
    op.create_table(
        "secret_versions",
        sa.Column("vault", sa.String(24), primary_key=True),
        sa.Column("name", sa.String(127), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("sealed_value", sa.LargeBinary, nullable=False),
        sa.Column("content_type", sa.String(255)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("not_before", sa.Float),
        sa.Column("expires", sa.Float),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["vault", "name"], ["secrets.vault", "secrets.name"], ondelete="CASCADE"
        ),
    )
    op.create_table(
        "role_assignments",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "identity_id",
            sa.String(36),
            sa.ForeignKey("identities.object_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(300), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("role_assignments", "secret_versions", "secrets", "vaults"):
        op.drop_table(table)
