"""URLs the edge shows, shared by the Key Vault dialect and the admin API."""

from __future__ import annotations


def vault_url(vault: str, vault_domain: str, port: int) -> str:
    """A vault's Key Vault URL (``https://NAME.VAULT_DOMAIN[:PORT]``)."""
    return f"https://{vault}.{vault_domain}" + ("" if port == 443 else f":{port}")
