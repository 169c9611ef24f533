"""``keyless``: start a server, or administer a running one through its admin socket."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from keyless.cli import (
    agent,
    apply,
    audit,
    console,
    database,
    env,
    federation,
    k8s,
    lifecycle,
    spiffe,
    vault,
)
from keyless.cli.client import seg
from keyless.cli.context import Globals, globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError
from keyless.settings import find_data_dir
from keyless.text import printable

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="keyless: workload identity federation, self-hosted.",
)
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys of a tenant.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(tenant_app, name="tenant")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(federation.identity_app, name="identity")
app.add_typer(federation.issuer_app, name="issuer")
app.add_typer(federation.federation_app, name="federation")
app.add_typer(federation.dev_app, name="dev")
app.command("explain")(federation.explain)
app.add_typer(vault.vault_app, name="vault")
app.add_typer(vault.secret_app, name="secret")
app.add_typer(vault.role_app, name="role")
app.add_typer(database.database_app, name="database")
app.add_typer(spiffe.spiffe_app, name="spiffe")
app.add_typer(k8s.k8s_app, name="k8s")
app.command("apply")(apply.apply)
app.command("env")(env.env)
vault.vault_app.command("delete")(lifecycle.vault_delete)
vault.secret_app.command("recover")(lifecycle.secret_recover)
vault.secret_app.command("purge")(lifecycle.secret_purge)
tenant_app.command("list")(lifecycle.tenant_list)
federation.identity_app.command("update")(lifecycle.identity_update)
federation.federation_app.command("show")(lifecycle.federation_show)
federation.federation_app.command("update")(lifecycle.federation_update)


@app.command()
def demo(
    mtls: Annotated[
        bool, typer.Option("--mtls", help="two workloads talk mTLS with X.509-SVIDs instead")
    ] = False,
    ttl: Annotated[int, typer.Option(help="--mtls: SVID lifetime, seconds")] = 8,
    duration: Annotated[float, typer.Option(help="--mtls: how long they talk, seconds")] = 20.0,
    console: Annotated[
        bool, typer.Option("--console", help="keep the server and open the web console on it")
    ] = False,
    console_port: Annotated[int, typer.Option(help="--console: loopback port (0: free)")] = 0,
) -> None:
    """The whole flow end to end with the real Azure SDK, on a throwaway data dir; with
    --mtls, two workloads authorize each other by SPIFFE ID across SVID rotations; with
    --console, the server stays up and the web console (keyless console) shows it all."""
    if mtls:
        from keyless.cli.demo_mtls import run_mtls_demo

        raise typer.Exit(run_mtls_demo(ttl, duration))
    from keyless.cli.demo import run_demo

    raise typer.Exit(run_demo(console_port if console else None))


app.add_typer(audit.audit_app, name="audit")
app.add_typer(agent.agent_app, name="agent")
app.command("console")(console.console)

GLOBAL_OPTIONS = ("--data-dir", "--output")  # take a value
GLOBAL_FLAGS = ("--debug",)


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Data directory [env KEYLESS_DATA_DIR, else ./.keyless if it exists, else "
            "$XDG_DATA_HOME/keyless or ~/.local/share/keyless]"
        ),
    ] = None,
    output: Annotated[str, typer.Option(help="text or json")] = "text",
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
) -> None:
    # --debug is read by main() before parsing (a usage error has a traceback too); declared
    # here so that it is accepted and listed in --help.
    if output not in ("text", "json"):
        raise typer.BadParameter("--output must be text or json")
    serving = ctx.invoked_subcommand == "serve"
    choice = find_data_dir(data_dir, os.environ, Path.cwd(), Path.home(), serving=serving)
    ctx.obj = Globals(choice.path, output, choice.found_by)
    ctx.call_on_close(ctx.obj.close)


@app.command()
def serve(
    ctx: typer.Context,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT [127.0.0.1:8443]")] = None,
    public_url: Annotated[str | None, typer.Option(help="URL clients use")] = None,
    database: Annotated[str | None, typer.Option(help="sqlite:///PATH or postgresql://…")] = None,
    vault_domain: Annotated[str | None, typer.Option()] = None,
    dev: Annotated[bool | None, typer.Option("--dev", help="development cluster issuer")] = None,
    tls_cert: Annotated[Path | None, typer.Option()] = None,
    tls_key: Annotated[Path | None, typer.Option()] = None,
    insecure_http: Annotated[
        bool | None, typer.Option("--insecure-http", help="plain HTTP (never in production)")
    ] = None,
    signing_alg: Annotated[str | None, typer.Option(help="ES256 (default) or RS256")] = None,
    key_rotation_period: Annotated[str | None, typer.Option(help="e.g. 30d")] = None,
    token_lifetime: Annotated[str | None, typer.Option(help="e.g. 1h")] = None,
    svid_ttl: Annotated[
        str | None, typer.Option(help="X.509-SVID lifetime, e.g. 1h (docs/spiffe.md)")
    ] = None,
    spiffe_upstream_ca: Annotated[
        Path | None,
        typer.Option(help="PEM CA certificate that signs the SPIFFE intermediates (with key)"),
    ] = None,
    spiffe_upstream_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --spiffe-upstream-ca")
    ] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
    audit_fail_open: Annotated[
        bool | None,
        typer.Option("--audit-fail-open", help="serve requests even if auditing them fails"),
    ] = None,
    recovery_days: Annotated[str | None, typer.Option(help="soft-delete window, 7..90")] = None,
    token_rate_limit: Annotated[
        str | None, typer.Option(help="token requests/s per client IP, 0 = off [50]")
    ] = None,
    token_rate_burst: Annotated[str | None, typer.Option(help="burst of the above [100]")] = None,
    header_timeout: Annotated[
        str | None, typer.Option(help="time to send request headers, e.g. 10s")
    ] = None,
    body_timeout: Annotated[
        str | None, typer.Option(help="time to send a request body after its headers [10s]")
    ] = None,
    shutdown_delay: Annotated[
        str | None,
        typer.Option(
            help="after SIGTERM, /readyz 503 but serving for this long [0: off; manifests: 5s]"
        ),
    ] = None,
    discovery_rate_limit: Annotated[
        str | None, typer.Option(help="discovery/JWKS requests/s per client IP, 0 = off [50]")
    ] = None,
    workers: Annotated[
        str | None, typer.Option(help="processes serving the public port, 1..32 [1]")
    ] = None,
    max_in_flight: Annotated[
        str | None,
        typer.Option(
            help="public requests in progress per process; more get 503 + Retry-After, 0 = off [64]"
        ),
    ] = None,
    k8s_public_ca: Annotated[
        bool | None,
        typer.Option("--k8s-public-ca", help="webhook: the public URL's cert is publicly trusted"),
    ] = None,
    k8s_ca_configmap: Annotated[
        str | None, typer.Option(help="webhook: ConfigMap with keyless's CA [keyless-ca]")
    ] = None,
    k8s_tenant: Annotated[
        str | None, typer.Option(help="webhook: default AZURE_TENANT_ID (id or alias)")
    ] = None,
    k8s_agent_image: Annotated[
        str | None,
        typer.Option(help="webhook: the injected agent's image, keyless's own [keyless:VERSION]"),
    ] = None,
    k8s_namespace: Annotated[
        str | None, typer.Option(help="in-cluster: keyless's namespace [the pod's]")
    ] = None,
    k8s_service: Annotated[
        str | None, typer.Option(help="in-cluster: the Service in front of keyless [keyless]")
    ] = None,
    k8s_controller: Annotated[
        bool | None,
        typer.Option("--k8s-controller", help="in-cluster: reconcile the keyless.dev resources"),
    ] = None,
    k8s_issue_tls: Annotated[
        bool | None,
        typer.Option(
            "--k8s-issue-tls",
            help="in-cluster: issue and rotate the serving certificate, patch the webhook's "
            "caBundle (CA in Secret keyless-ca)",
        ),
    ] = None,
    k8s_vault_namespace: Annotated[
        str | None,
        typer.Option(
            help="in-cluster: one Service per vault in this namespace (the vault domain "
            "is then NAMESPACE.svc)"
        ),
    ] = None,
    k8s_trust_cluster: Annotated[
        bool | None,
        typer.Option(
            "--k8s-trust-cluster", help="in-cluster: trust this cluster's tokens at start"
        ),
    ] = None,
    k8s_restart_on_change: Annotated[
        bool | None,
        typer.Option(
            "--k8s-restart-on-change",
            help="in-cluster: roll Deployments/StatefulSets annotated "
            "keyless.dev/restart-on-change when a secret they consume changes",
        ),
    ] = None,
    k8s_restart_before_expiry: Annotated[
        str | None,
        typer.Option(help="with --k8s-restart-on-change: roll this long before expiry [10m]"),
    ] = None,
    webhook_listen: Annotated[
        str | None, typer.Option(help="webhook: its own TLS listener HOST:PORT (e.g. 0.0.0.0:8444)")
    ] = None,
    webhook_client_ca: Annotated[
        Path | None,
        typer.Option(help="webhook: accept only client certificates this CA (PEM) issued"),
    ] = None,
    webhook_insecure_no_client_auth: Annotated[
        bool | None,
        typer.Option(
            "--webhook-insecure-no-client-auth",
            help="webhook: no client certificate; a NetworkPolicy must guard the port",
        ),
    ] = None,
    mtls_listen: Annotated[
        str | None,
        typer.Option(
            help="a TLS listener HOST:PORT for the same APIs where clients authenticate with "
            "an X.509-SVID keyless issued (docs/spiffe.md)"
        ),
    ] = None,
    allow_issuer_network: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CIDR",
            help="issuer keys may be fetched from this non-public range too (repeatable), "
            "e.g. 10.0.0.0/8 for on-premises clusters",
        ),
    ] = None,
    vault_auth_mount: Annotated[
        list[str] | None,
        typer.Option(
            metavar="MOUNT[=TYPE]",
            help="a Vault-dialect auth mount, /v1/auth/MOUNT/login (repeatable; replaces the "
            "default jwt and kubernetes); TYPE jwt or kubernetes",
        ),
    ] = None,
) -> None:
    """Start the server (prints a line with `ready` when it accepts requests)."""
    from keyless import logs
    from keyless.server.run import run
    from keyless.server.worker import exec_server
    from keyless.settings import load_settings

    flags: dict[str, Any] = {
        "listen": listen,
        "public_url": public_url,
        "database_url": database,
        "vault_domain": vault_domain,
        "dev": dev,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "insecure_http": insecure_http,
        "signing_alg": signing_alg,
        "key_rotation_period": key_rotation_period,
        "token_lifetime": token_lifetime,
        "svid_ttl": svid_ttl,
        "spiffe_upstream_ca": spiffe_upstream_ca,
        "spiffe_upstream_key": spiffe_upstream_key,
        "log_level": log_level,
        "audit_fail_closed": False if audit_fail_open else None,
        "recovery_days": recovery_days,
        "token_rate_limit": token_rate_limit,
        "token_rate_burst": token_rate_burst,
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "shutdown_delay": shutdown_delay,
        "discovery_rate_limit": discovery_rate_limit,
        "workers": workers,
        "max_in_flight": max_in_flight,
        "k8s_public_ca": k8s_public_ca,
        "k8s_ca_configmap": k8s_ca_configmap,
        "k8s_tenant": k8s_tenant,
        "k8s_agent_image": k8s_agent_image,
        "k8s_namespace": k8s_namespace,
        "k8s_service": k8s_service,
        "k8s_controller": k8s_controller,
        "k8s_issue_tls": k8s_issue_tls,
        "k8s_vault_namespace": k8s_vault_namespace,
        "k8s_trust_cluster": k8s_trust_cluster,
        "k8s_restart_on_change": k8s_restart_on_change,
        "k8s_restart_before_expiry": k8s_restart_before_expiry,
        "webhook_listen": webhook_listen,
        "webhook_client_ca": webhook_client_ca,
        "webhook_insecure_no_client_auth": webhook_insecure_no_client_auth,
        "mtls_listen": mtls_listen,
        "allow_issuer_network": allow_issuer_network or None,
        "vault_auth_mount": vault_auth_mount or None,
    }
    g = globals_of(ctx)
    flags["data_dir"] = g.data_dir  # the CLI's own rule (settings.find_data_dir)
    settings = load_settings(flags, os.environ)
    if _as_program:
        # This process becomes a fresh interpreter with only the serving path (same pid):
        # the CLI's libraries stay out of the server's memory (server/worker.py).
        exec_server(settings, debug="--debug" in _given)
    logs.configure(settings.log_level)
    raise typer.Exit(run(settings))


@app.command()
def status(ctx: typer.Context) -> None:
    """Which server this CLI talks to (data dir and why, socket, public URL) and what it is."""
    g = globals_of(ctx)
    client = g.client()
    found = {"data_dir_from": g.found_by, "admin_socket": str(client.socket.absolute())}
    emit({**client.get("/v1/status"), **found}, g.output)


@tenant_app.command("show")
def tenant_show(ctx: typer.Context, tenant: str = typer.Argument("default")) -> None:
    """Show a tenant: id, alias, issuer URL and SPIFFE trust domain."""
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/tenants/{seg(tenant)}"), g.output)


@tenant_app.command("create")
def tenant_create(ctx: typer.Context, alias: str) -> None:
    """Create a tenant (idempotent): its own issuer, key ring, identities and vaults."""
    g = globals_of(ctx)
    emit(g.client().post("/v1/tenants", {"alias": alias}), g.output)


@keys_app.command("list")
def keys_list(ctx: typer.Context, tenant: str = typer.Option("default")) -> None:
    """Published signing keys: current, next and retired."""
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/tenants/{seg(tenant)}/keys"), g.output, rows_key="keys")


@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context, tenant: str = typer.Option("default")) -> None:
    """Rotate now: next becomes current, a new next is published, current is retired."""
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/tenants/{seg(tenant)}/keys/rotate"), g.output)


@app.command("rotate-root-key")
def rotate_root_key(ctx: typer.Context) -> None:
    """Make a new root key and re-wrap every stored data key under it."""
    g = globals_of(ctx)
    emit(g.client().post("/v1/root-key/rotate"), g.output)


@app.command()
def ca(
    ctx: typer.Context,
    path: Annotated[bool, typer.Option("--path", help="print the file's path")] = False,
) -> None:
    """Print keyless's CA certificate (PEM), or its path."""
    from keyless.settings import ca_path

    g = globals_of(ctx)
    file = ca_path(g.data_dir).resolve()
    if not file.exists():
        raise KeylessError(f"no CA at {file}: start the server once with `keyless serve`")
    if g.output == "json":
        emit({"path": str(file), "pem": file.read_text()}, "json")
    elif path:
        print(file)
    else:
        print(file.read_text(), end="")


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, database: Annotated[str | None, typer.Option(help="database URL")] = None
) -> None:
    """Apply schema migrations (the server also does this at start)."""
    from keyless.settings import load_settings
    from keyless.store.migrate import upgrade
    from keyless.store.urls import DatabaseUrl

    g = globals_of(ctx)
    settings = load_settings({"data_dir": g.data_dir, "database_url": database}, os.environ)
    g.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    revision = upgrade(DatabaseUrl(settings.database))
    emit({"database": DatabaseUrl(settings.database).redacted(), "revision": revision}, g.output)


