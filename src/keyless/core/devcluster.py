"""The development cluster issuer (``--dev``): a stand-in kube-apiserver token signer.

Tokens are laid out byte for byte as kube-apiserver lays out projected service-account tokens
(header ``{"alg":"RS256","kid":…}``; claims in the order aud, exp, iat, iss, jti,
kubernetes.io, nbf, sub; compact JSON), and are validated by keyless through the same
discovery and JWKS path as any other issuer.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyless.core import jose
from keyless.core.clock import Clock
from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError, InvalidRequest
from keyless.core.models import DevCluster

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
DEV_CLUSTER = "dev"  # made at start with --dev; `keyless dev token`'s default --cluster


def validate_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise InvalidRequest(f"{kind} {value!r} is not a DNS label (lowercase letters, digits, -)")
    return value


def issuer_url(public_url: str, name: str) -> str:
    return f"{public_url}/dev/clusters/{name}"


def new_cluster(name: str, root: RootKeys, now: float) -> DevCluster:
    validate_name("cluster name", name)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # kube-apiserver's kid: base64url(sha256(DER public key)).
    kid = jose.b64url_encode(hashlib.sha256(der_public).digest())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return DevCluster(
        name,
        kid,
        root.seal(der, DevCluster.seal_context(name)),
        jose.public_jwk(key.public_key(), kid, "RS256"),
        now,
    )


def discovery(public_url: str, name: str) -> dict[str, Any]:
    issuer = issuer_url(public_url, name)
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def jwks(cluster: DevCluster) -> dict[str, Any]:
    return {"keys": [cluster.public_jwk]}


def mint(
    cluster: DevCluster,
    root: RootKeys,
    *,
    public_url: str,
    namespace: str,
    service_account: str,
    now: int,
    audience: str = DEFAULT_AUDIENCE,
    pod: str | None = None,
    node: str | None = None,
    lifetime: int = 3600,
) -> str:
    validate_name("namespace", namespace)
    validate_name("service account", service_account)
    if not 600 <= lifetime <= 86400 * 2:
        raise InvalidRequest("lifetime must be between 600 and 172800 seconds")
    der = root.open(cluster.sealed_private, DevCluster.seal_context(cluster.name))
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("dev cluster key is not RSA")
    k8s: dict[str, Any] = {"namespace": namespace}
    if node:
        k8s["node"] = {"name": node, "uid": str(uuid.uuid4())}
    if pod:
        if not _SUBDOMAIN.fullmatch(pod):
            raise InvalidRequest(f"pod {pod!r} is not a DNS subdomain name")
        k8s["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
    k8s["serviceaccount"] = {"name": service_account, "uid": str(uuid.uuid4())}
    claims = {
        "aud": [audience],
        "exp": now + lifetime,
        "iat": now,
        "iss": issuer_url(public_url, cluster.name),
        "jti": str(uuid.uuid4()),
        "kubernetes.io": k8s,
        "nbf": now,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }
    header = jose.b64url_encode(b'{"alg":"RS256","kid":"' + cluster.kid.encode() + b'"}')
    body = jose.b64url_encode(_go_json(claims).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{jose.b64url_encode(signature)}"


def _go_json(value: Any) -> str:
    """Compact JSON as Go's encoding/json writes it (no spaces, keys in given order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class DevClusterStore(Protocol):
    async def get_dev_cluster(self, name: str) -> DevCluster | None: ...

    async def create_dev_cluster(self, cluster: DevCluster) -> DevCluster: ...


class DevClusters:
    """Named dev clusters, made on first use and kept (sealed) in the store."""

    def __init__(
        self, store: DevClusterStore, root: Callable[[], RootKeys], clock: Clock, public_url: str
    ) -> None:
        self._store = store
        self._root = root
        self._clock = clock
        self.public_url = public_url
        self._cache: dict[str, DevCluster] = {}

    async def get(self, name: str) -> DevCluster | None:
        cluster = self._cache.get(name)
        if cluster is None:
            cluster = await self._store.get_dev_cluster(name)
            if cluster is not None:
                self._cache[name] = cluster
        return cluster

    def forget(self) -> None:
        """Drop the cached clusters (their sealed keys): after a root-key rotation the store
        holds them re-wrapped, and the old wrapping no longer opens."""
        self._cache.clear()

    async def ensure(self, name: str) -> DevCluster:
        cluster = await self.get(name)
        if cluster is None:
            made = new_cluster(name, self._root(), self._clock.now())
            cluster = await self._store.create_dev_cluster(made)
            self._cache[name] = cluster
        return cluster

    async def mint(self, name: str, **kw: Any) -> tuple[str, str]:
        """Returns (issuer URL, token)."""
        cluster = await self.ensure(name)
        token = mint(
            cluster, self._root(), public_url=self.public_url, now=int(self._clock.now()), **kw
        )
        return issuer_url(self.public_url, name), token
