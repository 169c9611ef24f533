"""Signing keys of the external issuers keyless trusts, served from memory on the hot path.

keyless fetches keys only for issuers an admin registered (never for whatever a token's ``iss``
says, so a token cannot make keyless call an address of its choosing). A registered issuer gets
its keys from one of three sources:

- ``discovery``: OIDC discovery of the issuer URL (through a :class:`JwksFetcher`);
- ``kubernetes``: the Kubernetes API server keyless runs in (its ``/openid/v1/jwks``, read with
  keyless's own service account, through a second :class:`JwksFetcher`), so a private cluster's
  key rotation is followed with no admin action;
- ``file``: a JWKS an admin uploaded, in which case nothing is ever fetched.

Fetches are per issuer: one in flight at a time, shared by every caller that needs it, so a
slow or dead issuer only ever delays tokens of that issuer. When a fetch fails, the last good
keys keep being served and the failure is recorded for ``keyless issuer list`` and /metrics.

Each issuer has a state: ``ok``; ``stale`` when its keys may be out of date (the last fetch
failed, the keys are older than ``stale_after``, or, for an uploaded JWKS, tokens arrive signed
with a key id it does not hold: the cluster rotated its keys); ``failing`` when it has no
usable key at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from keyless.core.clock import Clock
from keyless.core.errors import InvalidRequest, InvalidToken, NotFound, Unavailable
from keyless.core.jose import PublicKey, has_private_members, public_key_from_jwk

MAX_ISSUER_URL = 512
MAX_KEYS = 100

Source = Literal["discovery", "file", "kubernetes"]
SOURCES: tuple[Source, ...] = ("discovery", "file", "kubernetes")
State = Literal["ok", "stale", "failing"]
MAX_SHOWN_KID = 64


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    """A registered issuer as stored.

    ``url`` is the issuer exactly as it appears in tokens' ``iss``; ``jwks`` is a JWKS the admin
    uploaded (then keys are never fetched), or None when keys are fetched: by OIDC discovery,
    or, with ``kubernetes_api``, from the Kubernetes API server keyless runs in.
    ``updated_at`` is when the record (an uploaded JWKS) was last set; None means ``created_at``.
    """

    url: str
    jwks: dict[str, Any] | None
    created_at: float
    kubernetes_api: bool = False
    updated_at: float | None = None

    @property
    def source(self) -> Source:
        if self.jwks is not None:
            return "file"
        return "kubernetes" if self.kubernetes_api else "discovery"


class JwksFetcher(Protocol):
    async def fetch(self, issuer: str) -> dict[str, Any]:
        """The issuer's JWKS, or raise ``Unavailable`` with a one-line reason.

        Implementations bound the time a fetch may take.
        """
        ...


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    """An issuer's keys as this process holds them.

    ``last_success`` is the last good fetch (for an uploaded JWKS: its upload); ``state`` is
    ``ok``, ``stale`` or ``failing`` (see the module's docstring), with ``stale_since`` (when it
    stopped being ok, if known) and a one-line ``reason``; ``keys_age`` is the seconds since
    ``last_success``.
    """

    url: str
    source: Source
    kids: tuple[str, ...]
    last_success: float | None
    last_attempt: float | None
    last_error: str | None
    consecutive_failures: int
    state: State = "ok"
    stale_since: float | None = None
    reason: str | None = None
    keys_age: float | None = None


@dataclass(eq=False, slots=True)
class _Entry:
    record: IssuerRecord
    keys: dict[str, PublicKey] = field(default_factory=dict)  # replaced whole, never mutated
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    failing_since: float | None = None  # first failure of the current run of failures
    inflight: asyncio.Task[None] | None = None
    # Uploaded JWKS only: tokens signed with a key id it lacks (the cluster rotated its keys).
    unknown_kid: str | None = None
    unknown_kid_since: float | None = None
    unknown_kid_last: float | None = None

    @property
    def url(self) -> str:
        return self.record.url

    def saw_unknown_kid(self, kid: str, now: float, window: float) -> None:
        if self.unknown_kid_last is None or now - self.unknown_kid_last >= window:
            self.unknown_kid_since = now
        self.unknown_kid = kid
        self.unknown_kid_last = now

    def state(self, now: float, stale_after: float) -> tuple[State, float | None, str | None]:
        if not self.keys:
            return "failing", self.failing_since, self.last_error or "keys not fetched yet"
        if self.consecutive_failures:
            return "stale", self.failing_since, f"the last key fetch failed: {self.last_error}"
        if self.record.jwks is not None:
            kid, last = self.unknown_kid, self.unknown_kid_last
            if kid is not None and last is not None and now - last < stale_after:
                shown = kid if len(kid) <= MAX_SHOWN_KID else kid[: MAX_SHOWN_KID - 3] + "..."
                return (
                    "stale",
                    self.unknown_kid_since,
                    _one_line(
                        f"tokens are signed with key id {shown!r}, which the uploaded JWKS does "
                        "not hold: the cluster may have rotated its keys; upload its JWKS again, "
                        "or let keyless follow it (keyless k8s trust --in-cluster)"
                    ),
                )
            return "ok", None, None
        if self.last_success is not None and now - self.last_success > stale_after:
            return (
                "stale",
                self.last_success + stale_after,
                f"keys not refreshed for {int(now - self.last_success)} s",
            )
        return "ok", None, None

    def status(self, now: float, stale_after: float) -> IssuerStatus:
        state, since, reason = self.state(now, stale_after)
        return IssuerStatus(
            url=self.record.url,
            source=self.record.source,
            kids=tuple(self.keys),
            last_success=self.last_success,
            last_attempt=self.last_attempt,
            last_error=self.last_error,
            consecutive_failures=self.consecutive_failures,
            state=state,
            stale_since=since,
            reason=reason,
            keys_age=None if self.last_success is None else max(0.0, now - self.last_success),
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
        if has_private_members(jwk):
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
        kubernetes: JwksFetcher | None = None,
        refresh_interval: float = 3600.0,
        min_refetch_interval: float = 30.0,
        failure_backoff: float = 60.0,
        stale_after: float | None = None,
    ) -> None:
        """``fetcher`` serves ``discovery`` issuers, ``kubernetes`` the ``kubernetes`` ones.

        An issuer's keys are ``stale`` once older than ``stale_after`` (default: twice the
        refresh interval, so one missed refresh is not yet an alert).
        """
        self._fetchers: dict[Source, JwksFetcher | None] = {
            "discovery": fetcher,
            "kubernetes": kubernetes,
        }
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._min_refetch_interval = min_refetch_interval
        self._failure_backoff = failure_backoff
        self._stale_after = 2 * refresh_interval if stale_after is None else stale_after
        self._entries: dict[str, _Entry] = {}

    # -- registration ------------------------------------------------------------------------

    def replace_issuers(self, records: Mapping[str, IssuerRecord] | Iterable[IssuerRecord]) -> None:
        """Set the registered issuers; keys of fetched issuers that remain are kept.

        Each is looked up by its URL, or, given a mapping, by its key there (the caller's cache
        id: the same URL may be registered with other keys elsewhere). Keys are always fetched
        for the record's own URL.
        """
        pairs = records.items() if isinstance(records, Mapping) else ((r.url, r) for r in records)
        entries: dict[str, _Entry] = {}
        for key, record in pairs:
            old = self._entries.get(key)
            if (
                old is not None
                and old.record.jwks == record.jwks
                and old.record.source == record.source
            ):
                old.record = record
                entries[key] = old
            elif record.jwks is not None:
                entries[key] = self._file_entry(record)
            else:
                entries[key] = _Entry(record)
        self._entries = entries

    def _file_entry(self, record: IssuerRecord) -> _Entry:
        now = self._clock.now()
        entry = _Entry(record, last_attempt=now)
        try:
            entry.keys = parse_jwks(record.jwks)
        except ValueError as exc:
            entry.last_error = f"uploaded JWKS of issuer {record.url}: {exc}"
        else:
            if not entry.keys:
                entry.last_error = f"uploaded JWKS of issuer {record.url} has no usable signing key"
        if entry.last_error is not None:
            entry.consecutive_failures = 1
            entry.failing_since = now
        else:
            # The keys are as old as the upload, whenever this process loaded them.
            entry.last_success = record.updated_at or record.created_at
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
        elif entry.keys:
            # Anyone can present a token with any kid, so this only raises an alert (the
            # issuer's state), never changes a decision; it clears once such tokens stop.
            entry.saw_unknown_kid(kid, self._clock.now(), self._stale_after)
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

    def fetcher_for(self, source: Source) -> JwksFetcher | None:
        """The fetcher of issuers of ``source`` (None for uploaded JWKS, or a source this
        server has no fetcher for)."""
        return self._fetchers.get(source)

    async def _run_fetch(self, entry: _Entry) -> None:
        entry.last_attempt = self._clock.now()
        fetcher = self._fetchers.get(entry.record.source)
        try:
            if fetcher is None:
                raise Unavailable(
                    f"issuer {entry.url}: no {entry.record.source} key source in this server"
                )
            data = await fetcher.fetch(entry.url)
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
            entry.failing_since = None
        finally:
            entry.inflight = None

    def _failed(self, entry: _Entry, reason: str) -> None:
        entry.last_error = _one_line(reason)
        if not entry.consecutive_failures:
            entry.failing_since = self._clock.now()
        entry.consecutive_failures += 1

    def record_failure(self, issuer: str, reason: str) -> IssuerStatus:
        """A fetch of ``issuer``'s keys made just before it was registered (``issuer add``'s
        first fetch) failed: count it as this index's own, so its status says why."""
        entry = self._entry(issuer)
        entry.last_attempt = self._clock.now()
        self._failed(entry, reason)
        return self.status(issuer)

    async def refresh(self, issuer: str) -> IssuerStatus:
        """Fetch now, whatever the rate limits (``keyless issuer refresh``); NotFound if unknown.

        Issuers with an uploaded JWKS have nothing to fetch: their status is returned as is.
        """
        entry = self._entry(issuer)
        if entry.record.jwks is None:
            await self._fetch(entry)
        return entry.status(self._clock.now(), self._stale_after)

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
        """Refresh fetched issuers whose keys are older than ``refresh_interval``.

        Failing issuers are retried with exponential backoff from ``failure_backoff`` (capped at
        ``refresh_interval``). Returns the statuses of the issuers it refreshed.
        """
        now = self._clock.now()
        due = [entry for entry in self._entries.values() if self._due(entry, now)]
        await asyncio.gather(*(self._fetch(entry) for entry in due))
        now = self._clock.now()
        return [entry.status(now, self._stale_after) for entry in due]

    # -- status ------------------------------------------------------------------------------

    def status(self, issuer: str) -> IssuerStatus:
        return self._entry(issuer).status(self._clock.now(), self._stale_after)

    def statuses(self) -> list[IssuerStatus]:
        now = self._clock.now()
        return [self._entries[url].status(now, self._stale_after) for url in sorted(self._entries)]
