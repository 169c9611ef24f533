"""Fetch a federated trust domain's SPIFFE bundle (core/spiffefed.py) under the very rules of
issuer key fetching (``keyless.net.fetch``): https only (loopback http in dev mode), bounded
time and size, same-origin redirects, and only to addresses the issuer address policy allows
(``--allow-issuer-network``), checked on the address actually connected to."""

from __future__ import annotations

import asyncio
from typing import Any

from keyless.core.errors import Unavailable
from keyless.net.fetch import HttpJwksFetcher


class HttpBundleFetcher(HttpJwksFetcher):
    """The production :class:`keyless.core.spiffefed.BundleFetcher`."""

    async def fetch_bundle(self, url: str) -> dict[str, Any]:
        import httpx

        what = f"bundle URL {url[:200]}"
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise Unavailable(f"{what} is not a valid URL") from None
        if not self._allowed(target):
            raise Unavailable(f"{what} refused: bundles are fetched over https only")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._get_json(what, target, "SPIFFE bundle")
        except TimeoutError:
            raise Unavailable(f"{what} unreachable: no answer within {self._timeout:g}s") from None
