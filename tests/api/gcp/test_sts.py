"""Google's STS and IAM Credentials end to end: unmodified google-auth from an
``external_account`` credential file (with and without impersonation), and every refusal with
Google's error shape, on a real keyless over HTTPS."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.core import gcpnames, jose
from tests.api.gcp.conftest import (
    OTHER_SUBJECT,
    REFRESH,
    SECRET,
    TWIN_SUBJECT,
    VAULT,
    credential_config,
    gcp_env,
    gcp_token,
    impersonation_url,
    provider,
    run_python,
    service_account,
    sts_url,
)
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def _claims(token: str) -> dict[str, Any]:
    return jose.parse_compact(token).payload


def _audit(fed: Federated, action: str) -> list[dict[str, Any]]:
    out = fed.server.cli("--output", "json", "audit", "list", "--limit", "1000").stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in events if e["action"] == action]


def _form(fed: Federated, token: str, **over: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": GRANT,
        "audience": provider(fed).name,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "requested_token_type": ACCESS,
        "subject_token": token,
        "subject_token_type": JWT,
    }
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def _sts(fed: Federated, form: dict[str, str], **kw: Any) -> httpx.Response:
    with fed.server.client() as http:
        return http.post(sts_url(fed).removeprefix(fed.server.url), data=form, **kw)


def _impersonate(
    fed: Federated, bearer: str, email: str | None = None, body: Any = None
) -> httpx.Response:
    url = impersonation_url(fed).removeprefix(fed.server.url)
    if email is not None:
        url = url.replace(service_account(), email)
    with fed.server.client() as http:
        return http.post(
            url,
            json={"delegates": None, "scope": None, "lifetime": "3600s"} if body is None else body,
            headers={"Authorization": f"Bearer {bearer}"},
        )


def _federated(fed: Federated, subject: str = SUBJECT) -> str:
    reply = _sts(fed, _form(fed, gcp_token(fed, subject)))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


# -- google-auth, unmodified ----------------------------------------------------------------


def test_google_auth_without_impersonation_gets_the_identitys_token(fed: Federated) -> None:
    # The dev cluster's projected token, with the newline a token file ends with.
    token = fed.dev_token("--audience", provider(fed).name) + "\n"
    config = credential_config(fed, fed.token_file(token), impersonate=None)
    got = run_python(gcp_env(fed, config), REFRESH)
    assert got["project"] == "default"
    assert got["type"] == "google.auth.identity_pool"
    claims = _claims(got["token"])
    assert claims["aud"] == gcpnames.ACCESS_AUDIENCE
    assert claims["oid"] == fed.object_id
    assert claims["fed"]["sub"] == SUBJECT and claims["fed"]["namespace"] == "demo"
    last = _audit(fed, "token.exchange.gcp-sts")[-1]
    assert last["result"] == "success" and last["actor"] == fed.object_id
    assert last["workload"]["pod"] == "app-7d9f"


def test_google_auth_with_impersonation_gets_the_service_accounts_token(fed: Federated) -> None:
    config = credential_config(fed, fed.token_file(gcp_token(fed)), impersonate="app")
    got = run_python(gcp_env(fed, config), REFRESH)
    # identity_pool credentials impersonate inside (service_account_impersonation_url).
    assert got["type"] == "google.auth.identity_pool"
    claims = _claims(got["token"])
    assert claims["aud"] == gcpnames.ACCESS_AUDIENCE and claims["oid"] == fed.object_id
    assert claims["via"] == "gcp:generateAccessToken"
    # expireTime came back as whole seconds with a Z, or google-auth would have refused it.
    assert abs(claims["exp"] - time.time() - 3600) < 120
    last = _audit(fed, "token.exchange.gcp-impersonate")[-1]
    assert last["result"] == "success" and last["actor"] == fed.object_id
    assert last["workload"]["sub"] == SUBJECT


def test_google_auth_impersonates_one_of_two_identities_trusting_the_token(
    fed: Federated,
) -> None:
    config = credential_config(
        fed, fed.token_file(gcp_token(fed, TWIN_SUBJECT)), impersonate="twin-b"
    )
    got = run_python(gcp_env(fed, config), REFRESH)
    twin_b = json.loads(fed.server.cli("--output", "json", "identity", "show", "twin-b").stdout)
    assert _claims(got["token"])["oid"] == twin_b["object_id"]


def test_google_auth_reports_a_refusal(fed: Federated) -> None:
    token = gcp_token(fed, "system:serviceaccount:demo:nobody")
    config = credential_config(fed, fed.token_file(token), impersonate=None)
    code = REFRESH.replace(
        "creds.refresh(Request())",
        "try:\n    creds.refresh(Request())\nexcept Exception as exc:\n"
        "    print(json.dumps({'error': type(exc).__name__, 'message': str(exc)}))\n"
        "    raise SystemExit(0)",
    )
    got = run_python(gcp_env(fed, config), code)
    assert got["error"] == "OAuthError"
    assert "unauthorized_client" in got["message"]
    assert "rejected by the attribute condition" in got["message"]


# -- STS on the wire --------------------------------------------------------------------------


def test_sts_answers_googles_shape(fed: Federated) -> None:
    reply = _sts(fed, _form(fed, gcp_token(fed) + "\n"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert body["issued_token_type"] == ACCESS and body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert reply.headers["cache-control"] == "no-store"


def test_sts_takes_a_json_body_and_quoted_options(fed: Federated) -> None:
    form = _form(fed, gcp_token(fed), options="%7B%22userProject%22%3A%20%22123%22%7D")
    assert _sts(fed, form).status_code == 200
    with fed.server.client() as http:
        reply = http.post(
            sts_url(fed).removeprefix(fed.server.url), json=_form(fed, gcp_token(fed))
        )
    assert reply.status_code == 200, reply.text


def test_sts_accepts_the_https_form_of_the_provider_as_token_audience(fed: Federated) -> None:
    # Google's default allowed audience is the provider's name with https: in front; the trust
    # policy must still list the audience the token carries.
    fed.server.cli(
        "federation",
        "add",
        "other",
        "--name",
        "https-aud",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        "system:serviceaccount:demo:https",
        "--audience",
        provider(fed).https_name,
    )
    token = fed.test_token(sub="system:serviceaccount:demo:https", aud=[provider(fed).https_name])
    assert _sts(fed, _form(fed, token)).status_code == 200


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("nobody trusts the subject", "unauthorized_client", "rejected by the attribute condition"),
        ("wrong audience", "invalid_grant", "does not match the expected audience"),
        ("expired", "invalid_grant", "expired"),
        ("tampered", "invalid_grant", "signature"),
        ("unknown issuer", "invalid_grant", "issuer"),
        ("unknown project", "invalid_target", "audience"),
        ("not a provider", "invalid_target", "workload identity pool provider"),
        ("grant type", "unsupported_grant_type", "Unsupported grant type"),
        ("saml", "invalid_request", "subject_token_type"),
        ("requested type", "invalid_request", "requested_token_type"),
        ("no subject token", "invalid_request", "subject_token"),
        ("actor token", "invalid_request", "actor_token"),
    ],
)
def test_sts_refusals_have_googles_codes(fed: Federated, case: str, error: str, words: str) -> None:
    good = gcp_token(fed)
    over: dict[str, str | None] = {}
    if case == "nobody trusts the subject":
        over["subject_token"] = gcp_token(fed, "system:serviceaccount:demo:nobody")
    elif case == "wrong audience":
        over["subject_token"] = fed.test_token(aud=["api://AzureADTokenExchange"])
    elif case == "expired":
        now = int(time.time())
        over["subject_token"] = gcp_token(fed, iat=now - 4000, nbf=now - 4000, exp=now - 3000)
    elif case == "tampered":
        head, body, sig = good.split(".")
        over["subject_token"] = f"{head}.{body}.{sig[:-4]}AAAA"
    elif case == "unknown issuer":
        over["subject_token"] = gcp_token(fed, iss="https://unknown.example")
    elif case == "unknown project":
        over["audience"] = provider(fed).name.replace(provider(fed).project_number, "999999999999")
    elif case == "not a provider":
        over["audience"] = "//iam.googleapis.com/projects/1/pools/x"
    elif case == "grant type":
        over["grant_type"] = "client_credentials"
    elif case == "saml":
        over["subject_token_type"] = "urn:ietf:params:oauth:token-type:saml2"
    elif case == "requested type":
        over["requested_token_type"] = "urn:ietf:params:oauth:token-type:id_token"
    elif case == "no subject token":
        over["subject_token"] = None
    elif case == "actor token":
        over["actor_token"] = good
    reply = _sts(fed, _form(fed, good, **over))
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["error"] == error, body
    assert words in body["error_description"], body
    assert good not in reply.text


def test_sts_refusal_is_audited_with_the_closest_reason(fed: Federated) -> None:
    _sts(fed, _form(fed, gcp_token(fed, "system:serviceaccount:demo:nobody")))
    last = _audit(fed, "token.exchange.gcp-sts")[-1]
    assert last["result"] == "failure"
    assert last["reason"].startswith("subject:")
    assert last["workload"]["sub"] == "system:serviceaccount:demo:nobody"


def test_sts_issues_a_principal_token_when_several_identities_trust(fed: Federated) -> None:
    token = _federated(fed, TWIN_SUBJECT)
    claims = _claims(token)
    assert claims["aud"] == gcpnames.PRINCIPAL_AUDIENCE and "oid" not in claims
    assert claims["sub"].endswith(f"/subject/{TWIN_SUBJECT}")
    assert claims["sub"].startswith("principal://iam.googleapis.com/projects/")
    last = _audit(fed, "token.exchange.gcp-sts")[-1]
    assert "twin-a, twin-b" in last["reason"]


# -- generateAccessToken on the wire ----------------------------------------------------------


def test_generate_access_token_answers_googles_shape(fed: Federated) -> None:
    reply = _impersonate(fed, _federated(fed))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"accessToken", "expireTime"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expireTime"])


def test_generate_access_token_honours_a_shorter_lifetime(fed: Federated) -> None:
    body = {"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s"}
    reply = _impersonate(fed, _federated(fed), body=body)
    assert reply.status_code == 200, reply.text
    claims = _claims(reply.json()["accessToken"])
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize(
    ("case", "status", "rpc", "words"),
    [
        ("not trusted", 403, "PERMISSION_DENIED", "iam.serviceAccounts.getAccessToken"),
        ("unknown service account", 404, "NOT_FOUND", "Gaia id not found"),
        ("other project", 403, "PERMISSION_DENIED", "iam.serviceAccounts.getAccessToken"),
        ("bad bearer", 401, "UNAUTHENTICATED", "invalid authentication credentials"),
        ("platform token as bearer", 401, "UNAUTHENTICATED", "invalid authentication"),
        ("delegates", 400, "INVALID_ARGUMENT", "delegates"),
        ("lifetime", 400, "INVALID_ARGUMENT", "lifetime"),
        ("unknown field", 400, "INVALID_ARGUMENT", "Unknown name"),
    ],
)
def test_generate_access_token_refusals(
    fed: Federated, case: str, status: int, rpc: str, words: str
) -> None:
    bearer = _federated(fed)
    email, body = None, None
    if case == "not trusted":
        bearer = _federated(fed, OTHER_SUBJECT)  # other's principal asks for app
    elif case == "unknown service account":
        email = service_account("nobody")
    elif case == "other project":
        email = gcpnames.service_account("app", "elsewhere")
    elif case == "bad bearer":
        bearer = bearer[:-6] + "AAAAAA"
    elif case == "platform token as bearer":
        bearer = gcp_token(fed)
    elif case == "delegates":
        body = {"delegates": ["projects/-/serviceAccounts/x@y.iam.gserviceaccount.com"]}
    elif case == "lifetime":
        body = {"lifetime": "forever"}
    elif case == "unknown field":
        body = {"scopes": []}
    reply = _impersonate(fed, bearer, email, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == status and error["status"] == rpc
    assert words.lower() in error["message"].lower(), error


def test_a_refused_impersonation_is_audited(fed: Federated) -> None:
    _impersonate(fed, _federated(fed, OTHER_SUBJECT))
    last = _audit(fed, "token.exchange.gcp-impersonate")[-1]
    assert last["result"] == "failure" and last["actor"] == fed.object_id
    assert last["workload"]["sub"] == OTHER_SUBJECT


def test_an_access_token_of_another_dialect_is_no_google_token(fed: Federated) -> None:
    entra = fed.exchange(fed.test_token()).json()["access_token"]
    reply = _impersonate(fed, entra)
    assert reply.status_code == 401


def test_a_deleted_identitys_federated_token_is_refused(fed: Federated) -> None:
    cli = fed.server.cli
    cli("identity", "create", "brief")
    cli(
        "federation",
        "add",
        "brief",
        "--name",
        "gcp",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        "system:serviceaccount:demo:brief",
        "--audience",
        provider(fed).name,
    )
    bearer = _federated(fed, "system:serviceaccount:demo:brief")
    cli("identity", "delete", "brief")
    reply = _impersonate(fed, bearer, service_account("brief"))
    assert reply.status_code == 401, reply.text


def test_another_tenants_project_number_selects_its_identities(fed: Federated) -> None:
    cli = fed.server.cli
    team = json.loads(cli("--output", "json", "tenant", "create", "team-gcp").stdout)
    jwks = str(fed.tmp / "jwks.json")
    cli(
        "issuer",
        "add",
        TEST_ISSUER,
        "--jwks-file",
        jwks,
        "--tenant",
        "team-gcp",
    )
    cli("identity", "create", "app", "--tenant", "team-gcp")
    theirs = gcpnames.provider(team["id"])
    assert theirs.project_number != provider(fed).project_number
    cli(
        "federation",
        "add",
        "app",
        "--tenant",
        "team-gcp",
        "--name",
        "gcp",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        SUBJECT,
        "--audience",
        theirs.name,
    )
    token = fed.test_token(aud=[theirs.name])
    reply = _sts(fed, _form(fed, token, audience=theirs.name))
    assert reply.status_code == 200, reply.text
    claims = _claims(reply.json()["access_token"])
    assert claims["tid"] == team["id"] and claims["oid"] != fed.object_id
    # Impersonating team-gcp's app needs its project in the email; the default tenant's app
    # is another project's service account.
    bearer = reply.json()["access_token"]
    mine = _impersonate(fed, bearer, gcpnames.service_account("app", "team-gcp"))
    assert mine.status_code == 200, mine.text
    assert _impersonate(fed, bearer).status_code == 403
    # The default tenant's provider with team-gcp's token audience: wrong audience.
    assert _sts(fed, _form(fed, token)).json()["error"] == "invalid_grant"


def test_a_google_token_is_no_bearer_token_for_the_other_dialects(fed: Federated) -> None:
    google = _impersonate(fed, _federated(fed)).json()["accessToken"]
    with fed.server.client() as http:
        keyvault = http.get(
            f"/vaults/{VAULT}/secrets?api-version=7.4",
            headers={"authorization": f"Bearer {google}"},
        )
        vault_api = http.get(f"/v1/{VAULT}/data/{SECRET}", headers={"x-vault-token": google})
    assert keyvault.status_code == 401
    assert vault_api.status_code == 403


@pytest.fixture(scope="module")
def bearer(fed: Federated) -> str:
    """One federated token of app, for the tests that call generateAccessToken many times."""
    return _federated(fed)


_FIELD = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from([GRANT, ACCESS, JWT, "%7B%7D", "{}", "[1]", "\x00", "é" * 3]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            name: _FIELD
            for name in (
                "grant_type",
                "audience",
                "scope",
                "requested_token_type",
                "subject_token",
                "subject_token_type",
                "options",
            )
        },
    ),
    as_json=st.booleans(),
)
def test_any_sts_body_is_an_oauth_error_never_a_crash(
    fed: Federated, fields: dict[str, str | None], as_json: bool
) -> None:
    form = {k: v for k, v in fields.items() if v is not None}
    with fed.server.client() as http:
        path = sts_url(fed).removeprefix(fed.server.url)
        reply = http.post(path, json=form) if as_json else http.post(path, data=form)
    assert reply.status_code == 400, reply.text
    assert set(reply.json()) == {"error", "error_description"}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    email=st.sampled_from(["app@default.iam.gserviceaccount.com", "x", "@", "a@b@c", "é@default"]),
)
def test_any_generate_access_token_body_is_a_google_error_or_a_token(
    fed: Federated, bearer: str, body: Any, email: str
) -> None:
    reply = _impersonate(fed, bearer, email, body)
    assert reply.status_code in (200, 400, 403, 404), reply.text
    if reply.status_code != 200:
        assert reply.json()["error"]["code"] == reply.status_code
