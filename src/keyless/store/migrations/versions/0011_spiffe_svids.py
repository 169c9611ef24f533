"""SPIFFE: every issued X.509-SVID (serial -> tenant, identity, SPIFFE ID, not-after), so that
the mTLS listener maps a client certificate to the identity it was issued for
(core/svidauth.py, docs/spiffe.md).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiffe_svids",
        sa.Column("serial", sa.String(48), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("object_id", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("spiffe_id", sa.Text, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("not_after", sa.Float, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("workload", sa.Text, nullable=False),
    )
    op.create_index("ix_spiffe_svids_not_after", "spiffe_svids", ["not_after"])


def downgrade() -> None:
    op.drop_index("ix_spiffe_svids_not_after", table_name="spiffe_svids")
    op.drop_table("spiffe_svids")
