"""A loopback OIDC issuer (discovery document and JWKS over plain HTTP) and token signing.

keyless fetches plain-http issuers only on loopback and only with ``--dev``; tests that need
an issuer trusted *by discovery* (rather than by an uploaded JWKS) start one of these.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk

SUBJECT = "system:serviceaccount:demo:app"
AUDIENCE = "api://AzureADTokenExchange"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(*keys: tuple[rsa.RSAPrivateKey, str]) -> dict[str, Any]:
    """The public JWKS of ``(key, kid)`` pairs, RS256."""
    return {"keys": [public_jwk(key.public_key(), kid, "RS256") for key, kid in keys]}


def sign(
    key: Any,
    *,
    iss: str | None,
    kid: str,
    alg: str = "RS256",
    header: dict[str, Any] | None = None,
    now: float | None = None,
    **claims: Any,
) -> str:
    """A workload token of ``iss`` for SUBJECT and AUDIENCE, issued at ``now`` (default: the
    wall clock) and valid 10 minutes; ``claims`` override (None drops, ``iss`` too)."""
    now = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "iss": iss,
        "sub": SUBJECT,
        "aud": [AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    for name, value in {"iss": iss, **claims}.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(header or {})})


class LocalIssuer:
    """An OIDC issuer at ``http://127.0.0.1:PORT/PATH`` serving its discovery doc and JWKS.

    ``fetches`` counts the requests it answered, so a test can tell whether keyless asked.
    """

    def __init__(self, path: str = "issuer", kid: str = "disc-1") -> None:
        self.key = new_key()
        self.kid = kid
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                if self.path.endswith("/.well-known/openid-configuration"):
                    doc: dict[str, Any] = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path.endswith("/jwks"):
                    doc = jwks_of((issuer.key, issuer.kid))
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/{path}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def token(self, **claims: Any) -> str:
        return sign(self.key, iss=self.url, kid=self.kid, **claims)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
