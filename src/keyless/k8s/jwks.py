"""A cluster's service-account issuer keys, read through its Kubernetes API server.

This is the ``kubernetes`` key source of :mod:`keyless.core.issuers` (a
:class:`~keyless.core.issuers.JwksFetcher`): keyless reads ``/openid/v1/jwks`` of the cluster
it runs in with its own service account, on the same schedule as discovery issuers, so a
private cluster's key rotation is followed without any admin action. ``keyless k8s trust``
uses the same reader with an admin's kubeconfig.

Where the API server is, is decided per fetch:

- in a pod: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, the CA and the token in
  ``/var/run/secrets/kubernetes.io/serviceaccount/``. The token is read from its file on every
  fetch, since the kubelet rotates it;
- elsewhere: the kubeconfig (``$KUBECONFIG``, else ``~/.kube/config``), re-read on every fetch.

These requests are not subject to the SSRF policy for issuer URLs: they go to the API server
named by the pod's environment or the server's kubeconfig, which only the operator controls.
The registered issuer URL is only compared with the discovery document's ``issuer``; it is
never connected to. No redirect is followed, answers are capped in size and time, and no
error names the token or quotes a response body.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyless import __version__
from keyless.core.errors import Unavailable

if TYPE_CHECKING:  # imported at the first fetch: a serving process that never fetches skips httpx
    import httpx

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
MAX_DOCUMENT = 256 * 1024
TIMEOUT = 5.0
RBAC_HINT = (
    "the account needs the system:service-account-issuer-discovery ClusterRole "
    "(deploy/kubernetes binds it to keyless's service account)"
)


@dataclass(frozen=True, slots=True)
class ApiServer:
    """How to reach one Kubernetes API server, as found for one fetch."""

    url: str  # scheme://host:port[/prefix], no trailing slash
    origin: str  # "in-cluster" or "kubeconfig PATH": named in errors
    ca_file: str | None = None
    verify: bool = True
    cert: tuple[str, str] | None = None  # client certificate and key files
    authorization: str | None = None  # the Authorization header's value; never logged

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if not self.verify:  # the kubeconfig says insecure-skip-tls-verify: the admin's choice
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise Unavailable(
                    f"Kubernetes API ({self.origin}): cannot load its CA {self.ca_file} "
                    f"({type(exc).__name__})"
                ) from None
        if self.cert is not None:
            try:
                ctx.load_cert_chain(*self.cert)
            except (OSError, ssl.SSLError) as exc:
                raise Unavailable(
                    f"Kubernetes API ({self.origin}): cannot load the client certificate "
                    f"({type(exc).__name__})"
                ) from None
        return ctx


def _host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def in_cluster(
    environ: Mapping[str, str] | None = None, serviceaccount_dir: Path = SERVICEACCOUNT_DIR
) -> ApiServer | None:
    """The API server of the pod this process runs in; None outside a pod.

    Raises Unavailable when the pod has the API server's address but no token to use.
    """
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    if not host:
        return None
    port = env.get("KUBERNETES_SERVICE_PORT", "") or "443"
    token_file = serviceaccount_dir / "token"
    try:
        token = token_file.read_text().strip()  # the kubelet rotates it: read on every use
    except OSError as exc:
        raise Unavailable(
            f"Kubernetes API (in-cluster): cannot read the service-account token {token_file} "
            f"({exc.strerror or type(exc).__name__}); is automountServiceAccountToken off?"
        ) from None
    if not token:
        raise Unavailable(f"Kubernetes API (in-cluster): the token file {token_file} is empty")
    ca = serviceaccount_dir / "ca.crt"
    return ApiServer(
        url=f"https://{_host_port(host, port)}",
        origin="in-cluster",
        ca_file=str(ca) if ca.is_file() else None,
        authorization=f"Bearer {token}",
    )


async def from_kubeconfig(path: Path | None = None, context: str | None = None) -> ApiServer | None:
    """The API server of a kubeconfig's context; None when there is no kubeconfig at all."""
    from keyless.k8s.kubeapi import default_kubeconfig, load_configuration

    path = path or default_kubeconfig()
    if path is None:
        return None
    try:
        # An explicit path: the loader does not try the in-cluster configuration first.
        configuration = await load_configuration(path, context)
    except Exception as exc:  # the loader raises several types for a bad file or context
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise Unavailable(f"Kubernetes API: cannot load the kubeconfig {path}: {detail}") from None
    cert = (
        (configuration.cert_file, configuration.key_file)
        if configuration.cert_file and configuration.key_file
        else None
    )
    return ApiServer(
        url=str(configuration.host).rstrip("/"),
        origin=f"kubeconfig {path}",
        ca_file=configuration.ssl_ca_cert or None,
        verify=bool(configuration.verify_ssl),
        cert=cert,
        authorization=configuration.api_key.get("BearerToken") or None,
    )


