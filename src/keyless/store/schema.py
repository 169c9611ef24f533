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
    # At most one current and one next key per tenant (the rotation CAS relies on it): the
    # partial unique index ``live_state_index`` below, made by migration 0001.
)


def live_state_index() -> sa.Index:
    """The partial unique index on ``signing_keys``, declared for Alembic (migrations/env.py)
    only: its ``postgresql_where`` loads SQLAlchemy's PostgreSQL dialect (~2 MB per process)
    into every process that imports this module, SQLite servers included."""
    return sa.Index(
        "ux_signing_keys_live_state",
        signing_keys.c.tenant_id,
        signing_keys.c.state,
        unique=True,
        sqlite_where=sa.text("state IN ('current', 'next')"),
        postgresql_where=sa.text("state IN ('current', 'next')"),
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
    # Where keys come from: discovery, file (the uploaded jwks), kubernetes (keyless's own
    # cluster's API server). updated_at: when the row (an uploaded JWKS) was last set.
    sa.Column("source", sa.String(16), nullable=False, server_default="discovery"),
    sa.Column("updated_at", sa.Float),
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
    # Migration 0008: an issuer set (JSON list, ``issuer`` is its first) and the Google source
    # (JSON), NULL when the credential has none.
    sa.Column("issuers", sa.Text),
    sa.Column("google", sa.Text),
    sa.UniqueConstraint("identity_id", "name", name="uq_fic_identity_name"),
    sa.Index("ix_fic_issuer", "issuer"),  # made by migration 0002
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

vaults = sa.Table(
    "vaults",
    metadata,
    sa.Column("name", sa.String(24), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One row per secret name in a vault: its latest version and its soft-delete state.
secrets_table = sa.Table(
    "secrets",
    metadata,
    sa.Column(
        "vault", sa.String(24), sa.ForeignKey("vaults.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("name", sa.String(127), primary_key=True),
    sa.Column("current_version", sa.String(32), nullable=False),
    sa.Column("deleted_at", sa.Float),
    sa.Column("purge_at", sa.Float),
)

secret_versions = sa.Table(
    "secret_versions",
    metadata,
    sa.Column("vault", sa.String(24), primary_key=True),
    sa.Column("name", sa.String(127), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("sealed_value", sa.LargeBinary, nullable=False),
    sa.Column("content_type", sa.String(255)),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("not_before", sa.Float),
    sa.Column("expires", sa.Float),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("number", sa.Integer, nullable=False, server_default="0"),
    sa.Column("destroyed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.ForeignKeyConstraint(
        ["vault", "name"], ["secrets.vault", "secrets.name"], ondelete="CASCADE"
    ),
)

# Access tokens revoked before they expire (Vault's revoke-self), kept until they expire.
revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

role_assignments = sa.Table(
    "role_assignments",
    metadata,
    sa.Column(
        "tenant_id",
        sa.String(36),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "identity_id",
        sa.String(36),
        sa.ForeignKey("identities.object_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(300), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The audit log: one row per event, hash-chained in ``seq`` order (see core/auditchain.py).
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("tenant_id", sa.Text),
    sa.Column("actor", sa.Text),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("workload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # HMAC under the audit key (core/auditkey.py); NULL for the legacy, unkeyed prefix.
    sa.Column("mac", sa.String(64)),
    sa.Index("ix_audit_events_tenant_seq", "tenant_id", "seq"),
)

# The chain's newest seq and hash, one row; appenders lock it, so the chain is one line.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("mac", sa.String(64)),
    sa.CheckConstraint("id = 1", name="ck_audit_head_one_row"),
)

# The audit key, one row, sealed under the root key (with the first seq it MACs inside).
audit_key = sa.Table(
    "audit_key",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_audit_key_one_row"),
)

# Signed checkpoints of the chain (core/auditcheckpoint.py): at most one per seq.
audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("jws", sa.Text, nullable=False),
    sa.Column("jwk", sa.Text, nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
)

# The database secrets engine (migration 0009; core/databases.py). A registered database: the
# URL's parts (never a password) and the admin password sealed under the root key.
databases = sa.Table(
    "databases",
    metadata,
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

database_roles = sa.Table(
    "database_roles",
    metadata,
    sa.Column("tenant_id", sa.String(36), primary_key=True),
    sa.Column("database", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("grants", sa.Text, nullable=False),  # JSON list of group roles
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

# One row per issued credential. state: active | revoking | revoked. A revoker claims the row
# (claimed_by, next_attempt_at = when its claim or its retry back-off runs out).
database_leases = sa.Table(
    "database_leases",
    metadata,
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
    sa.Index("ix_database_leases_state_expires", "state", "expires_at"),
)

# SPIFFE (migration 0010; core/spiffeca.py). One row per CA generation of a tenant; ``slot``
# is the state while it is live ("current", "next") and NULL once retired, so the unique
# (tenant_id, slot) allows one current and one next per tenant (the rotation CAS relies on it)
# without a partial index.
spiffe_cas = sa.Table(
    "spiffe_cas",
    metadata,
    sa.Column("ca_id", sa.String(32), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
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

# Federated trust domains of a tenant: where their bundle is fetched, the last good bundle
# (JSON) and when to fetch it again (its spiffe_refresh_hint).
spiffe_federation = sa.Table(
    "spiffe_federation",
    metadata,
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

# Every issued X.509-SVID (migration 0011; core/svidauth.py): the mTLS listener maps a client
# certificate's serial to the identity it was issued for. Pruned once expired.
spiffe_svids = sa.Table(
    "spiffe_svids",
    metadata,
    sa.Column("serial", sa.String(48), primary_key=True),
    sa.Column(
        "tenant_id", sa.String(36), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("object_id", sa.String(36), nullable=False),
    sa.Column("client_id", sa.String(36), nullable=False),
    sa.Column("spiffe_id", sa.Text, nullable=False),
    sa.Column("not_before", sa.Float, nullable=False),
    sa.Column("not_after", sa.Float, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("workload", sa.Text, nullable=False),
    sa.Index("ix_spiffe_svids_not_after", "not_after"),
)
