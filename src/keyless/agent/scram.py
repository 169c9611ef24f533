"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both halves: ``ScramClient``
logs the proxy in upstream with the dynamic credentials; ``ScramVerifier`` checks a local
application's password without ever holding it in a comparable form after start (only the
stored and server keys, as PostgreSQL's ``pg_authid`` does).

PostgreSQL's dialect of SCRAM: the user name in ``n=`` is ignored (the startup packet names the
user; libpq sends an empty one), no channel binding here (gs2 header ``n,,``, or ``y,,`` from a
client that could bind but was not offered ``-PLUS``), and passwords go through SASLprep when
they are valid for it, else are used as raw bytes (``pg_saslprep``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass, field

from keyless.core.errors import KeylessError

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096  # PostgreSQL's default scram_iterations
NONCE_BYTES = 18  # libpq and the server use 18 random bytes, base64


class ScramError(KeylessError):
    """A SCRAM exchange failed: a malformed message, a wrong proof or server signature."""

    code = "scram"


def saslprep(password: str) -> bytes:
    """RFC 4013 as PostgreSQL applies it: the prepared password, or the raw UTF-8 bytes when
    the password holds something SASLprep prohibits (PostgreSQL then uses it as it is)."""
    if password.isascii() and all(0x20 <= ord(ch) < 0x7F for ch in password):
        return password.encode()  # printable ASCII: SASLprep changes nothing
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not text or any(check(ch) for ch in text for check in prohibited):
        return password.encode()
    rtl = [stringprep.in_table_d1(ch) for ch in text]
    if any(rtl) and (any(stringprep.in_table_d2(ch) for ch in text) or not (rtl[0] and rtl[-1])):
        return password.encode()
    return text.encode()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ScramError("SCRAM: bad base64") from None


def _attributes(message: str) -> dict[str, str]:
    """``a=1,b=2`` -> ``{"a": "1", "b": "2"}`` (values may hold ``=``, never ``,``)."""
    found: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1 or key in found:
            raise ScramError("SCRAM: malformed message")
        found[key] = value
    return found


def keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, ServerKey) for a password."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


@dataclass
class ScramClient:
    """One client exchange: ``first()``, then ``final(server_first)``, then
    ``verify(server_final)``."""

    password: str = field(repr=False)
    nonce: str = field(default_factory=lambda: _b64(secrets.token_bytes(NONCE_BYTES)))
    _bare: str = ""
    _server_signature: bytes = field(default=b"", repr=False)

    def first(self) -> bytes:
        self._bare = f"n=,r={self.nonce}"
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8", "replace")
        attrs = _attributes(text)
        nonce, salt, count = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("SCRAM: the server's nonce does not extend ours")
        if not count.isdigit() or not 1 <= int(count) <= 10_000_000:
            raise ScramError("SCRAM: bad iteration count")
        client_key, server_key = keys(self.password, _unb64(salt), int(count))
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = f"{self._bare},{text},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = _attributes(server_final.decode("utf-8", "replace"))
        if "e" in attrs:
            raise ScramError(f"SCRAM: the server refused ({attrs['e'][:80]})")
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self._server_signature):
            raise ScramError("SCRAM: the server's signature is wrong (not the real server?)")


@dataclass(frozen=True)
class ScramSecret:
    """What a server keeps of a password: salt, iterations, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    @classmethod
    def from_password(cls, password: str, iterations: int = ITERATIONS) -> ScramSecret:
        salt = secrets.token_bytes(16)
        client_key, server_key = keys(password, salt, iterations)
        return cls(salt, iterations, hashlib.sha256(client_key).digest(), server_key)


@dataclass
class ScramVerifier:
    """One server exchange: ``first(client_first)`` -> server-first, then
    ``final(client_final)`` -> server-final (raises ScramError on a wrong proof)."""

    secret: ScramSecret
    nonce: str = field(default_factory=lambda: _b64(secrets.token_bytes(NONCE_BYTES)))
    _bare: str = ""
    _server_first: str = ""
    _gs2: str = ""

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode("utf-8", "replace")
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or flag not in ("n", "y") or authzid:
            # "p=...": channel binding, which this server did not offer
            raise ScramError("SCRAM: unsupported channel binding or authzid")
        attrs = _attributes(bare)
        client_nonce = attrs.get("r", "")
        if "n" not in attrs or not client_nonce or "m" in attrs:
            raise ScramError("SCRAM: malformed client-first-message")
        self._gs2 = f"{flag},,"
        self._bare = bare
        combined = client_nonce + self.nonce
        self.nonce = combined
        self._server_first = f"r={combined},s={_b64(self.secret.salt)},i={self.secret.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        text = client_final.decode("utf-8", "replace")
        head, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM: no proof")
        attrs = _attributes(head)
        if attrs.get("c") != _b64(self._gs2.encode()) or attrs.get("r") != self.nonce:
            raise ScramError("SCRAM: channel binding or nonce mismatch")
        auth_message = f"{self._bare},{self._server_first},{head}".encode()
        signature = _hmac(self.secret.stored_key, auth_message)
        proof = _unb64(proof_text)
        if len(proof) != len(signature):
            raise ScramError("SCRAM: bad proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.secret.stored_key):
            raise ScramError("password authentication failed")
        return f"v={_b64(_hmac(self.secret.server_key, auth_message))}".encode()
