"""The agent's credential endpoints: one plain-HTTP listener on a loopback address serving the
protocols the chosen dialects' SDKs read from their environment (``azure.py``, ``aws.py``,
``gcp.py``), and the variables that point an application at them.

No NET_ADMIN, no iptables: nothing intercepts 169.254.169.254; the SDKs are told where to go
by their own environment variables. A non-loopback address is refused: these endpoints hand
out the pod's tokens to whoever can reach them (with the pod secret, for Azure and AWS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from keyless.agent.auth import KeylessAuth
from keyless.agent.endpoints import aws, azure, gcp
from keyless.agent.endpoints.podsecret import PodSecret, write_private
from keyless.agent.settings import AgentEnv
from keyless.core.errors import ConfigError

DIALECTS = ("azure", "aws", "gcp")
SECRET_FILE = "credentials-secret"  # in the state directory; also the AWS token file
log = logging.getLogger("keyless.agent")


def parse_dialects(value: str | Collection[str]) -> tuple[str, ...]:
    """``azure,aws,gcp`` (or a list of names) -> the dialects, in that order, each once."""
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen = {n.strip().lower() for n in names if n.strip()}
    unknown = chosen - set(DIALECTS)
    if unknown or not chosen:
        raise ConfigError(
            f"--credentials takes a comma-separated list of {', '.join(DIALECTS)}"
            + (f", not {', '.join(sorted(unknown))}" if unknown else "")
        )
    return tuple(d for d in DIALECTS if d in chosen)


def loopback(host: str) -> str:
    """``host`` when it is a loopback address; ConfigError otherwise (a hostname included:
    what it resolves to can change)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ConfigError(
            f"the credential endpoints listen on a loopback address only (127.0.0.1 or ::1), "
            f"not {host!r}: anyone who reaches them gets the pod's tokens"
        )
    return str(address)


def _load_secret(path: Path) -> PodSecret:
    """The pod secret kept in the state directory by an earlier start of this agent in the same
    pod (a restarted sidecar: the application's environment still holds it), else a new one."""
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if len(kept) >= 43 and all(c.isalnum() or c in "-_" for c in kept):
        return PodSecret(kept)
    return PodSecret()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the agent's command owns SIGTERM and SIGINT (as
    ``keyless serve``'s server does for its listeners; the agent may not import it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        return


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the endpoints are and what an application sets to use them."""

    base_url: str  # http://127.0.0.1:PORT
    host_port: str  # 127.0.0.1:PORT
    secret_file: Path  # the pod secret (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)
    variables: dict[str, str] = field(repr=False)  # IDENTITY_HEADER is the secret

    def env_lines(self) -> str:
        return "".join(f"{name}={value}\n" for name, value in self.variables.items())


class CredentialServer:
    """The endpoints of ``dialects`` for the identity of ``env``.

    ``state_dir``: where the pod secret is kept (the shared volume: the environment file's
    folder); ``aws_token_file`` / ``gcp_token_file``: the platform tokens for AWS's and
    Google's STS when they are not the Azure one (Google's must carry the provider's name as
    its audience); ``auth``: the agent's keyless client, shared with its file delivery (else
    one of its own, closed by ``stop``)."""

    def __init__(
        self,
        env: AgentEnv,
        dialects: Collection[str],
        *,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        aws_token_file: str | None = None,
        gcp_token_file: str | None = None,
        auth: KeylessAuth | None = None,
    ) -> None:
        self.env = env
        self.dialects = parse_dialects(dialects)
        self.host = loopback(host)
        self.port = port
        self.state_dir = state_dir
        self.secret_file = state_dir / SECRET_FILE
        self.secret = _load_secret(self.secret_file)
        # The agent's own client when it shares one (its token cache with it), else ours.
        self._own_http = auth is None
        self.auth = auth or KeylessAuth(env)
        self.http = self.auth.http
        # Built now, so a missing KEYLESS_IDENTITY fails at start, not at the first request.
        self._aws = (
            aws.AwsSessions(env, self.http, aws_token_file) if "aws" in self.dialects else None
        )
        self._gcp = (
            gcp.GoogleTokens(env, self.http, gcp_token_file) if "gcp" in self.dialects else None
        )
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    def app(self) -> ASGIApp:
        """The endpoints as an ASGI app (what ``start`` serves; tests drive it in process)."""
        return gcp.MetadataGuard(Starlette(routes=self._routes()))

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        if "azure" in self.dialects:
            routes += azure.routes(self.auth, self.secret)
        if self._aws is not None:
            routes += aws.routes(self._aws, self.secret)
        if self._gcp is not None:
            routes += gcp.routes(self._gcp)
        return routes

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the credential endpoints cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc
        return sock

    async def start(self) -> Endpoints:
        sock = self._socket()  # a busy port fails here, before anything is written
        write_private(self.secret_file, self.secret.value)  # no newline: botocore refuses one
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            access_log=False,  # no query strings, no headers in any log
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigError("the credential endpoints stopped at start")
            await asyncio.sleep(0.01)
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_port = f"{host}:{port}"
        base_url = f"http://{host_port}"
        variables: dict[str, str] = {}
        if "azure" in self.dialects:
            variables |= azure.variables(base_url, self.secret)
        if "aws" in self.dialects:
            variables |= aws.variables(base_url, self.secret_file)
        if "gcp" in self.dialects:
            variables |= gcp.variables(host_port)
        log.info("credential endpoints (%s) on %s", ", ".join(self.dialects), base_url)
        if self._gcp is not None and self._gcp.token_file == self.env.token_file:
            log.warning(
                "--credentials gcp without a Google token file: the Azure token %s must carry "
                "the Google provider's name as an audience, or Google's STS refuses it",
                self.env.token_file,
            )
        return Endpoints(base_url, host_port, self.secret_file, variables)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_http:
            await self.auth.aclose()


async def serve_credentials(
    env: AgentEnv,
    dialects: str | Collection[str],
    env_file: Path | None,
    *,
    stop: asyncio.Event,
    auth: KeylessAuth | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    aws_token_file: str | None = None,
    gcp_token_file: str | None = None,
) -> Endpoints:
    """Serve the credential endpoints of ``dialects`` until ``stop`` is set (the CLI's SIGTERM
    handler sets it). The variables an application sets are written as ``NAME=VALUE`` lines to
    ``env_file`` (atomically, mode 0640) once the endpoints answer; the pod secret is kept
    beside it. Returns the endpoints it served. ConfigError at start for unknown dialects, a
    non-loopback ``host``, a busy port, no ``env_file``, or no KEYLESS_IDENTITY for aws/gcp."""
    if env_file is None:
        raise ConfigError(
            "--credentials needs --credentials-env-file: the application reads the endpoints "
            "(and the pod secret they demand) from it"
        )
    server = CredentialServer(
        env,
        parse_dialects(dialects),
        state_dir=env_file.parent,
        host=host,
        port=port,
        aws_token_file=aws_token_file,
        gcp_token_file=gcp_token_file,
        auth=auth,
    )
    endpoints = await server.start()
    try:
        write_private(env_file, endpoints.env_lines())
        await stop.wait()
    finally:
        await server.stop()
    return endpoints


__all__ = [
    "DIALECTS",
    "CredentialServer",
    "Endpoints",
    "loopback",
    "parse_dialects",
    "serve_credentials",
]
