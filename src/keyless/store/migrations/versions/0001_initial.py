"""Tenants and signing keys.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("alias", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("activated_at", sa.Float),
        sa.Column("retired_at", sa.Float),
        sa.Column("sealed_private", sa.LargeBinary, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
    )
    op.create_index(
        "ux_signing_keys_live_state",
        "signing_keys",
        ["tenant_id", "state"],
        unique=True,
        sqlite_where=sa.text("state IN ('current', 'next')"),
        postgresql_where=sa.text("state IN ('current', 'next')"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("tenants")
