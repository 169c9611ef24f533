"""Signing keys of the external issuers keyless trusts, served from memory on the hot path.

keyless fetches keys only for issuers an admin registered (never for whatever a token's ``iss``
says, so a token cannot make keyless call an address of its choosing). A registered issuer gets
its keys either by OIDC discovery (through a :class:`JwksFetcher`) or from a JWKS the admin
uploaded for a private cluster, in which case nothing is ever fetched.

Fetches are per issuer: one in flight at a time, shared by every caller that needs it, so a
slow or dead issuer only ever delays tokens of that issuer. When a fetch fails, the last good
keys keep being served and the failure is recorded for ``keyless issuer list`` and /metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from keyless.core.clock import Clock
from keyless.core.errors import InvalidRequest, InvalidToken, NotFound, Unavailable
from keyless.core.jose import PublicKey, public_key_from_jwk

MAX_ISSUER_URL = 512
MAX_KEYS = 100
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

Source = Literal["discovery", "file"]


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    """A registered issuer as stored.

    ``url`` is the issuer exactly as it appears in tokens' ``iss``; ``jwks`` is a JWKS the admin
    uploaded (then keys are never fetched), or None for OIDC discovery.
    """

    url: str
    jwks: dict[str, Any] | None
    created_at: float

    @property
    def source(self) -> Source:
        return "discovery" if self.jwks is None else "file"


class JwksFetcher(Protocol):
    async def fetch(self, issuer: str) -> dict[str, Any]:
        """The issuer's JWKS, or raise ``Unavailable`` with a one-line reason.

        Implementations bound the time a fetch may take.
        """
        ...


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    url: str
    source: Source
    kids: tuple[str, ...]
    last_success: float | None
    last_attempt: float | None
    last_error: str | None
    consecutive_failures: int


@dataclass(eq=False, slots=True)
class _Entry:
    record: IssuerRecord
    keys: dict[str, PublicKey] = field(default_factory=dict)  # replaced whole, never mutated
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    inflight: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.record.url

    def status(self) -> IssuerStatus:
        return IssuerStatus(
            url=self.record.url,
            source=self.record.source,
            kids=tuple(self.keys),
            last_success=self.last_success,
            last_attempt=self.last_attempt,
            last_error=self.last_error,
            consecutive_failures=self.consecutive_failures,
        )


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _jwk_label(index: int, jwk: Any) -> str:
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    return f"key #{index + 1}" + (f" (kid {kid!r})" if isinstance(kid, str) else "")


def _usable_key(jwk: Any) -> tuple[str, PublicKey] | None:
    """``(kid, key)`` for a public signing JWK with a kid; None for anything else."""
    if not isinstance(jwk, dict):
        return None
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    try:
        return kid, public_key_from_jwk(jwk)
    except Exception:  # untrusted input: whatever the importer raises, the key is skipped
        return None


def _key_list(data: Any) -> list[Any] | None:
    if not isinstance(data, dict):
        return None
    keys = data.get("keys")
    return keys if isinstance(keys, list) else None


def parse_jwks(data: Any) -> dict[str, PublicKey]:
    """kid -> key for the usable keys of a JWKS; unusable keys are skipped.

    Raises ValueError when ``data`` is not a JWKS at all; the first key with a kid wins.
    """
    keys = _key_list(data)
    if keys is None:
        raise ValueError('JWKS is not a JSON object with a "keys" array')
    if len(keys) > MAX_KEYS:
        raise ValueError(f"JWKS has more than {MAX_KEYS} keys")
    out: dict[str, PublicKey] = {}
    for jwk in keys:
        usable = _usable_key(jwk)
        if usable is not None:
            out.setdefault(usable[0], usable[1])
    return out


def validate_jwks(data: Any) -> dict[str, Any]:
    """Check a JWKS an admin uploads; return it as ``{"keys": [...]}`` (other members dropped).

    It must hold at least one importable public signing key with a kid; any private member
    (even on a key that would be skipped) refuses the whole upload.
    """
    keys = _key_list(data)
    if keys is None:
        raise InvalidRequest('JWKS must be a JSON object with a "keys" array')
    if len(keys) > MAX_KEYS:
        raise InvalidRequest(f"JWKS has {len(keys)} keys; at most {MAX_KEYS} are allowed")
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise InvalidRequest(f"JWKS key #{index + 1} is not a JSON object")
        if any(member in jwk for member in _PRIVATE_MEMBERS):
            raise InvalidRequest(
                f"JWKS {_jwk_label(index, jwk)} holds private key material; upload public keys"
            )
    if not any(_usable_key(jwk) is not None for jwk in keys):
        raise InvalidRequest(
            "JWKS has no usable key: each needs a kid, use 'sig' (or no use), and must be an "
            "RSA, EC P-256/P-384 or Ed25519 public key"
        )
    return {"keys": [dict(jwk) for jwk in keys]}


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (brackets allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_issuer_url(url: str, *, dev: bool) -> str:
    """Return ``url`` unchanged if it can be a registered issuer, else raise InvalidRequest.

    Not normalised: the issuer must equal tokens' ``iss`` exactly (a trailing slash counts).
    """
    if not isinstance(url, str) or not url:
        raise InvalidRequest("issuer URL is empty")
    if len(url) > MAX_ISSUER_URL:
        raise InvalidRequest(f"issuer URL is longer than {MAX_ISSUER_URL} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise InvalidRequest("issuer URL must be printable ASCII without spaces")
    if url.startswith("https://"):
        scheme = "https"
    elif url.startswith("http://"):
        scheme = "http"
    else:
        raise InvalidRequest(f"issuer URL {url!r} must start with https://")
    if "?" in url or "#" in url:
        raise InvalidRequest(f"issuer URL {url!r} must not have a query or fragment")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidRequest(f"issuer URL {url!r} must not hold user information")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidRequest(f"issuer URL {url!r} has an invalid port") from exc
    host = parts.hostname
    if not host:
        raise InvalidRequest(f"issuer URL {url!r} has no host")
    if scheme == "http":
        if not dev:
            raise InvalidRequest(f"issuer URL {url!r} must use https")
        if not is_loopback_host(host):
            raise InvalidRequest(
                f"issuer URL {url!r}: http is allowed only for loopback hosts (in dev mode)"
            )
    return url


class IssuerKeys:
    """The in-memory index of registered issuers and their signing keys."""

    def __init__(
        self,
        fetcher: JwksFetcher,
        clock: Clock,
        *,
        refresh_interval: float = 3600.0,
        min_refetch_interval: float = 30.0,
        failure_backoff: float = 60.0,
    ) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._min_refetch_interval = min_refetch_interval
        self._failure_backoff = failure_backoff
        self._entries: dict[str, _Entry] = {}

    # -- registration ------------------------------------------------------------------------

    def replace_issuers(self, records: Iterable[IssuerRecord]) -> None:
        """Set the registered issuers; keys of discovery issuers that remain are kept."""
        entries: dict[str, _Entry] = {}
        for record in records:
            old = self._entries.get(record.url)
            if old is not None and old.record.jwks == record.jwks:
                old.record = record
                entries[record.url] = old
            elif record.jwks is not None:
                entries[record.url] = self._file_entry(record)
            else:
                entries[record.url] = _Entry(record)
        self._entries = entries

    def _file_entry(self, record: IssuerRecord) -> _Entry:
        entry = _Entry(record, last_attempt=self._clock.now())
        try:
            entry.keys = parse_jwks(record.jwks)
        except ValueError as exc:
            entry.last_error = f"uploaded JWKS of issuer {record.url}: {exc}"
            entry.consecutive_failures = 1
            return entry
        if not entry.keys:
            entry.last_error = f"uploaded JWKS of issuer {record.url} has no usable signing key"
            entry.consecutive_failures = 1
        else:
            entry.last_success = entry.last_attempt
        return entry

    def is_registered(self, url: str) -> bool:
        return url in self._entries

    def _entry(self, issuer: str) -> _Entry:
        entry = self._entries.get(issuer)
        if entry is None:
            raise NotFound(f"issuer {issuer} is not registered")
        return entry

    # -- hot path ----------------------------------------------------------------------------

    async def key(self, issuer: str, kid: str) -> PublicKey:
        """The key ``kid`` of a registered issuer; no I/O when it is cached.

        Raises InvalidToken (reason ``unregistered_issuer`` or ``unknown_kid``), or
        Unavailable when the issuer's keys were never fetched and cannot be now.
        """
        entry = self._entries.get(issuer)
        if entry is None:
            raise InvalidToken(f"issuer {issuer} is not registered", reason="unregistered_issuer")
        found = entry.keys.get(kid)
        if found is not None:
            return found
        if entry.record.jwks is None:
            if entry.inflight is not None or self._may_refetch(entry):
                await self._fetch(entry)
                found = entry.keys.get(kid)
                if found is not None:
                    return found
            if entry.last_success is None:
                raise Unavailable(
                    f"signing keys of issuer {issuer} are unavailable: "
                    f"{entry.last_error or 'not fetched yet'}"
                )
        raise InvalidToken(
            f"token key id {kid!r} not found in the keys of issuer {issuer}", reason="unknown_kid"
        )

    def _may_refetch(self, entry: _Entry) -> bool:
        last = entry.last_attempt
        return last is None or self._clock.now() - last >= self._min_refetch_interval

    # -- fetching ----------------------------------------------------------------------------

    async def _fetch(self, entry: _Entry) -> None:
        """Run one fetch for ``entry``, or join the one in flight; never raises its failure."""
        task = entry.inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._run_fetch(entry), name=f"keyless-jwks-fetch {entry.url}"
            )
            entry.inflight = task
        # A caller that gives up (cancelled) must not cancel the fetch other callers share.
        await asyncio.shield(task)

    async def _run_fetch(self, entry: _Entry) -> None:
        entry.last_attempt = self._clock.now()
        try:
            data = await self._fetcher.fetch(entry.url)
            keys = parse_jwks(data)
            if not keys:
                raise ValueError("JWKS has no usable signing key")
        except Unavailable as exc:
            self._failed(entry, exc.message)
        except ValueError as exc:
            self._failed(entry, f"keys of issuer {entry.url}: {exc}")
        except Exception as exc:  # a fetcher bug must not break the hot path
            self._failed(entry, f"fetching keys of issuer {entry.url} failed: {type(exc).__name__}")
        else:
            entry.keys = keys
            entry.last_success = self._clock.now()
            entry.last_error = None
            entry.consecutive_failures = 0
        finally:
            entry.inflight = None

    @staticmethod
    def _failed(entry: _Entry, reason: str) -> None:
        entry.last_error = _one_line(reason)
        entry.consecutive_failures += 1

    async def refresh(self, issuer: str) -> IssuerStatus:
        """Fetch now, whatever the rate limits (``keyless issuer refresh``); NotFound if unknown.

        Issuers with an uploaded JWKS have nothing to fetch: their status is returned as is.
        """
        entry = self._entry(issuer)
        if entry.record.jwks is None:
            await self._fetch(entry)
        return entry.status()

    def _due(self, entry: _Entry, now: float) -> bool:
        if entry.record.jwks is not None or entry.inflight is not None:
            return False
        if entry.consecutive_failures and entry.last_attempt is not None:
            backoff = min(
                self._failure_backoff * 2 ** min(entry.consecutive_failures - 1, 16),
                max(self._refresh_interval, self._failure_backoff),
            )
            if now - entry.last_attempt < backoff:
                return False
        return entry.last_success is None or now - entry.last_success >= self._refresh_interval

    async def refresh_due(self) -> list[IssuerStatus]:
        """Refresh discovery issuers whose keys are older than ``refresh_interval``.

        Failing issuers are retried with exponential backoff from ``failure_backoff`` (capped at
        ``refresh_interval``). Returns the statuses of the issuers it refreshed.
        """
        now = self._clock.now()
        due = [entry for entry in self._entries.values() if self._due(entry, now)]
        await asyncio.gather(*(self._fetch(entry) for entry in due))
        return [entry.status() for entry in due]

    # -- status ------------------------------------------------------------------------------

    def status(self, issuer: str) -> IssuerStatus:
        return self._entry(issuer).status()

    def statuses(self) -> list[IssuerStatus]:
        return [self._entries[url].status() for url in sorted(self._entries)]
