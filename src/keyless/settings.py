"""One typed, frozen settings object, built from flags, ``KEYLESS_*`` env and defaults.

Precedence: flag, then environment, then default. Unknown ``KEYLESS_*`` variables and
conflicting options fail at start with a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyless.core.errors import ConfigError
from keyless.net.addresses import Network, parse_network

DEFAULT_PORT = 8443
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Variables other tools of the project read; the server ignores them.
_FOREIGN_ENV = ("KEYLESS_TEST_",)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".keyless")
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    public_url: str = f"https://localhost:{DEFAULT_PORT}"
    database_url: str | None = None
    vault_domain: str = "vault.localhost"
    dev: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    root_key_file: Path | None = None
    signing_alg: str = "ES256"
    key_rotation_period: int = 30 * 86400
    token_lifetime: int = 3600
    svid_ttl: int = 3600  # lifetime of an X.509-SVID (docs/spiffe.md)
    # An operator's CA (PEM files) that signs every tenant's SPIFFE intermediates instead of a
    # root keyless makes per generation (docs/spiffe.md "An operator-provided CA").
    spiffe_upstream_ca: Path | None = None
    spiffe_upstream_key: Path | None = None
    log_level: str = "info"
    audit_fail_closed: bool = True
    # Measurement only (bench/): no audit log at all. Refused without --dev.
    unsafe_no_audit: bool = False
    recovery_days: int = 90
    secret_cache_mb: int = 32  # sealed secrets kept in memory for reads; 0 disables
    # Seconds between two sweeps of the database engine's reaper (expired leases revoked).
    database_reap_interval: int = 10
    token_rate_limit: int = 50  # token requests per second per client IP; 0 disables
    token_rate_burst: int = 100
    # Public requests in progress per process; one more is answered 503 at once. 0 = no limit.
    max_in_flight: int = 64
    workers: int = 1  # processes serving the public listener (SO_REUSEPORT), one event loop each
    header_timeout: int = 10  # seconds a client has to send its request headers
    body_timeout: int = 10  # seconds a client has to send its whole body, once headers are in
    # After SIGTERM: seconds /readyz answers 503 while requests are still served, so that load
    # balancers take this process out before it stops accepting (server/drain.py). 0 = none:
    # the default, so a plain `keyless serve` stops at once; the Kubernetes manifests set 5.
    shutdown_delay: int = 0
    discovery_rate_limit: int = 50  # discovery/JWKS requests per second per client IP; 0 = off
    k8s_public_ca: bool = False  # the public URL's certificate is publicly trusted
    k8s_ca_configmap: str = "keyless-ca"  # ConfigMap (key ca.crt) mounted into injected pods
    k8s_tenant: str | None = None  # AZURE_TENANT_ID default for injected pods (id or alias)
    # The image of the agent the webhook injects (k8s/agentinject.py): keyless's own image, which
    # the manifests pass; None: keyless:VERSION, the manifests' default image.
    k8s_agent_image: str | None = None
    # Running inside a cluster (docs/kubernetes.md). The namespace keyless runs in (None: the
    # service account's namespace file) and the Service in front of it.
    k8s_namespace: str | None = None
    k8s_service: str = "keyless"
    # Reconcile the keyless.dev custom resources (k8s/controller.py), into k8s_tenant's tenant.
    k8s_controller: bool = False
    # Serving certificate issued in-cluster from a CA kept in Secret keyless-ca of k8s_namespace;
    # rotated; the webhook's caBundle and the CA ConfigMaps kept current (k8s/selftls.py).
    k8s_issue_tls: bool = False
    # One ExternalName Service per vault in this namespace, so NAME.VAULT_DOMAIN resolves.
    k8s_vault_namespace: str | None = None
    # Register the cluster keyless runs in as an issuer (keys from its API) at start.
    k8s_trust_cluster: bool = False
    # Roll Deployments/StatefulSets annotated keyless.dev/restart-on-change when a secret they
    # consume changes, or this long before its version expires (k8s/restarts.py).
    k8s_restart_on_change: bool = False
    k8s_restart_before_expiry: int = 600
    # The admission webhook's own TLS listener (None: not started); see docs/kubernetes.md.
    webhook_host: str | None = None
    webhook_port: int | None = None
    webhook_client_ca: Path | None = None  # CA of the API server's client certificate
    webhook_insecure_no_client_auth: bool = False  # explicit opt-out: a NetworkPolicy guards it
    # The mTLS listener (None: not started): the public app, clients authenticated by an
    # X.509-SVID keyless issued (docs/spiffe.md, server/mtls.py).
    mtls_host: str | None = None
    mtls_port: int | None = None
    # Ranges issuer key fetches may connect to besides global addresses (keyless.net.addresses).
    allow_issuer_networks: tuple[Network, ...] = ()
    # The Vault dialect's auth mounts (``/v1/auth/MOUNT/login``): mount path -> type (jwt or
    # kubernetes; the type shapes only the login's metadata, the trust policy decides).
    vault_auth_mounts: tuple[tuple[str, str], ...] = (("jwt", "jwt"), ("kubernetes", "kubernetes"))

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'keyless.db').resolve()}"

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    @property
    def root_key_path(self) -> Path:
        return self.root_key_file or self.data_dir / "root.key"

    @property
    def public_port(self) -> int:
        parts = urlsplit(self.public_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def vault_resource(self) -> str:
        """The Key Vault resource (audience) that the 401 challenge names."""
        port = self.public_port
        suffix = "" if port == 443 else f":{port}"
        return f"https://{self.vault_domain}{suffix}"


# name -> (kind, env variable)
_FIELDS: dict[str, str] = {
    "data_dir": "path",
    "listen": "listen",
    "public_url": "url",
    "database_url": "str",
    "vault_domain": "host",
    "dev": "bool",
    "tls_cert": "path",
    "tls_key": "path",
    "insecure_http": "bool",
    "root_key_file": "path",
    "signing_alg": "alg",
    "key_rotation_period": "duration",
    "token_lifetime": "duration",
    "svid_ttl": "duration",
    "spiffe_upstream_ca": "path",
    "spiffe_upstream_key": "path",
    "log_level": "level",
    "audit_fail_closed": "bool",
    "unsafe_no_audit": "bool",
    "recovery_days": "days",
    "secret_cache_mb": "count",
    "database_reap_interval": "duration",
    "token_rate_limit": "count",
    "token_rate_burst": "count",
    "header_timeout": "duration",
    "body_timeout": "duration",
    "shutdown_delay": "delay",
    "discovery_rate_limit": "count",
    "workers": "workers",
    "max_in_flight": "count",
    "k8s_public_ca": "bool",
    "k8s_ca_configmap": "dnsname",
    "k8s_tenant": "str",
    "k8s_agent_image": "image",
    "k8s_namespace": "dnsname",
    "k8s_service": "dnsname",
    "k8s_controller": "bool",
    "k8s_issue_tls": "bool",
    "k8s_vault_namespace": "dnsname",
    "k8s_trust_cluster": "bool",
    "k8s_restart_on_change": "bool",
    "k8s_restart_before_expiry": "duration",
    "webhook_listen": "listen",
    "webhook_client_ca": "path",
    "webhook_insecure_no_client_auth": "bool",
    "mtls_listen": "listen",
    "allow_issuer_network": "networks",  # repeatable flag; env: comma-separated
    "vault_auth_mount": "mounts",  # repeatable flag; env: comma-separated
}
_ENV_ALIASES = {"KEYLESS_DATABASE": "database_url"}


def tls_dir(data_dir: Path) -> Path:
    """Where keyless keeps the TLS files it makes itself (server/tls.py)."""
    return data_dir / "tls"


def ca_path(data_dir: Path) -> Path:
    """The CA certificate of keyless's own TLS files, which clients are told to trust."""
    return tls_dir(data_dir) / "ca.pem"


