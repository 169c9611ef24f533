"""The keyed audit chain: a MAC per event and on the head, the sealed audit key, checkpoints.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for the rows written before the audit key existed (the legacy, unkeyed prefix).
    op.add_column("audit_events", sa.Column("mac", sa.String(64)))
    op.add_column("audit_head", sa.Column("mac", sa.String(64)))
    op.create_table(
        "audit_key",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_key_one_row"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("jws", sa.Text, nullable=False),
        sa.Column("jwk", sa.Text, nullable=False),
        # The audit key's MAC of the row: a database writer cannot plant a checkpoint.
        sa.Column("mac", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_key")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("mac")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("mac")
