"""``--pg-proxy`` declarations, parsed once at start::

    --pg-proxy 127.0.0.1:5432=backstage/app          TCP: needs --pg-proxy-password-file
    --pg-proxy [::1]:5432=backstage/app
    --pg-proxy /run/pg/.s.PGSQL.5432=backstage/app   a Unix socket: trust, unless a password
                                                      file is given (libpq: host=/run/pg port=5432)

The local password (``--pg-proxy-password-file``, one line) is kept only as SCRAM keys (salt,
StoredKey, ServerKey), as PostgreSQL keeps a password; ``--pg-proxy-user`` is the one user
name clients must give (any, without it).
"""

from __future__ import annotations

from pathlib import Path

from keyless.agent.dbrefs import DbRef
from keyless.agent.pgproxy import ProxySpec
from keyless.agent.scram import ScramSecret
from keyless.core.errors import ConfigError


def _listen(text: str) -> tuple[str | None, int, Path | None]:
    if "/" in text:
        return None, 0, Path(text)
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--pg-proxy {text!r}: expected HOST:PORT (e.g. 127.0.0.1:5432) or a socket path"
        )
    return host, int(port), None


def read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--pg-proxy-password-file {path}: cannot read it ({exc})") from None
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise ConfigError(f"--pg-proxy-password-file {path}: expected one line, the password")
    return password


def parse_proxies(
    declarations: list[str], *, user: str | None = None, password_file: Path | None = None
) -> tuple[ProxySpec, ...]:
    if not declarations:
        if user is not None or password_file is not None:
            raise ConfigError("--pg-proxy-user and --pg-proxy-password-file go with --pg-proxy")
        return ()
    secret = ScramSecret.from_password(read_password(password_file)) if password_file else None
    specs: list[ProxySpec] = []
    seen: set[str] = set()
    for text in declarations:
        listen, sep, pair = text.rpartition("=")
        if not sep or not listen or not pair:
            raise ConfigError(
                f"--pg-proxy {text!r}: expected HOST:PORT=DATABASE/ROLE or SOCKET=DATABASE/ROLE"
            )
        host, port, path = _listen(listen)
        if path is None and secret is None:
            raise ConfigError(
                f"--pg-proxy {listen}: a TCP listener needs --pg-proxy-password-file "
                "(trust only on a Unix socket, which file permissions guard)"
            )
        spec = ProxySpec(DbRef.parse(pair), host, port, path, user, secret)
        if spec.where in seen:
            raise ConfigError(f"--pg-proxy {spec.where} is declared twice")
        seen.add(spec.where)
        specs.append(spec)
    return tuple(specs)
