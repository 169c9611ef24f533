"""docs/databases.md's walk-through: its Deployment is a valid Kubernetes object whose agent
arguments the agent's parsers accept, Backstage's app-config points at the proxy's listener
with the proxy's user, and the app-config template renders to YAML that reads back."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.pgproxy_config import parse_proxies
from keyless.agent.templates import SecretTemplate

DOC = (Path(__file__).resolve().parents[2] / "docs" / "databases.md").read_text()
SECTION = DOC[DOC.index("## The agent and the Backstage walk-through") :]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.DOTALL)


def test_deployment_is_valid_and_its_proxy_arguments_parse(tmp_path: Path) -> None:
    (deployment,) = [y for y in map(yaml.safe_load, blocks("yaml")) if "kind" in y]
    kubernetes_validate.validate(deployment, "1.33.0", strict=True)
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (agent,) = [c for c in spec["initContainers"] if c["command"] == ["keyless", "agent"]]
    options = dict(a.removeprefix("--").split("=", 1) for a in agent["args"])
    password = tmp_path / "password"
    password.write_text("local\n")
    (proxy,) = parse_proxies(
        [options["pg-proxy"]], user=options["pg-proxy-user"], password_file=password
    )
    assert (proxy.host, proxy.port, proxy.ref) == ("127.0.0.1", 5432, DbRef("backstage", "app"))
    (app_config,) = [y for y in map(yaml.safe_load, blocks("yaml")) if "backend" in y]
    conn = app_config["backend"]["database"]["connection"]
    assert (conn["host"], conn["port"], conn["user"]) == ("127.0.0.1", 5432, proxy.user)


def test_app_config_template_renders_to_yaml() -> None:
    (template,) = [t for t in blocks("text") if "database(" in t]
    password = "p: '#" + secrets.token_urlsafe(12)
    creds = DbCredentials(
        "v-backstage-app-x", password, "db.internal", 5432, "backstage", "require",
        time.time() + 60, "database/creds/backstage.app/x", 60,
    )  # fmt: skip
    rendered = SecretTemplate(template, "app-config.db.yaml.j2").render(
        {}, {DbRef("backstage", "app"): creds.public()}
    )
    conn = yaml.safe_load(rendered)["backend"]["database"]["connection"]
    assert conn == {
        "host": "db.internal", "port": 5432, "user": "v-backstage-app-x",
        "password": password, "database": "backstage",
    }  # fmt: skip
