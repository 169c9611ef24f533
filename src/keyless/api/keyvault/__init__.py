"""The Azure Key Vault secrets REST dialect (what ``azure-keyvault-secrets`` calls)."""
