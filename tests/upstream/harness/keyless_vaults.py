"""One keyless vault per upstream test class and per sample, made on first use through the
server's admin socket; the runner's identity is a secrets officer of each.

The runner (tests/upstream/test_azure_keyvault_secrets.py) names the server in
``KEYLESS_UPSTREAM_DATA_DIR`` (its admin socket), ``KEYLESS_UPSTREAM_VAULT_BASE``
(``https://{}.vault.localhost:PORT``) and ``KEYLESS_UPSTREAM_IDENTITY``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from keyless.cli.client import AdminClient, seg

current_key = ""  # the running test's module and class, set by the keyless_upstream plugin
_made: dict[str, str] = {}


def vault_url(key: str, label: str) -> str:
    """The URL of the vault for KEY (made now if it does not exist yet); LABEL starts its name."""
    if key in _made:
        return _made[key]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digest = hashlib.sha256(f"{key}@{worker}".encode()).hexdigest()[:8]
    name = f"{re.sub('[^a-z0-9]', '', label.lower())[:12] or 'upstream'}-{digest}"
    admin = AdminClient(Path(os.environ["KEYLESS_UPSTREAM_DATA_DIR"]))
    try:
        admin.post("/v1/vaults?tenant=default", {"name": name})
        admin.post(
            "/v1/roles?tenant=default",
            {
                "identity": os.environ["KEYLESS_UPSTREAM_IDENTITY"],
                "role": "secrets-officer",
                "scope": f"/vaults/{seg(name)}",
            },
        )
    finally:
        admin.close()
    _made[key] = os.environ["KEYLESS_UPSTREAM_VAULT_BASE"].format(name)
    return _made[key]


def for_current_test() -> str:
    module, _, cls = current_key.partition("::")
    return vault_url(current_key, cls or module)
