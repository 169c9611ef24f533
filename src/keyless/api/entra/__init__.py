"""The Microsoft Entra ID (v2) dialect: OIDC metadata, JWKS, and (later) the token endpoint."""
