"""Secret Manager end to end: the unmodified ``SecretManagerServiceClient`` (REST transport,
``client_options`` only) with ``google.auth.default()`` from an ``external_account`` file, on
a real keyless over HTTPS; and raw ``requests`` calls for the JSON shapes.

The in-process tests (test_secretmanager_wire.py) cover every refusal and hostile input; here
the real client shows that what it sends is understood and what keyless answers is parsed
into Google's own types and exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import google_crc32c
import pytest
import requests

from keyless.core import gcpnames
from tests.api.gcp.conftest import (
    OTHER_SUBJECT,
    REFRESH,
    SECRET,
    SECRET_VALUE,
    TWIN_SUBJECT,
    VAULT,
    credential_config,
    gcp_env,
    gcp_token,
    run_python,
    secretmanager_endpoint,
)
from tests.support.federation import Federated

WRITABLE = "gsmw"  # app: Key Vault Secrets Officer
PRIVATE = "gsmo"  # other's: app has no role on it

# The child's prelude: the client exactly as a workload builds it, and a helper that turns
# a call's outcome (a value or Google's exception) into JSON.
PRELUDE = """
import json, google_crc32c
from google.api_core import exceptions
from google.cloud import secretmanager
client = secretmanager.SecretManagerServiceClient(
    transport="rest", client_options={"api_endpoint": ENDPOINT})
out = {}
def attempt(key, fn):
    try:
        out[key] = fn()
    except exceptions.GoogleAPICallError as exc:
        body = exc.response.json()["error"] if exc.response is not None else {}
        out[key] = {"error": type(exc).__name__, "code": exc.code,
                    "status": body.get("status"), "message": body.get("message")}
def crc_ok(payload):
    return payload.data_crc32c == int(google_crc32c.Checksum(payload.data).hexdigest(), 16)
"""


@pytest.fixture(scope="module")
def world(fed: Federated) -> Iterator[Federated]:
    cli = fed.server.cli
    for vault, identity in ((WRITABLE, "app"), (PRIVATE, "other")):
        cli("vault", "create", vault)
        cli("role", "assign", identity, "secrets-officer", "--scope", f"/vaults/{vault}")
    cli("secret", "set", PRIVATE, "theirs", "--value", "not yours")
    yield fed


def _run(
    fed: Federated, body: str, *, subject: str | None = None, impersonate: str | None = "app"
) -> dict[str, Any]:
    token = gcp_token(fed) if subject is None else gcp_token(fed, subject)
    config = credential_config(fed, fed.token_file(token), impersonate=impersonate)
    code = (
        f"ENDPOINT = {secretmanager_endpoint(fed)!r}\n"
        + PRELUDE
        + body
        + "\nprint(json.dumps(out))"
    )
    return run_python(gcp_env(fed, config), code)


def _crc(data: bytes) -> int:
    return int(google_crc32c.Checksum(data).hexdigest(), 16)


def test_read_without_impersonation(world: Federated) -> None:
    """The STS token alone reads the vault a role names (no service_account_impersonation_url),
    by ``latest``, by number and in the locations form."""
    got = _run(
        world,
        f"""
r = client.access_secret_version(name="projects/{VAULT}/secrets/{SECRET}/versions/latest")
out["latest"] = {{"name": r.name, "data": r.payload.data.decode(), "crc": crc_ok(r.payload)}}
r = client.access_secret_version(name="projects/{VAULT}/secrets/{SECRET}/versions/1")
out["one"] = r.payload.data.decode()
regional = "projects/{VAULT}/locations/us-east1/secrets/{SECRET}/versions/1"
r = client.access_secret_version(name=regional)
out["regional"] = r.name
""",
        impersonate=None,
    )
    number = got["latest"]["name"].split("/")[1]
    assert got["latest"] == {
        "name": f"projects/{number}/secrets/{SECRET}/versions/1",
        "data": SECRET_VALUE,
        "crc": True,
    }
    assert len(number) == 12 and number.isdigit()
    assert got["one"] == SECRET_VALUE
    assert got["regional"] == f"projects/{number}/locations/us-east1/secrets/{SECRET}/versions/1"


def test_the_whole_lifecycle(world: Federated) -> None:
    """create, addVersion (CRC32C checked), access, get, list (paginated), disable (access
    refused with FAILED_PRECONDITION), enable, destroy, delete: through impersonation."""
    got = _run(
        world,
        f"""
parent = "projects/{WRITABLE}"
for sid in ("api-key", "api-key-2", "api-key-3"):
    spec = {{"replication": {{"automatic": {{}}}}, "labels": {{"team": "x"}}}}
    s = client.create_secret(parent=parent, secret_id=sid, secret=spec)
