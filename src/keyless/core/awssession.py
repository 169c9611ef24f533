"""AWS session credentials without a credential store (docs/aws.md, issue 17 item 2).

An ``AssumeRoleWithWebIdentity`` answer is three values made from one keyless access token
(issued by the same ``TokenService.exchange`` as every dialect, for the vault resource):

- ``SessionToken``: the access token itself;
- ``AccessKeyId``: ``ASIA`` + 16 base32 characters of a hash of the token's id (``jti``);
- ``SecretAccessKey``: 40 base64 characters of HMAC-SHA256 over the whole access token under
  the *session key*, itself HMAC-SHA256(root key, label): the same on every replica and worker
  that shares the root key file, and never stored.

So a signed request is verified with no database read: the session token is verified as any
access token (signature, audience, expiry, revocation, its identity still there), the key id
and secret are recomputed from it, and the SigV4 signature checked with that secret.

A root key rotation changes the session key: sessions made before it stop verifying (their
holders assume the role again when they expire, within the token lifetime). While the root
key file holds two keys, both session keys are tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from keyless.core.envelope import RootKeys

_SESSION_KEY_LABEL = b"keyless-aws-session-key:1"
_SECRET_LABEL = b"keyless-aws-secret\x00"
_KEY_ID_LABEL = b"keyless-aws-access-key-id\x00"
KEY_ID_PREFIX = "ASIA"


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str

    def __repr__(self) -> str:  # never the secret or the token
        return f"SessionCredentials(access_key_id={self.access_key_id!r})"


def access_key_id(token_id: str) -> str:
    """``ASIA`` + 16 base32 characters (10 bytes) of the token id's hash: AWS's form for
    temporary credentials (``ASIA`` + 16 of ``A-Z2-7``)."""
    digest = hashlib.sha256(_KEY_ID_LABEL + token_id.encode()).digest()[:10]
    return KEY_ID_PREFIX + base64.b32encode(digest).decode("ascii")


class SessionKeys:
    """The session keys derived from the root keys (active first), recomputed when the root
    key set changes (``root`` is read on every use: a rotation swaps it)."""

    def __init__(self, root: Callable[[], RootKeys]) -> None:
        self._root = root
        self._for: RootKeys | None = None
        self._keys: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        return "SessionKeys()"

    def _current(self) -> tuple[bytes, ...]:
        root = self._root()
        if root is not self._for:
            self._keys = tuple(
                hmac.new(k, _SESSION_KEY_LABEL, hashlib.sha256).digest() for k in root.keys
            )
            self._for = root
        return self._keys

    @staticmethod
    def _secret(key: bytes, session_token: str) -> str:
        mac = hmac.new(key, _SECRET_LABEL + session_token.encode(), hashlib.sha256).digest()
        return base64.b64encode(mac[:30]).decode("ascii")

    def issue(self, access_token: str, token_id: str) -> SessionCredentials:
        """The credentials an access token (and its ``jti``) stands for, under the active key."""
        secret = self._secret(self._current()[0], access_token)
        return SessionCredentials(access_key_id(token_id), secret, access_token)

    def secrets(self, session_token: str) -> list[str]:
        """Every secret key ``session_token`` may have been issued with (active key first)."""
        return [self._secret(key, session_token) for key in self._current()]
