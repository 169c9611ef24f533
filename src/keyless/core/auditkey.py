"""The audit key: the secret that makes the audit chain keyed, and the MACs made with it.

The public chain (``auditchain.py``) is plain SHA-256, so anyone with an export can check it,
and anyone who can write to the database can also recompute it. Each row therefore also
carries ``mac = HMAC-SHA256(K, "row" || seq || hash)``, the head ``HMAC(K, "head" || seq ||
hash)`` and each stored checkpoint ``HMAC(K, "checkpoint" || jws || jwk)``. ``K`` is 32 random
bytes made once, kept in the database only sealed under the root key (context
``audit-mac-key:1``), so a database writer cannot make a MAC for a row it edits, inserts or
re-chains, nor move the head.

The sealed plaintext also records ``keyed_from``, the first ``seq`` written with a MAC (the
head's seq + 1 when the key was made, read under the head's lock): rows before it are the
legacy, unkeyed prefix of a log written before keyless had the key. Being sealed, a database
writer cannot move it.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from dataclasses import dataclass
from hashlib import sha256

from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError

SEAL_CONTEXT = "audit-mac-key:1"
# One label per kind of MAC, so that a MAC made for one can never pass as another's.
_ROW = b"keyless-audit-row\x00"
_HEAD = b"keyless-audit-head\x00"
_CHECKPOINT = b"keyless-audit-checkpoint\x00"


@dataclass(frozen=True, slots=True)
class AuditKey:
    secret: bytes
    keyed_from: int  # the first seq that carries a MAC
    created_at: float

    def __repr__(self) -> str:  # never the secret
        return f"AuditKey(keyed_from={self.keyed_from}, created_at={self.created_at})"

    @classmethod
    def new(cls, keyed_from: int, now: float) -> AuditKey:
        return cls(os.urandom(32), keyed_from, now)

    def seal(self, root: RootKeys) -> bytes:
        plain = {
            "v": 1,
            "key": base64.b64encode(self.secret).decode("ascii"),
            "keyed_from": self.keyed_from,
            "created_at": self.created_at,
        }
        return root.seal(json.dumps(plain, sort_keys=True).encode(), SEAL_CONTEXT)

    @classmethod
    def open(cls, blob: bytes, root: RootKeys) -> AuditKey:
        plain = json.loads(root.open(blob, SEAL_CONTEXT))
        try:
            secret = base64.b64decode(plain["key"], validate=True)
            key = cls(secret, int(plain["keyed_from"]), float(plain["created_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CryptoError("the sealed audit key is malformed") from exc
        if plain.get("v") != 1 or len(secret) != 32 or key.keyed_from < 1:
            raise CryptoError("the sealed audit key is malformed")
        return key

    def macs(self) -> AuditMac:
        """A MAC maker; each thread that makes MACs should hold its own."""
        return AuditMac(self)


def _seq(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


class AuditMac:
    """HMAC-SHA256 under the audit key, one keyed state per kind copied per MAC (cheap)."""

    def __init__(self, key: AuditKey) -> None:
        self.keyed_from = key.keyed_from
        self.created_at = key.created_at
        base = hmac.new(key.secret, digestmod=sha256)
        self._row, self._head, self._cp = base.copy(), base.copy(), base
        self._row.update(_ROW)
        self._head.update(_HEAD)
        self._cp.update(_CHECKPOINT)

    def __repr__(self) -> str:
        return f"AuditMac(keyed_from={self.keyed_from})"

    def row(self, seq: int, hash_: str) -> str:
        mac = self._row.copy()
        mac.update(_seq(seq) + hash_.encode("ascii", "replace"))
        return mac.hexdigest()

    def head(self, seq: int, hash_: str) -> str:
        mac = self._head.copy()
        mac.update(_seq(seq) + hash_.encode("ascii", "replace"))
        return mac.hexdigest()

    def checkpoint(self, jws: str, jwk: str) -> str:
        mac = self._cp.copy()
        data = jws.encode("utf-8", "replace")
        mac.update(len(data).to_bytes(8, "big") + data + jwk.encode("utf-8", "replace"))
        return mac.hexdigest()

    @staticmethod
    def same(expected: str, presented: str | None) -> bool:
        if presented is None:
            return False
        return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))
