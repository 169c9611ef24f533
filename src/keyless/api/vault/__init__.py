"""The Vault / OpenBao dialect: Vault's HTTP API (``/v1/...``) over keyless's one decision,
one RBAC, one vault store and one audit log, for ESO, the Vault CSI provider, Vault Agent,
hvac, Spring Cloud Vault and the ``vault``/``bao`` CLI (docs/vault-api.md).

- ``auth``: ``auth/MOUNT/login`` (role = identity name, the JWT decided by the identity's trust
  policies like every dialect), and the token's ``lookup-self``/``revoke-self``/``renew-self``;
- ``kv``: KV v2 on every keyless vault (mount = vault name, path = secret name);
- ``sys``: ``sys/health``, ``sys/seal-status``, ``sys/mounts``, ``sys/internal/ui/mounts``;
- ``wire``: Vault's response envelope and ``{"errors": [...]}`` bodies, and the caller.
"""
