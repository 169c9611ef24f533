"""SPIFFE: the CA generations of each tenant's trust domain (intermediate key sealed) and the
federated trust domains' bundles (docs/spiffe.md).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiffe_cas",
        sa.Column("ca_id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("slot", sa.String(16)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("activated_at", sa.Float),
        sa.Column("retired_at", sa.Float),
        sa.Column("sealed_private", sa.LargeBinary, nullable=False),
        sa.Column("intermediate", sa.LargeBinary, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("tenant_id", "slot", name="uq_spiffe_cas_slot"),
    )
    op.create_table(
        "spiffe_federation",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("trust_domain", sa.String(255), primary_key=True),
        sa.Column("bundle_url", sa.Text, nullable=False),
        sa.Column("bundle", sa.Text),
        sa.Column("fetched_at", sa.Float),
        sa.Column("refresh_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spiffe_federation")
    op.drop_table("spiffe_cas")
