"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/`` create the same."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("alias", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("activated_at", sa.Float),
    sa.Column("retired_at", sa.Float),
    sa.Column("sealed_private", sa.LargeBinary, nullable=False),
    sa.Column("public_jwk", sa.Text, nullable=False),
    # At most one current and one next key per tenant: the rotation CAS relies on it.
    sa.Index(
        "ux_signing_keys_live_state",
        "tenant_id",
        "state",
        unique=True,
        sqlite_where=sa.text("state IN ('current', 'next')"),
        postgresql_where=sa.text("state IN ('current', 'next')"),
    ),
)
