"""Federated credentials: an issuer set (``issuers``, JSON list; ``issuer`` stays its first) and
the policy's Google source (``google``, JSON: member, attribute mapping and condition), both
NULL for the policies that have none.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("federated_credentials", sa.Column("issuers", sa.Text))
    op.add_column("federated_credentials", sa.Column("google", sa.Text))


def downgrade() -> None:
    # A credential with an issuer set falls back to its first issuer; a Google-form one keeps
    # its translation (subject, pattern, condition), which is what decides.
    with op.batch_alter_table("federated_credentials") as batch:
        batch.drop_column("google")
        batch.drop_column("issuers")