_given: set[str] = set()
# main() called as the program (the console script, ``python -m``), not by a test in its
# process: only then may ``serve`` replace the process (server/worker.py ``exec_server``).
_as_program = False


def _hoist_globals(argv: list[str]) -> list[str]:
    """Accept ``--data-dir``/``--output``/``--debug`` anywhere by moving them before the
    subcommand."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS:
            _given.add(arg)
            front.append(arg)
        elif name in GLOBAL_OPTIONS:
            _given.add(name)
            if "=" in arg:
                front.append(arg)
            elif i + 1 < len(argv):
                front += [arg, argv[i + 1]]
                i += 1
            else:
                rest.append(arg)
        elif arg == "--":
            rest += argv[i:]
            break
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _usage_line(exc: typer.TyperException) -> str:
    """click's usage error (unknown command or option, missing argument, bad value) as one
    line, with click's own suggestion ("Did you mean ...?") and where to find help."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", "") or "keyless"
    return f"{message} (see `{command} --help`)"


def _fail(message: str, code: int) -> NoReturn:
    print(f"keyless: error: {printable(message)}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run one command. Whatever goes wrong ends in one line on stderr and a non-zero status
    (2: usage or configuration, 1: anything else); ``--debug`` shows the traceback as well."""
    global _as_program
    _as_program = argv is None
    args = _hoist_globals(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in _given
    root_logger = logging.getLogger()
    if not debug and not root_logger.handlers:
        # A library's own warnings ("Config not found: ...") would be a second line on stderr;
        # the command says what failed itself. `serve` installs its JSON log handler.
        root_logger.addHandler(logging.NullHandler())
    try:
        code = app(args=args, prog_name="keyless", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, KeylessError):
            _fail(exc.message, 2 if exc.code == "config" else 1)
        if isinstance(exc, typer.TyperException):  # click's usage errors
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
                print(exc.format_message().rstrip(), end="\n" if exc.format_message() else "")
                sys.exit(exc.exit_code)
            _fail(_usage_line(exc), exc.exit_code)
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or type(exc).__name__}", 1)
        hint = "" if debug else " (run with --debug for the traceback)"
        _fail(f"unexpected {type(exc).__name__}: {exc}{hint}", 1)


if __name__ == "__main__":
    main()
