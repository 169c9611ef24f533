"""SPIFFE names for keyless objects (issue 21; CONTRACT.md "SPIFFE").

- A tenant is a SPIFFE *trust domain*: ``trust_domain(alias)`` = the alias plus ``.keyless``
  (``default.keyless``); ``keyless tenant show --output json`` carries it as ``trust_domain``.
- A workload's default SPIFFE ID is ``spiffe://TRUST_DOMAIN/ns/NS/sa/SA`` (from a Kubernetes
  token's namespace and service account).
- Endpoints (paths of the public URL; TENANT is the tenant's alias or id):
  ``BUNDLE_PATH``: ``GET /TENANT/spiffe/bundle`` the trust domain's SPIFFE bundle (a JWKS with
  ``x509-svid`` and ``jwt-svid`` keys, ``spiffe_sequence``, ``spiffe_refresh_hint``);
  ``X509_SVID_PATH``: ``POST /TENANT/spiffe/x509-svid`` and ``JWT_SVID_PATH``:
  ``POST /TENANT/spiffe/jwt-svid``, each with a JSON body ``{"client_id": CLIENT_ID,
  "assertion": PLATFORM_TOKEN, ...}`` (``"csr"``: a base64 DER PKCS#10 for an X.509-SVID;
  ``"audience": [..]`` for a JWT-SVID), decided by the same trust-policy decision as every
  dialect's token exchange, audited. Answers: ``{"spiffe_id", "svid": [base64 DER certs, leaf
  first], "expires_at", "bundle": [base64 DER CA certs]}`` and ``{"spiffe_id", "token",
  "expires_at"}``.
"""

from __future__ import annotations

import re

from keyless.core.errors import InvalidRequest

TRUST_DOMAIN_SUFFIX = ".keyless"
BUNDLE_PATH = "/{tenant}/spiffe/bundle"
BUNDLES_PATH = "/{tenant}/spiffe/bundles"  # {TRUST_DOMAIN: bundle}: this one and the federated
X509_SVID_PATH = "/{tenant}/spiffe/x509-svid"
JWT_SVID_PATH = "/{tenant}/spiffe/jwt-svid"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def trust_domain(tenant_alias: str) -> str:
    return tenant_alias.lower() + TRUST_DOMAIN_SUFFIX


def spiffe_id(trust_domain_name: str, path: str) -> str:
    """``spiffe://TD/PATH``; InvalidRequest when either part breaks the SPIFFE ID rules
    (lower-case trust domain; path segments of letters, digits, ``.``, ``_``, ``-``, no ``.``
    or ``..`` segment)."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain_name):
        raise InvalidRequest(f"{trust_domain_name[:64]!r} is not a SPIFFE trust domain name")
    segments = path.strip("/").split("/")
    for segment in segments:
        if not _PATH_SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise InvalidRequest(f"{path[:128]!r} is not a SPIFFE ID path")
    return f"spiffe://{trust_domain_name}/{'/'.join(segments)}"


def kubernetes_id(trust_domain_name: str, namespace: str, service_account: str) -> str:
    return spiffe_id(trust_domain_name, f"ns/{namespace}/sa/{service_account}")
