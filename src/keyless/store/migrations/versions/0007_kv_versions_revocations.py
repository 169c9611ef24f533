"""Secret versions get their ordinal (``number``: Vault KV v2's version numbers) and a
``destroyed`` mark; revoked access tokens are kept until they expire.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "secret_versions", sa.Column("number", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column(
        "secret_versions",
        sa.Column("destroyed", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    # Existing versions are numbered in the order they were written (ties by version id).
    op.execute(
        "UPDATE secret_versions SET number = (SELECT COUNT(*) FROM secret_versions AS o "
        "WHERE o.vault = secret_versions.vault AND o.name = secret_versions.name AND "
        "(o.created < secret_versions.created OR (o.created = secret_versions.created "
        "AND o.version <= secret_versions.version)))"
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("secret_versions") as batch:
        batch.drop_column("destroyed")
        batch.drop_column("number")
