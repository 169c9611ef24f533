"""Signed checkpoints of the audit log: "the row at seq N has hash H", signed by a tenant key.

A checkpoint is a compact JWS signed by the default tenant's current signing key, with the
payload ``{"typ": "keyless-audit-checkpoint", "iss", "seq", "hash", "time"}``. It is stored with
the public JWK of its key (so it can be checked after that key has left the JWKS) and with a
keyed MAC (so a database writer cannot plant one). By the hash chain, a checkpoint at seq N
vouches for every row up to N: kept outside the database (``keyless audit export``), it proves
the log up to N even against someone who later holds the root key and can recompute the MACs.

Checkpoints are written when the key is made (covering the unkeyed prefix), by the server when
one is due (the head moved and ``EVERY`` events or ``SECONDS`` passed since the last), and at
each export. Several processes may race for the same seq: one row per seq, the first wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from keyless.core import jose
from keyless.core.auditchain import AuditHead, AuditRow
from keyless.core.auditkey import AuditMac
from keyless.core.auditverify import Anchor, Problem
from keyless.core.clock import Clock
from keyless.core.errors import Conflict, InvalidRequest, InvalidToken
from keyless.core.keyring import KeyRing

TYP = "keyless-audit-checkpoint"
EVERY = 1000  # events
SECONDS = 600.0


def jwk_text(jwk: dict[str, Any]) -> str:
    """The stored (and MAC'd) form of a public JWK: sorted-key compact JSON."""
    return json.dumps(jwk, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    time: float
    kid: str
    jws: str
    jwk: str  # JSON text, exactly as stored and MAC'd
    mac: str | None = None  # None in exports: the MAC is for the server only

    def as_dict(self) -> dict[str, Any]:
        """The export form (no MAC)."""
        try:
            jwk: Any = json.loads(self.jwk)
        except ValueError:
            jwk = self.jwk
        return {
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time,
            "kid": self.kid,
            "jws": self.jws,
            "jwk": jwk,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        """Read back ``as_dict``; InvalidRequest names what is wrong."""
        if not isinstance(data, dict):
            raise InvalidRequest("a checkpoint must be a JSON object")
        seq, hash_, time_ = data.get("seq"), data.get("hash"), data.get("time")
        kid, jws, jwk = data.get("kid"), data.get("jws"), data.get("jwk")
        if type(seq) is not int or seq < 0:
            raise InvalidRequest("a checkpoint's 'seq' must be a whole number")
        if not isinstance(time_, int | float) or isinstance(time_, bool):
            raise InvalidRequest("a checkpoint's 'time' must be a number")
        if not all(isinstance(v, str) for v in (hash_, kid, jws)):
            raise InvalidRequest("a checkpoint's 'hash', 'kid' and 'jws' must be strings")
        if not isinstance(jwk, dict):
            raise InvalidRequest("a checkpoint's 'jwk' must be a JSON object")
        try:
            when = float(time_)
        except OverflowError:
            raise InvalidRequest("a checkpoint's 'time' is out of range") from None
        return cls(seq, str(hash_), when, str(kid), str(jws), jwk_text(jwk))

    def anchor(self, source: str) -> Anchor:
        return Anchor(self.seq, self.hash, self.time, source)


def _same_number(signed: Any, stated: float | int) -> bool:
    return type(signed) in (int, float) and type(signed) is not bool and signed == stated


def signature_problem(cp: Checkpoint) -> str | None:
    """Why ``cp``'s JWS does not vouch for its seq and hash (None: it does)."""
    try:
        jws = jose.parse_compact(cp.jws)
    except InvalidToken as exc:
        return f"its JWS is malformed ({exc})"
    try:
        jwk = json.loads(cp.jwk)
    except ValueError:
        jwk = None
    if not isinstance(jwk, dict):
        return "its JWK is not a JSON object"
    if not (jws.kid == cp.kid == jwk.get("kid")):
        return f"its key ids differ (JWS {jws.kid!r}, JWK {jwk.get('kid')!r}, row {cp.kid!r})"
    try:
        jose.verify_signature(jws, jose.public_key_from_jwk(jwk))
    except InvalidToken:
        return f"its signature does not verify with the key it names (kid {cp.kid})"
    claims = jws.payload
    if claims.get("typ") != TYP:
        return f"its signed payload is not a {TYP}"
    if not (
        _same_number(claims.get("seq"), cp.seq)
        and claims.get("hash") == cp.hash
        and _same_number(claims.get("time"), cp.time)
    ):
        return (
            f"its signed payload (seq {claims.get('seq')!r}) does not say the seq, hash and "
            "time it is stored with"
        )
    return None


def checkpoint_problem(cp: Checkpoint, source: str, macs: AuditMac | None) -> Problem | None:
    """Is ``cp`` authentic? ``source``: "stored" (its MAC is checked too) or "exported"."""
    mac_checked = macs if source == "stored" else None
    if mac_checked and not mac_checked.same(mac_checked.checkpoint(cp.jws, cp.jwk), cp.mac):
        return Problem(
            "forged",
            cp.seq,
            f"the stored checkpoint at seq {cp.seq}: keyed MAC does not match: it was "
            "written or changed without the audit key",
            "checkpoint",
        )
    why = signature_problem(cp)
    if why is not None:
        return Problem(
            "signature", cp.seq, f"the {source} checkpoint at seq {cp.seq}: {why}", "checkpoint"
        )
    return None


class CheckpointStore(Protocol):
    async def audit_head(self) -> AuditHead: ...

    async def audit_row(self, seq: int) -> AuditRow | None: ...

    async def last_audit_checkpoint(self) -> Checkpoint | None: ...

    async def add_audit_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """Insert unless a checkpoint at that seq exists; returns the one stored."""
        ...


class AuditCheckpoints:
    """Writes checkpoints of the head, only once the head's keyed MACs check out."""

    def __init__(
        self,
        store: CheckpointStore,
        macs: AuditMac,
        ring: Callable[[], KeyRing],
        issuer: str,
        clock: Clock,
        *,
        every: int = EVERY,
        seconds: float = SECONDS,
    ) -> None:
        self._store = store
        self._macs = macs
        self._ring = ring
        self._issuer = issuer
        self._clock = clock
        self.every = every
        self.seconds = seconds

    def due(self, head: AuditHead, last: Checkpoint | None) -> bool:
        if head.seq <= (last.seq if last else 0):
            return False
        if last is None:
            return True
        return head.seq - last.seq >= self.every or self._clock.now() - last.time >= self.seconds

    async def write_if_due(self) -> Checkpoint | None:
        head = await self._store.audit_head()
        if not self.due(head, await self._store.last_audit_checkpoint()):
            return None
        return await self.write(head)

    async def write(self, head: AuditHead | None = None) -> Checkpoint | None:
        """A checkpoint of the head (None while the log is empty); Conflict if the head or its
        row fails its keyed MAC: keyless never signs what it cannot vouch for."""
        head = head or await self._store.audit_head()
        if head.seq == 0:
            return None
        why = await self._unverified(head)
        if why is not None:
            raise Conflict(
                f"no audit checkpoint signed: {why}; run `keyless audit verify` for details"
            )
        ring = self._ring()
        now = self._clock.now()
        claims = {"typ": TYP, "iss": self._issuer, "seq": head.seq, "hash": head.hash, "time": now}
        jws = ring.sign(claims)
        jwk = jwk_text(ring.current.public_jwk)
        cp = Checkpoint(
            head.seq, head.hash, now, ring.current.kid, jws, jwk, self._macs.checkpoint(jws, jwk)
        )
        return await self._store.add_audit_checkpoint(cp)

    async def _unverified(self, head: AuditHead) -> str | None:
        macs = self._macs
        if not macs.same(macs.head(head.seq, head.hash), head.mac):
            return f"the head (seq {head.seq}) fails its keyed MAC"
        row = await self._store.audit_row(head.seq)
        if row is None or row.hash != head.hash:
            return f"the row at the head (seq {head.seq}) does not have the head's hash"
        if head.seq >= macs.keyed_from and not macs.same(macs.row(row.seq, row.hash), row.mac):
            return f"seq {head.seq} fails its keyed MAC"
        return None