class KubeApiReader:
    """GETs of the two public issuer documents from one API server, bounded and capped."""

    def __init__(self, server: ApiServer, *, timeout: float = TIMEOUT) -> None:
        self.server = server
        self._timeout = timeout

    async def get_json(self, path: str) -> dict[str, Any]:
        import httpx

        where = f"GET {path} on the Kubernetes API ({self.server.origin})"
        headers = {"Accept": "application/json", "User-Agent": f"keyless/{__version__}"}
        if self.server.authorization:
            headers["Authorization"] = self.server.authorization
        try:
            async with (
                asyncio.timeout(self._timeout),
                httpx.AsyncClient(
                    verify=self.server.ssl_context(),
                    timeout=httpx.Timeout(self._timeout),
                    follow_redirects=False,
                    trust_env=False,  # no proxy or CA bundle from the environment
                ) as client,
                client.stream("GET", self.server.url + path, headers=headers) as response,
            ):
                if response.status_code != 200:
                    hint = f": {RBAC_HINT}" if response.status_code in (401, 403) else ""
                    raise Unavailable(f"{where}: HTTP {response.status_code}{hint}")
                body = await _read_capped(response, where)
        except TimeoutError:
            raise Unavailable(f"{where}: no answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"{where}: unreachable ({type(exc).__name__})") from None
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Unavailable(f"{where}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise Unavailable(f"{where}: the answer is not a JSON object")
        return document

    async def issuer(self) -> str:
        """The cluster's service-account issuer: the ``iss`` of its tokens."""
        discovery = await self.get_json(DISCOVERY_PATH)
        issuer = discovery.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise Unavailable(
                f"the discovery document of the Kubernetes API ({self.server.origin}) names "
                "no issuer"
            )
        return issuer

    async def jwks(self) -> dict[str, Any]:
        jwks = await self.get_json(JWKS_PATH)
        if not isinstance(jwks.get("keys"), list):
            raise Unavailable(
                f"{JWKS_PATH} of the Kubernetes API ({self.server.origin}) has no keys array"
            )
        return jwks


async def _read_capped(response: httpx.Response, where: str) -> bytes:
    too_big = Unavailable(f"{where}: the answer is larger than {MAX_DOCUMENT} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DOCUMENT:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_DOCUMENT:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def locate(
    *,
    environ: Mapping[str, str] | None = None,
    serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
    kubeconfig: Path | None = None,
) -> ApiServer:
    """The API server this process runs against: in-cluster first, else the kubeconfig."""
    server = in_cluster(environ, serviceaccount_dir)
    if server is None:
        server = await from_kubeconfig(kubeconfig)
    if server is None:
        raise Unavailable(
            "no Kubernetes API: keyless runs in no pod (KUBERNETES_SERVICE_HOST is unset) "
            "and has no kubeconfig"
        )
    return server


class KubeApiJwksFetcher:
    """The ``kubernetes`` key source: issuer keys from keyless's own cluster's API server."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
        kubeconfig: Path | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self._environ = environ
        self._serviceaccount_dir = serviceaccount_dir
        self._kubeconfig = kubeconfig
        self._timeout = timeout

    async def fetch(self, issuer: str) -> dict[str, Any]:
        """The JWKS, once the cluster's discovery document names ``issuer`` as its issuer.

        A cluster whose issuer is another URL is refused: its tokens carry another ``iss``,
        so its keys must not be filed under this one.
        """
        server = await locate(
            environ=self._environ,
            serviceaccount_dir=self._serviceaccount_dir,
            kubeconfig=self._kubeconfig,
        )
        reader = KubeApiReader(server, timeout=self._timeout)
        found = await reader.issuer()
        if found != issuer:
            shown = found if len(found) <= 100 else found[:97] + "..."
            raise Unavailable(
                f"issuer mismatch: the Kubernetes API keyless runs against ({server.origin}) "
                f"has issuer {shown!r}, not {issuer}"
            )
        return await reader.jwks()