out["created"] = {{"name": s.name, "labels": dict(s.labels)}}
name = parent + "/secrets/api-key"
for i, value in enumerate((b"first", b"second", b"third")):
    crc = int(google_crc32c.Checksum(value).hexdigest(), 16)
    v = client.add_secret_version(parent=name, payload={{"data": value, "data_crc32c": crc}})
    out.setdefault("added", []).append({{"name": v.name, "state": v.state.name,
                                         "checksum": v.client_specified_payload_checksum}})
r = client.access_secret_version(name=name + "/versions/latest")
out["latest"] = {{"name": r.name, "data": r.payload.data.decode(), "crc": crc_ok(r.payload)}}
out["two"] = client.access_secret_version(name=name + "/versions/2").payload.data.decode()
g = client.get_secret(name=name)
out["secret"] = {{"name": g.name, "labels": dict(g.labels), "etag": g.etag,
                  "automatic": "automatic" in secretmanager.Replication.to_dict(g.replication)}}
u = client.update_secret(secret={{"name": name, "labels": {{"team": "y"}}}},
                         update_mask={{"paths": ["labels"]}})
out["relabelled"] = dict(u.labels)
pages = client.list_secrets(request={{"parent": parent, "page_size": 1}}).pages
out["pages"] = [[s.name.rsplit("/", 1)[1] for s in page.secrets] for page in pages]
out["versions"] = [(v.name.rsplit("/", 1)[1], v.state.name)
                   for v in client.list_secret_versions(request={{"parent": name, "page_size": 2}})]
out["disabled"] = client.disable_secret_version(name=name + "/versions/2").state.name
attempt("disabled_access", lambda: client.access_secret_version(name=name + "/versions/2"))
out["enabled"] = client.enable_secret_version(name=name + "/versions/2").state.name
out["again"] = client.access_secret_version(name=name + "/versions/2").payload.data.decode()
d = client.destroy_secret_version(name=name + "/versions/3")
out["destroyed"] = {{"state": d.state.name, "has_time": d.destroy_time is not None}}
attempt("destroyed_access", lambda: client.access_secret_version(name=name + "/versions/latest"))
out["get_version"] = client.get_secret_version(name=name + "/versions/3").state.name
attempt("bad_crc", lambda: client.add_secret_version(
    parent=name, payload={{"data": b"x", "data_crc32c": 1}}))
client.delete_secret(name=parent + "/secrets/api-key-3")
attempt("deleted", lambda: client.get_secret(name=parent + "/secrets/api-key-3"))
attempt("exists", lambda: client.create_secret(parent=parent, secret_id="api-key",
        secret={{"replication": {{"automatic": {{}}}}}}))
""",
    )
    number = got["created"]["name"].split("/")[1]
    assert got["created"] == {
        "name": f"projects/{number}/secrets/api-key-3",
        "labels": {"team": "x"},
    }
    assert [a["name"].rsplit("/", 1)[1] for a in got["added"]] == ["1", "2", "3"]
    assert all(a["state"] == "ENABLED" and a["checksum"] for a in got["added"])
    assert got["latest"] == {
        "name": f"projects/{number}/secrets/api-key/versions/3",
        "data": "third",
        "crc": True,
    }
    assert got["two"] == "second"
    assert got["secret"]["labels"] == {"team": "x"} and got["secret"]["automatic"]
    assert got["secret"]["etag"].startswith('"')
    assert got["relabelled"] == {"team": "y"}
    assert got["pages"] == [["api-key"], ["api-key-2"], ["api-key-3"]]
    assert got["versions"] == [["3", "ENABLED"], ["2", "ENABLED"], ["1", "ENABLED"]]
    assert got["disabled"] == "DISABLED" and got["enabled"] == "ENABLED"
    assert got["disabled_access"]["status"] == "FAILED_PRECONDITION"
    assert got["disabled_access"]["message"] == (
        f"Secret Version [projects/{number}/secrets/api-key/versions/2] is in DISABLED state."
    )
    assert got["again"] == "second"
    assert got["destroyed"] == {"state": "DESTROYED", "has_time": True}
    assert got["destroyed_access"]["status"] == "FAILED_PRECONDITION"
    assert "versions/3] is in DESTROYED state" in got["destroyed_access"]["message"]
    assert got["get_version"] == "DESTROYED"
    assert got["bad_crc"]["error"] == "InvalidArgument" or got["bad_crc"]["code"] == 400
    assert got["bad_crc"]["status"] == "INVALID_ARGUMENT"
    assert got["deleted"]["error"] == "NotFound"
    assert got["exists"]["error"] == "Conflict" and got["exists"]["status"] == "ALREADY_EXISTS"
    assert got["exists"]["message"] == f"Secret [projects/{number}/secrets/api-key] already exists."


def test_refusals(world: Federated) -> None:
    """Another identity's secret: 403; an unknown secret: 404; bad input: 400; and a reader
    of one vault cannot add to it."""
    got = _run(
        world,
        f"""
def access(name):
    return lambda: client.access_secret_version(name=name)
