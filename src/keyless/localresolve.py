"""Resolve ``*.VAULT_DOMAIN`` to the loopback address inside this process only.

For ``keyless demo`` and the tests, on machines where ``*.vault.localhost`` does not resolve
(glibc without a resolver that follows RFC 6761). Real applications should make the names
resolve for real: wildcard DNS, ``/etc/hosts`` entries, or systemd-resolved (see README).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

_original = socket.getaddrinfo


def install(domain: str) -> None:
    """Patch ``socket.getaddrinfo`` so DOMAIN and its subdomains resolve to 127.0.0.1."""
    suffix = "." + domain.lower()

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (
            host.lower() == domain.lower() or host.lower().endswith(suffix)
        ):
            host = "127.0.0.1"
        return _original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def uninstall() -> None:
    socket.getaddrinfo = _original


@contextlib.contextmanager
def resolving(domain: str) -> Iterator[None]:
    install(domain)
    try:
        yield
    finally:
        uninstall()
