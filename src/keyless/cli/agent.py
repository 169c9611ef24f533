"""``keyless agent``: secrets to files (kept current, or ``--once``) and ``keyless agent exec``:
secrets to a command's environment. Only parses options into the agent's frozen settings
(``agent/config.py``) and runs them (``agent/runtime.py``); the agent authenticates from the
environment exactly as an Azure workload does (``agent/settings.py``)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyless.core.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    from keyless.agent.auth import KeylessAuth
    from keyless.agent.runtime import Sidecar
    from keyless.agent.settings import AgentEnv

agent_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=True,
    help="Deliver secrets to files (kept current) or to a command's environment (exec).",
)

Interval = Annotated[
    str, typer.Option(help="how often to read the secrets again, jittered (e.g. 30s, 5m)")
]
Jitter = Annotated[float, typer.Option(help="each wait is the interval x (1 +- this)")]
BackoffCap = Annotated[
    str, typer.Option(help="longest wait between retries while keyless is unreachable")
]


def _env() -> AgentEnv:
    from keyless.agent.settings import AgentEnv

    return AgentEnv.from_environ(os.environ)


@agent_app.callback()
def agent(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="write every file once and exit (init containers, Jobs)")
    ] = False,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            metavar="VAULT/NAME=PATH[,mode=0400][,owner=UID:GID]",
            help="write a secret's value to PATH (repeatable)",
        ),
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEMPLATE_FILE=PATH[,mode=…][,owner=…]",
            help='render a Jinja2 template (sandboxed; secret("VAULT/NAME")) to PATH',
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="default file mode (octal)")] = "0600",
    owner: Annotated[
        str | None, typer.Option(metavar="UID:GID", help="default file owner (as root)")
    ] = None,
    interval: Interval = "60s",
    jitter: Jitter = 0.1,
    backoff_cap: BackoffCap = "60s",
    on_change: Annotated[
        str | None,
        typer.Option(
            metavar="CMD",
            help="run CMD (split like a shell would, run without one) after files changed",
        ),
    ] = None,
    signal_name: Annotated[
        str | None,
        typer.Option("--signal", metavar="SIG", help="send SIG (e.g. HUP) after files changed"),
    ] = None,
    pid_file: Annotated[
        Path | None, typer.Option(help="--signal goes to the pid in this file")
    ] = None,
    process: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="--signal goes to processes named NAME"),
    ] = None,
    credentials: Annotated[
        str | None,
        typer.Option(
            metavar="azure,aws,gcp",
            help="serve these SDKs' local credential endpoints on loopback",
        ),
    ] = None,
    credentials_env_file: Annotated[
        Path | None,
        typer.Option(help="write the variables the application sets for --credentials here"),
    ] = None,
    credentials_port: Annotated[
        int, typer.Option(help="--credentials: the loopback port [0: one chosen at start]")
    ] = 0,
    aws_token_file: Annotated[
        str | None,
        typer.Option(help="--credentials aws: a projected token for AWS STS [the Azure one]"),
    ] = None,
    gcp_token_file: Annotated[
        str | None,
        typer.Option(help="--credentials gcp: a projected token for Google STS [the Azure one]"),
    ] = None,
    database_creds: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DATABASE/ROLE=PATH[,mode=…][,owner=…]",
            help="keep a database role's dynamic credentials in PATH as JSON (repeatable)",
        ),
    ] = None,
    pg_proxy: Annotated[
        list[str] | None,
        typer.Option(
            metavar="HOST:PORT=DATABASE/ROLE",
            help="serve a PostgreSQL proxy logging in with the role's current credentials "
            "(or SOCKET_PATH=DATABASE/ROLE; repeatable)",
        ),
    ] = None,
    pg_proxy_user: Annotated[
        str | None, typer.Option(help="--pg-proxy: the user name clients give [any]")
    ] = None,
    pg_proxy_password_file: Annotated[
        Path | None,
        typer.Option(help="--pg-proxy: the password clients give (SCRAM-SHA-256), one line"),
    ] = None,
    workload_api: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="serve the SPIFFE Workload API on this Unix socket "
            "(clients: SPIFFE_ENDPOINT_SOCKET=unix://PATH)",
        ),
    ] = None,
    svid_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="keep the X.509-SVID in DIR: svid.pem, svid_key.pem, bundle.pem",
        ),
    ] = None,
) -> None:
    """Keep secrets in files (atomically replaced), until SIGTERM or with --once."""
    if ctx.invoked_subcommand is not None:
        if (
            secret
            or template
            or once
            or credentials
            or database_creds
            or pg_proxy
            or workload_api
            or svid_dir
        ):
            raise ConfigError(
                f"`keyless agent {ctx.invoked_subcommand}` takes its own options, after its name"
            )
        return
    from keyless import logs
    from keyless.agent import config as cfg
    from keyless.agent.pgproxy_config import parse_proxies
    from keyless.agent.runtime import run_files

    outputs = cfg.parse_outputs(
        secret or [], template or [], mode=mode, owner=owner, database_creds=database_creds
    )
    proxies = parse_proxies(
        pg_proxy or [], user=pg_proxy_user, password_file=pg_proxy_password_file
    )
    spiffe = workload_api is not None or svid_dir is not None
    if not outputs and not credentials and not proxies and not spiffe:
        raise ConfigError(
            "nothing to do: give --secret, --template, --database-creds, --pg-proxy, "
            "--credentials, --workload-api or --svid-dir"
        )
    if spiffe and once:
        raise ConfigError(
            "--workload-api and --svid-dir keep short-lived SVIDs current: not with --once"
        )
    if proxies and once:
        raise ConfigError("--pg-proxy serves until SIGTERM: not with --once")
    notify = cfg.Notify(
        command=tuple(shlex.split(on_change)) if on_change else (),
        signal=cfg.parse_signal(signal_name) if signal_name else None,
        pid_file=pid_file,
        process=process,
    )
    if notify.signal is not None and (pid_file is None) == (process is None):
        raise ConfigError("--signal needs one of --pid-file FILE or --process NAME")
    if notify.signal is None and (pid_file is not None or process is not None):
        raise ConfigError("--pid-file and --process name where --signal goes: give --signal")
    if (
        aws_token_file or gcp_token_file or credentials_env_file or credentials_port
    ) and not credentials:
        raise ConfigError(
            "--credentials-env-file, --credentials-port and --*-token-file go with --credentials"
        )
    if credentials and once:
        raise ConfigError("--credentials serves endpoints until SIGTERM: not with --once")
    config = cfg.AgentConfig(
        outputs=outputs,
        once=once,
        schedule=cfg.parse_schedule(interval, jitter, backoff_cap),
        notify=notify,
        proxies=proxies,
    )
    env = _env()
    if config.databases:
        env.need_identity("--database-creds, --pg-proxy and database() templates")
    sidecars: list[Sidecar] = []
    if credentials:
        sidecars.append(
            _credentials(
                env,
                credentials,
                credentials_env_file,
                port=credentials_port,
                aws_token_file=aws_token_file,
                gcp_token_file=gcp_token_file,
            )
        )
    if spiffe:
        from keyless.agent.spiffe import spiffe_sidecar

        sidecars.append(spiffe_sidecar(workload_api=workload_api, svid_dir=svid_dir))
    logs.configure("info")
    raise typer.Exit(run_files(env, config, sidecars))


def _credentials(
    env: AgentEnv,
    dialects: str,
    env_file: Path | None,
    *,
    port: int,
    aws_token_file: str | None,
    gcp_token_file: str | None,
) -> Sidecar:
    """The local credential endpoints (agent/endpoints, issue 19 item 2) as a sidecar."""
    try:
        from keyless.agent.endpoints import serve_credentials
    except ImportError:
        raise ConfigError("--credentials: this build has no local credential endpoints") from None
    names = tuple(d.strip() for d in dialects.split(",") if d.strip())

    async def side(auth: KeylessAuth, stop: asyncio.Event) -> None:
        await serve_credentials(
            env,
            names,
            env_file,
            auth=auth,
            stop=stop,
            port=port,
            aws_token_file=aws_token_file,
            gcp_token_file=gcp_token_file,
        )

    return side


@agent_app.command("exec")
def agent_exec(
    command: Annotated[list[str], typer.Argument(help="the program and its arguments, after --")],
    secret_env: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=VAULT/SECRET", help="set NAME to the secret (repeatable)"),
    ] = None,
    restart_on_change: Annotated[
        bool,
        typer.Option("--restart-on-change", help="restart COMMAND when a value changes"),
    ] = False,
    interval: Interval = "60s",
    jitter: Jitter = 0.1,
    backoff_cap: BackoffCap = "60s",
    grace: Annotated[
        str, typer.Option(help="on restart: SIGTERM, then SIGKILL after this long")
    ] = "10s",
) -> None:
    """Start COMMAND with secrets in its environment; forward signals; exit with its status."""
    from keyless import logs
    from keyless.agent import config as cfg
    from keyless.agent.runtime import run_exec

    if not command:
        raise ConfigError("missing the command: keyless agent exec [OPTIONS] -- COMMAND [ARGS]")
    config = cfg.ExecConfig(
        env=cfg.parse_env(secret_env or []),
        command=tuple(command),
        restart_on_change=restart_on_change,
        schedule=cfg.parse_schedule(interval, jitter, backoff_cap),
        grace=cfg.parse_duration(grace, "--grace"),
    )
    env = _env()
    logs.configure("info")
    raise typer.Exit(run_exec(env, config))