attempt("theirs", access("projects/{PRIVATE}/secrets/theirs/versions/latest"))
attempt("unknown", access("projects/{VAULT}/secrets/nope/versions/latest"))
attempt("bad_id", access("projects/{VAULT}/secrets/bad.id/versions/1"))
attempt("bad_version", access("projects/{VAULT}/secrets/{SECRET}/versions/0"))
attempt("reader_adds", lambda: client.add_secret_version(parent="projects/{VAULT}/secrets/{SECRET}",
        payload={{"data": b"x"}}))
""",
    )
    assert got["theirs"]["error"] == "Forbidden" and got["theirs"]["status"] == "PERMISSION_DENIED"
    assert got["theirs"]["message"].startswith(
        "Permission 'secretmanager.versions.access' denied for resource "
        f"'projects/{PRIVATE}/secrets/theirs/versions/latest' (or it may not exist)."
    )
    assert got["unknown"]["error"] == "NotFound"
    assert got["unknown"]["message"].endswith("/secrets/nope] not found or has no versions.")
    assert got["bad_id"]["code"] == 400 and got["bad_version"]["code"] == 400
    assert got["reader_adds"]["error"] == "Forbidden"
    # and the owner reads it
    theirs = _run(
        world,
        f"""
r = client.access_secret_version(name="projects/{PRIVATE}/secrets/theirs/versions/latest")
out["value"] = r.payload.data.decode()
""",
        subject=OTHER_SUBJECT,
        impersonate="other",
    )
    assert theirs["value"] == "not yours"
    # a federated principal several identities trust names no identity: impersonate one
    twin = _run(
        world,
        f"""
attempt("twin", lambda: client.access_secret_version(
    name="projects/{VAULT}/secrets/{SECRET}/versions/latest"))
""",
        subject=TWIN_SUBJECT,
        impersonate=None,
    )
    assert twin["twin"]["error"] == "Forbidden" and "impersonate" in twin["twin"]["message"]


@pytest.fixture(scope="module")
def bearer(world: Federated) -> str:
    config = credential_config(world, world.token_file(gcp_token(world)), impersonate="app")
    return str(run_python(gcp_env(world, config), REFRESH)["token"])


def _rest(fed: Federated, method: str, path: str, token: str, **kw: Any) -> requests.Response:
    url = f"{secretmanager_endpoint(fed)}/v1/{path}"
    headers = {"authorization": f"Bearer {token}"}
    return requests.request(
        method, url, headers=headers, verify=str(fed.server.ca), timeout=30, **kw
    )


def test_json_shapes(world: Federated, bearer: str) -> None:
    """What curl sees: enums by name, dataCrc32c a string, Google's error body."""
    made = _rest(
        world,
        "POST",
        f"projects/{WRITABLE}/secrets",
        bearer,
        params={"secretId": "raw"},
        json={"replication": {"automatic": {}}},
    )
    assert made.status_code == 200, made.text
    body = made.json()
    number = body["name"].split("/")[1]
    assert body["name"] == f"projects/{number}/secrets/raw"
    assert set(body) == {"name", "replication", "createTime", "labels", "etag"}
    assert body["createTime"].endswith("Z")
    added = _rest(
        world,
        "POST",
        f"projects/{number}/secrets/raw:addVersion",
        bearer,
        json={"payload": {"data": "aGVsbG8="}},
    ).json()
    assert added["state"] == "ENABLED" and added["clientSpecifiedPayloadChecksum"] is False
    assert added["name"] == f"projects/{number}/secrets/raw/versions/1"
    got = _rest(
        world, "GET", f"projects/{WRITABLE}/secrets/raw/versions/latest:access", bearer
    ).json()
    assert got == {
        "name": f"projects/{number}/secrets/raw/versions/1",
        "payload": {"data": "aGVsbG8=", "dataCrc32c": str(_crc(b"hello"))},
    }
    listed = _rest(world, "GET", f"projects/{WRITABLE}/secrets/raw/versions", bearer).json()
    assert listed["totalSize"] == 1 and listed["versions"][0]["state"] == "ENABLED"
    refused = _rest(
        world, "GET", f"projects/{WRITABLE}/secrets/raw/versions/1:access", "not-a-token"
    )
    assert refused.status_code == 401
    error = refused.json()["error"]
    assert error["status"] == "UNAUTHENTICATED" and error["code"] == 401
    missing = _rest(world, "GET", f"projects/{WRITABLE}/secrets/gone", bearer)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": 404,
        "message": f"Secret [projects/{number}/secrets/gone] not found.",
        "status": "NOT_FOUND",
        "details": [],
    }
    assert json.loads(missing.text)  # one JSON document


def test_endpoint_is_the_documented_path(world: Federated) -> None:
    assert secretmanager_endpoint(world).endswith(gcpnames.SECRET_MANAGER_PATH)
