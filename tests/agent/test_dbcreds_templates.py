"""``database("DATABASE/ROLE")`` in the agent's templates and the ``--database-creds`` JSON,
each read back by the consumer it is written for: libpq reads the ``pgpass`` line (a password
holding ``:`` and ``\\``) and logs in to a PostgreSQL that checks it; YAML and JSON parsers read
the Backstage fragment and the file."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.delivery import credentials_json
from keyless.agent.templates import SecretTemplate, TemplateFailed
from keyless.core.errors import ConfigError
from tests.support.pgcluster import PgCluster, cluster

__all__ = ["cluster"]  # the fixture

REF = DbRef("backstage", "app")
BACKSTAGE = """\
{% set db = database("backstage/app") %}
backend:
  database:
    client: pg
    connection:
      host: {{ db.host | yaml }}
      port: {{ db.port }}
      user: {{ db.username | yaml }}
      password: {{ db.password | yaml }}
"""


def creds(cluster: PgCluster, password: str) -> DbCredentials:
    name = f"v-tmpl-{secrets.token_hex(4)}"
    cluster.add_role(name, password)
    return DbCredentials(
        name,
        password,
        cluster.host,
        cluster.port,
        "postgres",
        "require",
        time.time() + 600,
        "database/creds/backstage.app/x",
        600,
    )


def test_pgpass_line_is_read_by_libpq(cluster: PgCluster, tmp_path: Path) -> None:
    c = creds(cluster, "a:b\\c:" + secrets.token_urlsafe(8))
    line = SecretTemplate('{{ database("backstage/app") | pgpass }}', "t").render(
        {}, {REF: c.public()}
    )
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(line)
    pgpass.chmod(0o600)
    dsn = f"host={c.host} port={c.port} user={c.username} dbname={c.dbname} passfile={pgpass}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (c.username,)


def test_backstage_fragment_and_json_file_read_back(cluster: PgCluster) -> None:
    c = creds(cluster, 'it\'s "q" # x: y')
    fragment = yaml.safe_load(SecretTemplate(BACKSTAGE, "t").render({}, {REF: c.public()}))
    conn = fragment["backend"]["database"]["connection"]
    assert conn == {"host": c.host, "port": c.port, "user": c.username, "password": c.password}
    file = json.loads(credentials_json(c))
    assert file == {
        "username": c.username,
        "password": c.password,
        "host": c.host,
        "port": c.port,
        "dbname": "postgres",
        "sslmode": "require",
        "expires_at": int(c.expires_at),
    }
    dsn = (
        f"host={file['host']} port={file['port']} user={file['username']} "
        f"dbname={file['dbname']} sslmode={file['sslmode']}"
    )
    with psycopg.connect(dsn, password=file["password"]) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    "source",
    ["{{ database(name) }}", '{{ database("no-slash") }}', '{{ database("a/b", "c") }}'],
    ids=["not-literal", "not-a-pair", "two-arguments"],
)
def test_bad_database_calls_fail_at_start(source: str) -> None:
    with pytest.raises(ConfigError):
        SecretTemplate(source, "t")


def test_pgpass_refuses_anything_but_credentials() -> None:
    with pytest.raises(TemplateFailed, match="pgpass takes"):
        SecretTemplate('{{ "x" | pgpass }}', "t").render({}, {})


SERVICE_FILE = """\
{% set db = database("backstage/app") %}
[app]
host={{ db.host }}
port={{ db.port }}
dbname={{ db.dbname }}
user={{ db.username }}
password={{ db.password }}
sslmode={{ db.sslmode }}
"""


def test_service_file_from_the_docs_is_read_by_libpq_at_each_connection(
    cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    assert SERVICE_FILE in doc  # the example the docs show
    template = SecretTemplate(SERVICE_FILE, "pg_service.conf.j2")
    service = tmp_path / "pg_service.conf"
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    for _ in range(2):  # a rotation: the same service name logs in as the new user
        c = creds(cluster, secrets.token_urlsafe(24))
        service.write_text(template.render({}, {REF: c.public()}))
        with psycopg.connect("service=app") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (c.username,)
