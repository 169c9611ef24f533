"""The agent's local credential endpoints (``keyless agent --credentials azure,aws,gcp``): the
Azure managed identity (App Service form), AWS container credentials and GCE metadata
protocols on loopback, each handing out keyless tokens for the pod's identity (server.py)."""

from keyless.agent.endpoints.server import (
    DIALECTS,
    CredentialServer,
    Endpoints,
    loopback,
    parse_dialects,
    serve_credentials,
)

__all__ = [
    "DIALECTS",
    "CredentialServer",
    "Endpoints",
    "loopback",
    "parse_dialects",
    "serve_credentials",
]
