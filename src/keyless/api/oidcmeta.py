"""The OpenID Provider metadata both discovery documents share (Entra's per tenant, AD FS's).

Each dialect names its own issuer and endpoints; what keyless supports is said once here.
"""

from __future__ import annotations

from typing import Any


def provider_metadata(
    *, issuer: str, authorization: str, token: str, jwks: str, claims: list[str]
) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": authorization,
        "token_endpoint": token,
        "jwks_uri": jwks,
        "response_types_supported": ["code", "id_token", "token id_token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "grant_types_supported": [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "scopes_supported": ["openid"],
        "claims_supported": claims,
    }