def env_name(field: str) -> str:
    return "KEYLESS_" + field.upper()


def parse_duration(text: str, what: str) -> int:
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"{what}: {text!r} is not a duration like 3600, 90s, 15m, 12h or 30d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _parse_bool(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not a boolean (true/false)")


def _parse_listen(text: str, what: str = "--listen") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT with a port in 1..65535")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _parse_networks(raw: Any, what: str) -> tuple[Network, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    texts = [part.strip() for item in items for part in str(item).split(",")]
    try:
        return tuple(parse_network(text, what) for text in texts if text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_MOUNT = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
MOUNT_TYPES = ("jwt", "kubernetes")


def default_mount_type(path: str) -> str:
    """A Vault auth mount's type when none is said: ``kubernetes...`` is Kubernetes auth."""
    return "kubernetes" if path.startswith("kubernetes") else "jwt"


def _parse_mounts(raw: Any, what: str) -> tuple[tuple[str, str], ...]:
    """``MOUNT[=TYPE]`` items: TYPE jwt or kubernetes (default: kubernetes for a mount path
    whose first segment starts with ``kubernetes``, jwt otherwise)."""
    items = [raw] if isinstance(raw, str) else list(raw)
    out: dict[str, str] = {}
    for text in (part.strip() for item in items for part in str(item).split(",")):
        if not text:
            continue
        path, _, kind = text.partition("=")
        path = path.strip().strip("/")
        if path.startswith("auth/"):
            path = path[len("auth/") :]
        kind = kind.strip().lower() or default_mount_type(path)
        if not _MOUNT.fullmatch(path) or path.split("/")[0] == "token":
            raise ConfigError(f"{what}: {text!r} is not a Vault auth mount path like jwt or k8s/a")
        if kind not in MOUNT_TYPES:
            raise ConfigError(f"{what}: {text!r}: the mount type is jwt or kubernetes")
        out[path] = kind
    if not out:
        raise ConfigError(f"{what}: no mount given")
    return tuple(out.items())


def _coerce(field: str, raw: Any, what: str) -> Any:
    kind = _FIELDS[field]
    if kind == "bool":
        return raw if isinstance(raw, bool) else _parse_bool(str(raw), what)
    if kind == "networks":
        return _parse_networks(raw, what)
    if kind == "mounts":
        return _parse_mounts(raw, what)
    text = str(raw)
    if kind == "path":
        return Path(text).expanduser()
    if kind == "duration":
        return raw if isinstance(raw, int) else parse_duration(text, what)
    if kind == "delay":  # a duration that may be 0, at most 5 minutes
        if isinstance(raw, int) and not isinstance(raw, bool):
            seconds = raw
        else:
            seconds = 0 if text.strip() in ("0", "0s") else parse_duration(text, what)
        if not 0 <= seconds <= 300:
            raise ConfigError(f"{what}: {text!r} must be 0 to 300 seconds")
        return seconds
    if kind == "days":
        if not text.isdigit() or not 7 <= int(text) <= 90:
            raise ConfigError(f"{what}: {text!r} must be a whole number of days in 7..90")
        return int(text)
    if kind == "count":
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if not text.isdigit() or int(text) > 1_000_000:
            raise ConfigError(f"{what}: {text!r} must be a whole number in 0..1000000")
        return int(text)
    if kind == "workers":
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 32:
            return raw
        if not text.isdigit() or not 1 <= int(text) <= 32:
            raise ConfigError(f"{what}: {text!r} must be a whole number of processes in 1..32")
        return int(text)
    if kind == "alg":
        if text not in ("RS256", "ES256"):
            raise ConfigError(f"{what}: {text!r} is not a signing algorithm (RS256 or ES256)")
        return text
    if kind == "level":
        if text.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{what}: {text!r} is not a log level (debug/info/warning/error)")
        return text.lower()
    if kind == "url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ConfigError(f"{what}: {text!r} is not a URL like https://host:port")
        return text.rstrip("/")
    if kind == "dnsname":
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", text):
            raise ConfigError(f"{what}: {text!r} is not a Kubernetes object name")
        return text
    if kind == "image":
        # A reference as the kubelet takes it: [registry/]name[:tag][@digest], nothing else.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}(@sha256:[0-9a-f]{64})?", text):
            raise ConfigError(f"{what}: {text!r} is not a container image reference")
        return text
    if kind == "host":
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", text.lower()):
            raise ConfigError(f"{what}: {text!r} is not a DNS domain")
        return text.lower()
    return text


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Build the settings; ``flags`` holds only options given on the command line."""
    values: dict[str, Any] = {}
    known_env = {env_name(f): f for f in _FIELDS} | _ENV_ALIASES
    for name, raw in env.items():
        if not name.startswith("KEYLESS_") or name.startswith(_FOREIGN_ENV):
            continue
        if name not in known_env:
            raise ConfigError(f"unknown environment variable {name}")
        field = known_env[name]
        values[field] = _coerce(field, raw, name)
    for field, raw in flags.items():
        if field not in _FIELDS:
            raise ConfigError(f"unknown option --{field.replace('_', '-')}")
        if raw is None:
            continue
        values[field] = _coerce(field, raw, "--" + field.replace("_", "-"))
    if "listen" in values:
        values["listen_host"], values["listen_port"] = _parse_listen(values.pop("listen"))
    if "allow_issuer_network" in values:
        values["allow_issuer_networks"] = values.pop("allow_issuer_network")
    if "vault_auth_mount" in values:
        values["vault_auth_mounts"] = values.pop("vault_auth_mount")
    if "webhook_listen" in values:
        host_port = _parse_listen(values.pop("webhook_listen"), "--webhook-listen")
        values["webhook_host"], values["webhook_port"] = host_port
    _validate_webhook(values)
    if "mtls_listen" in values:
        values["mtls_host"], values["mtls_port"] = _parse_listen(
            values.pop("mtls_listen"), "--mtls-listen"
        )
        _validate_mtls(values)
    return _validate(values)


def _validate(values: dict[str, Any]) -> Settings:
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if values.get("insecure_http") and values.get("tls_cert"):
        raise ConfigError("--insecure-http conflicts with --tls-cert/--tls-key")
    if values.get("k8s_issue_tls") and (values.get("tls_cert") or values.get("insecure_http")):
        raise ConfigError("--k8s-issue-tls conflicts with --tls-cert/--tls-key and --insecure-http")
    if values.get("unsafe_no_audit") and not values.get("dev"):
        raise ConfigError("KEYLESS_UNSAFE_NO_AUDIT is for measurement only and needs --dev")
    _validate_vault_namespace(values)
    if not 60 <= values.get("svid_ttl", 3600) <= 86400:
        raise ConfigError("--svid-ttl must be between 1m and 24h")
    if bool(values.get("spiffe_upstream_ca")) != bool(values.get("spiffe_upstream_key")):
        raise ConfigError("--spiffe-upstream-ca and --spiffe-upstream-key must be given together")
    port = values.get("listen_port", DEFAULT_PORT)
    scheme = "http" if values.get("insecure_http") else "https"
    values.setdefault("public_url", f"{scheme}://localhost:{port}")
    public_scheme = urlsplit(values["public_url"]).scheme
    if public_scheme != scheme:
        raise ConfigError(
            f"--public-url {values['public_url']} is {public_scheme} but the listener is {scheme}"
        )
    db = values.get("database_url")
    if db and not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"--database: {db!r} is not sqlite:///PATH or postgresql://…")
    host = values.get("listen_host", "127.0.0.1")
    if host not in ("localhost", "0.0.0.0", "::"):  # noqa: S104 - an operator's explicit choice
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(f"--listen: {host!r} is not an IP address") from exc
    return Settings(**values)


def _validate_vault_namespace(values: dict[str, Any]) -> None:
    """With ``--k8s-vault-namespace NS`` a vault V is the Service V in NS, so its URL's host
    is ``V.NS.svc`` (k8s/vaultservices.py): the vault domain is ``NS.svc`` (the default), or
    ``NS.svc.CLUSTER_DOMAIN``; any other would name hosts that no cluster DNS answers."""
    namespace = values.get("k8s_vault_namespace")
    if not namespace:
        return
    if "." in namespace:
        raise ConfigError(f"--k8s-vault-namespace: {namespace!r} is not a namespace name")
    domain = values.setdefault("vault_domain", f"{namespace}.svc")
    if domain != f"{namespace}.svc" and not domain.startswith(f"{namespace}.svc."):
        raise ConfigError(
            f"--vault-domain {domain} does not fit --k8s-vault-namespace {namespace}: "
            f"give {namespace}.svc (the default), or {namespace}.svc.CLUSTER_DOMAIN"
        )
    host = urlsplit(values.get("public_url", "")).hostname or ""
    if host.endswith("." + domain):  # keyless's own host would be taken for a vault's
        raise ConfigError(
            f"--public-url {values['public_url']} is under the vault domain {domain}: "
            "keyless's Service and the vaults' must be in different namespaces"
        )


def _validate_webhook(values: dict[str, Any]) -> None:
    """The webhook listener is TLS only and, unless the operator opts out explicitly, accepts
    only clients whose certificate its ``--webhook-client-ca`` verifies (the API server's)."""
    ca, opt_out = values.get("webhook_client_ca"), values.get("webhook_insecure_no_client_auth")
    if "webhook_port" not in values:
        if ca or opt_out:
            flag = "--webhook-client-ca" if ca else "--webhook-insecure-no-client-auth"
            raise ConfigError(f"{flag} needs --webhook-listen HOST:PORT")
        return
    if ca and opt_out:
        raise ConfigError(
            "--webhook-client-ca conflicts with --webhook-insecure-no-client-auth: choose one"
        )
    if not ca and not opt_out:
        raise ConfigError(
            "--webhook-listen needs --webhook-client-ca FILE (the CA of the API server's client "
            "certificate), or --webhook-insecure-no-client-auth if a NetworkPolicy keeps "
            "workloads off that port (docs/kubernetes.md)"
        )
    if values.get("insecure_http"):
        raise ConfigError(
            "--webhook-listen conflicts with --insecure-http: webhooks are HTTPS only"
        )
    host, port = values["webhook_host"], values["webhook_port"]
    if port == values.get("listen_port", DEFAULT_PORT):
        raise ConfigError(f"--webhook-listen: port {port} is the public listener's port")
    if host not in ("localhost", "0.0.0.0", "::"):  # noqa: S104 - an operator's explicit choice
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(f"--webhook-listen: {host!r} is not an IP address") from exc


def _validate_mtls(values: dict[str, Any]) -> None:
    """The mTLS listener is TLS by definition, on a port of its own."""
    if values.get("insecure_http"):
        raise ConfigError("--mtls-listen conflicts with --insecure-http: mTLS is TLS only")
    host, port = values["mtls_host"], values["mtls_port"]
    if port == values.get("listen_port", DEFAULT_PORT):
        raise ConfigError(f"--mtls-listen: port {port} is the public listener's port")
    if port == values.get("webhook_port"):
        raise ConfigError(f"--mtls-listen: port {port} is the webhook listener's port")
    if host not in ("localhost", "0.0.0.0", "::"):  # noqa: S104 - an operator's explicit choice
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(f"--mtls-listen: {host!r} is not an IP address") from exc


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


@dataclass(frozen=True, slots=True)
class DataDirChoice:
    """The data directory the CLI and ``serve`` use, and which rule chose it (for ``status``)."""

    path: Path
    found_by: str


def find_data_dir(
    flag: Path | None, env: Mapping[str, str], cwd: Path, home: Path, *, serving: bool = False
) -> DataDirChoice:
    """``--data-dir``, then ``KEYLESS_DATA_DIR``, then ``./.keyless`` if it exists, then the
    user's data directory (``$XDG_DATA_HOME/keyless``, else ``~/.local/share/keyless``).

    So ``keyless`` finds the same server from any directory, and a project that keeps its own
    ``.keyless`` next to its code still gets that one when run from there. ``serve`` (``serving``)
    uses the user's data directory only if it already exists: a first server with none of these
    makes ``./.keyless`` (the contract's default), so two servers started in two directories
    never share one by accident.
    """
    if flag is not None:
        return DataDirChoice(flag.expanduser(), "--data-dir")
    if env.get("KEYLESS_DATA_DIR"):
        return DataDirChoice(Path(env["KEYLESS_DATA_DIR"]).expanduser(), "KEYLESS_DATA_DIR")
    local = cwd / ".keyless"
    if local.is_dir():
        return DataDirChoice(Path(".keyless"), "./.keyless, found in the current directory")
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec: a relative XDG_DATA_HOME is invalid and is ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    user = base / "keyless"
    if serving and not user.is_dir():
        return DataDirChoice(Path(".keyless"), "./.keyless, the default for a first server")
    return DataDirChoice(user, "the default: no --data-dir, KEYLESS_DATA_DIR or ./.keyless")
