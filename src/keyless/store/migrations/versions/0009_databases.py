"""The database secrets engine: registered databases (admin password sealed), their roles
(SQL templates, TTLs) and the leases issued (docs/databases.md).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "databases",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("dbname", sa.String(255), nullable=False),
        sa.Column("admin_user", sa.String(255), nullable=False),
        sa.Column("sslmode", sa.String(16), nullable=False),
        sa.Column("sealed_password", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "database_roles",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("database", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("grants", sa.Text, nullable=False),
        sa.Column("creation_sql", sa.Text, nullable=False),
        sa.Column("revocation_sql", sa.Text, nullable=False),
        sa.Column("ttl", sa.Integer, nullable=False),
        sa.Column("max_ttl", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "database"],
            ["databases.tenant_id", "databases.name"],
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "database_leases",
        sa.Column("suffix", sa.String(24), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("database", sa.String(63), nullable=False),
        sa.Column("role", sa.String(63), nullable=False),
        sa.Column("username", sa.String(63), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("workload", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("max_expires_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("claimed_by", sa.String(32)),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_index("ix_database_leases_state_expires", "database_leases", ["state", "expires_at"])


def downgrade() -> None:
    # Dropping the leases forgets roles still alive in the registered databases: revoke the
    # leases first (``keyless database lease revoke``) before downgrading.
    op.drop_index("ix_database_leases_state_expires", table_name="database_leases")
    op.drop_table("database_leases")
    op.drop_table("database_roles")
    op.drop_table("databases")
