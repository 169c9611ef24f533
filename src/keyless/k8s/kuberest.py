"""Plain JSON requests to the Kubernetes API through ``kubernetes_asyncio``'s client.

The generated models are skipped: the caller sends and reads the objects as the API server
writes them (a Secret's ``data``, a webhook configuration's ``webhooks``), and sees every
status itself. The client brings the configuration (in-cluster or kubeconfig), the
authentication and the token refresh. No answer's body is quoted in an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keyless.core.errors import Unavailable

REQUEST_TIMEOUT = 5.0  # seconds; the webhook's own timeout is 10 s
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    body: Any  # the JSON document, or None when there is none

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        """``the Kubernetes API answered 403 Forbidden``: for messages, never the body."""
        return f"the Kubernetes API answered {self.status} {self.reason}".rstrip()


class Unreachable(Unavailable):
    """No answer at all: refused, reset, timed out, or a TLS failure."""

    code = "k8s_unreachable"


class KubeRest:
    def __init__(self, configuration: Any) -> None:
        from kubernetes_asyncio import client

        self._api = client.ApiClient(configuration)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Answer:
        import aiohttp

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            try:
                raw = await response.content.read(MAX_BODY)
            finally:
                response.release()
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise Unreachable(f"the Kubernetes API is unreachable ({type(exc).__name__})") from None
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            document = None
        return Answer(response.status, str(response.reason or ""), document)

    async def aclose(self) -> None:
        await self._api.close()
