"""Issuers: where their keys come from (``source``) and when the row was last set.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "issuers", sa.Column("source", sa.String(16), nullable=False, server_default="discovery")
    )
    op.add_column("issuers", sa.Column("updated_at", sa.Float))
    op.execute("UPDATE issuers SET source = 'file' WHERE jwks IS NOT NULL")
    op.execute("UPDATE issuers SET updated_at = created_at")


def downgrade() -> None:
    # Issuers that read their keys from the Kubernetes API fall back to discovery.
    with op.batch_alter_table("issuers") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("source")
