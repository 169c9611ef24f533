"""The client certificate of a request, from the ASGI TLS extension.

Only the mTLS listener (``--mtls-listen``, server/mtls.py) puts it there, after its TLS
handshake verified the chain against the tenants' SPIFFE CAs; the public listener never does,
and no header can: it is the ASGI scope, not the request. Shape (ASGI TLS extension):
``scope["extensions"]["tls"]["client_cert_chain"]``, a list of PEM strings, leaf first.
"""

from __future__ import annotations

import ssl
from typing import Any


def client_cert_der(scope: Any) -> bytes | None:
    """The leaf's DER, or None when the connection presented no client certificate."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, dict) else None
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain or not isinstance(chain[0], str):
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])
