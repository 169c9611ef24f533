"""The admin client: JSON over HTTP on the server's Unix socket."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keyless.core.errors import KeylessError

if TYPE_CHECKING:
    # Imported by a command that talks to the server: `keyless serve` loads the CLI too, and
    # httpx's package import pulls rich, pygments and click into the serving process.
    import httpx


class CliError(KeylessError):
    code = "cli"


class AdminClient:
    def __init__(self, data_dir: Path, timeout: float = 120.0, found_by: str = "") -> None:
        import httpx

        self.socket = data_dir / "admin.sock"
        self._where = f"{data_dir}" + (f" ({found_by})" if found_by else "")
        if not self.socket.exists():
            raise CliError(
                f"no keyless server is running for {self._where}: no admin.sock there; "
                "start one with `keyless serve`, or pick its data dir with --data-dir"
            )
        self._http: httpx.Client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://keyless",
            timeout=timeout,
        )

    def call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.InvalidURL as exc:
            raise CliError(f"cannot send this request: {exc}") from exc
        except httpx.ConnectError as exc:
            raise CliError(
                f"no keyless server answers on {self.socket}: it has stopped; "
                "start one with `keyless serve`"
            ) from exc
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the server on {self.socket}: {type(exc).__name__}"
            ) from exc
        data = response.json() if response.content else None
        if response.status_code >= 400:
            message = (
                (data or {}).get("error", {}).get("message") if isinstance(data, dict) else None
            )
            raise CliError(message or f"server answered {response.status_code}")
        return data

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def seg(value: str) -> str:
    """One path segment or query value, percent-encoded: a name cannot add a path or a query."""
    return quote(str(value), safe="")


def tenant_query(tenant: str) -> str:
    """``?tenant=T``, the query every tenant-scoped admin call carries."""
    return f"?tenant={seg(tenant)}"


def credential_path(identity: str, name: str, tenant: str) -> str:
    """An identity's federated credential, in the admin API."""
    return f"/v1/identities/{seg(identity)}/federated-credentials/{seg(name)}{tenant_query(tenant)}"
