"""Envelope encryption: AES-256-GCM data keys wrapped by a 256-bit root key.

Blob layout (bytes)::

    version(1) | root key id(8) | wrap nonce(12) | wrapped data key(48) | nonce(12) | ciphertext

Each blob is bound to a context string (AAD), such as ``signing-key:KID``, so a ciphertext
cannot be moved to another row. The root key id names the root key that wrapped the data key,
so several root keys can be held during a rotation (``rotate-root-key``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyless.core.errors import CryptoError

_VERSION = 1
_HEADER = 1 + 8 + 12 + 48 + 12


def root_key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"keyless root key id\x00" + key).digest()[:8]


@dataclass(frozen=True)
class RootKeys:
    """The root keys this process holds; the first is the active one (used to wrap)."""

    keys: tuple[bytes, ...]
    _by_id: dict[bytes, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys or any(len(k) != 32 for k in self.keys):
            raise CryptoError("a root key must be 32 bytes")
        object.__setattr__(self, "_by_id", {root_key_id(k): AESGCM(k) for k in self.keys})

    def __repr__(self) -> str:
        return f"RootKeys(active={self.active_id})"

    @property
    def active_id(self) -> str:
        return root_key_id(self.keys[0]).hex()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        aad = context.encode()
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, nonce = os.urandom(12), os.urandom(12)
        rid = root_key_id(self.keys[0])
        wrapped = self._by_id[rid].encrypt(wrap_nonce, data_key, b"dk\x00" + aad)
        body = AESGCM(data_key).encrypt(nonce, plaintext, aad)
        return bytes([_VERSION]) + rid + wrap_nonce + wrapped + nonce + body

    def _data_key(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < _HEADER + 16 or blob[0] != _VERSION:
            raise CryptoError("encrypted value is malformed")
        wrapper = self._by_id.get(blob[1:9])
        if wrapper is None:
            raise CryptoError(f"value is wrapped by root key {blob[1:9].hex()}, not held here")
        try:
            return wrapper.decrypt(blob[9:21], blob[21:69], b"dk\x00" + aad)
        except InvalidTag as exc:
            raise CryptoError("data key does not unwrap (wrong root key or tampered)") from exc

    def open(self, blob: bytes, context: str) -> bytes:
        aad = context.encode()
        data_key = self._data_key(blob, aad)
        try:
            return AESGCM(data_key).decrypt(blob[69:81], blob[81:], aad)
        except InvalidTag as exc:
            raise CryptoError("encrypted value fails its integrity check") from exc

    def rewrap(self, blob: bytes, context: str) -> bytes:
        """Re-wrap the blob's data key under the active root key; the body is untouched."""
        aad = context.encode()
        rid = root_key_id(self.keys[0])
        if blob[1:9] == rid:
            return blob
        data_key = self._data_key(blob, aad)
        wrap_nonce = os.urandom(12)
        wrapped = self._by_id[rid].encrypt(wrap_nonce, data_key, b"dk\x00" + aad)
        return blob[:1] + rid + wrap_nonce + wrapped + blob[69:]

    def wrapped_by(self, blob: bytes) -> str:
        return blob[1:9].hex()
