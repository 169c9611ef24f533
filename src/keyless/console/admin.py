"""The console's way to the server: the admin API on the Unix socket, as the CLI uses it.

The console holds no credential of its own and reads no store: whoever can open the admin
socket can run the console, and every change it makes goes through the same admin routes (and
their audit) as ``keyless`` commands do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from keyless.core.errors import KeylessError


class AdminError(KeylessError):
    """The server refused a call (``status`` is its HTTP status) or cannot be reached (0)."""

    code = "console"

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ConsoleAdmin:
    def __init__(self, socket: Path, tenant: str = "default", timeout: float = 30.0) -> None:
        self.socket = socket
        self.tenant = tenant
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url="http://keyless",
            timeout=timeout,
            headers={"User-Agent": "keyless-console"},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        *,
        tenant: bool = True,
    ) -> Any:
        """``path``'s JSON answer; the console's tenant is added to the query unless
        ``tenant=False`` (routes that are not per tenant)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if tenant:
            query.setdefault("tenant", self.tenant)
        try:
            response = await self._http.request(method, path, json=body, params=query)
        except httpx.TransportError as exc:
            raise AdminError(
                f"the keyless server does not answer on {self.socket} ({type(exc).__name__}); "
                "is `keyless serve` still running?"
            ) from exc
        data = response.json() if response.content else None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise AdminError(message or f"HTTP {response.status_code}", response.status_code)
        return data

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.call("POST", path, body, params=params)
