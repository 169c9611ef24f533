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

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("object_id", sa.String(36), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("client_id", sa.String(36), nullable=False, unique=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_identities_tenant_name"),
)

issuers = sa.Table(
    "issuers",
    metadata,
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

federated_credentials = sa.Table(
    "federated_credentials",
    metadata,
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

dev_clusters = sa.Table(
    "dev_clusters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("sealed_private", sa.LargeBinary, nullable=False),
    sa.Column("public_jwk", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Bumped on every configuration change so other processes reload their in-memory indexes.
revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
