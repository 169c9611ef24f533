"""Identities, issuers, federated credentials, dev clusters and revisions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("object_id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("client_id", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_identities_tenant_name"),
    )
    op.create_table(
        "issuers",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("url", sa.String(512), primary_key=True),
        sa.Column("jwks", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "federated_credentials",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "identity_id",
            sa.String(36),
            sa.ForeignKey("identities.object_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject", sa.String(1024)),
        sa.Column("subject_pattern", sa.String(1024)),
        sa.Column("audiences", sa.Text, nullable=False),
        sa.Column("condition", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("identity_id", "name", name="uq_fic_identity_name"),
    )
    op.create_index("ix_fic_issuer", "federated_credentials", ["issuer"])
    op.create_table(
        "dev_clusters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("sealed_private", sa.LargeBinary, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "revisions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("revisions", "dev_clusters", "federated_credentials", "issuers", "identities"):
        op.drop_table(table)
