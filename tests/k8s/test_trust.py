"""Trusting a cluster: the ``kubernetes`` key source (k8s/jwks.py) that follows the cluster's
key rotation, ``keyless k8s trust`` in both modes, and the issuer state that says when keys are
stale. Against the fake Kubernetes API (tests/k8s/fakeapi.py), in process with a manual clock
for the schedule, and through a real server over HTTPS for what users see."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from keyless.core.clock import ManualClock
from keyless.core.errors import Unavailable
from keyless.core.issuers import IssuerKeys, IssuerRecord
from keyless.core.jose import public_jwk
from keyless.k8s.jwks import KubeApiJwksFetcher, in_cluster, locate
from keyless.server.tls import ensure_tls
from keyless.store.sql import SqlStore
from tests.k8s.fakeapi import FakeKubeApi
from tests.support.cli import run_cli
from tests.support.server import RunningServer, ServerFactory, free_port

ISS = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:billing:api"
AUDIENCE = "api://AzureADTokenExchange"
KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "ABC"}


def key_set(*kids: str) -> dict[str, Any]:
    return {"keys": [public_jwk(KEYS[kid].public_key(), kid, "RS256") for kid in kids]}


def cluster_token(kid: str, iss: str = ISS) -> str:
    """A projected service-account token of the cluster, signed with key ``kid``."""
    now = int(time.time())
    claims = {"iss": iss, "sub": SUBJECT, "aud": [AUDIENCE], "iat": now, "nbf": now}
    return jwt.encode({**claims, "exp": now + 600}, KEYS[kid], "RS256", headers={"kid": kid})


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(issuer=ISS, jwks=key_set("A")).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kubeconfig(api: FakeKubeApi, tmp_path: Path) -> Path:
    return api.kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def kube_keys(clock: ManualClock, fetcher: KubeApiJwksFetcher) -> IssuerKeys:
    """The server's issuer keys with only the kubernetes source, and the cluster registered."""
    keys = IssuerKeys(_NoDiscovery(), clock, kubernetes=fetcher)
    keys.replace_issuers([IssuerRecord(ISS, None, clock.now(), kubernetes_api=True)])
    return keys


class _NoDiscovery:
    async def fetch(self, issuer: str) -> dict[str, Any]:
        raise AssertionError(f"discovery must not be used for {issuer}")


# -- following the cluster (in process, manual clock) --------------------------------------


def _scheduled(keys: IssuerKeys, clock: ManualClock) -> Any:
    clock.advance(3600)
    return keys.refresh_due()


def _unknown_kid(keys: IssuerKeys, clock: ManualClock) -> Any:
    clock.advance(31)
    return keys.key(ISS, "B")


@pytest.mark.parametrize(
    ("published", "follow"),
    [
        pytest.param(("A", "B"), _scheduled, id="scheduled-refresh-old-and-new"),
        pytest.param(("B",), _scheduled, id="scheduled-refresh-new-only"),
        pytest.param(("A", "B"), _unknown_kid, id="unknown-kid-refetch"),
    ],
)
async def test_follows_the_clusters_rotation_without_admin_action(
    api: FakeKubeApi,
    kubeconfig: Path,
    clock: ManualClock,
    published: tuple[str, ...],
    follow: Callable[[IssuerKeys, ManualClock], Any],
) -> None:
    keys = kube_keys(clock, KubeApiJwksFetcher(kubeconfig=kubeconfig))
    await keys.refresh_due()
    assert keys.status(ISS).kids == ("A",)
    assert api.requests[-2:] == ["GET /.well-known/openid-configuration", "GET /openid/v1/jwks"]
    api.jwks = key_set(*published)  # the cluster rotates its signing key
    await follow(keys, clock)
    status = keys.status(ISS)
    assert status.kids == published
    assert (status.state, status.source, status.last_success) == ("ok", "kubernetes", clock.now())
    # A token signed with the new key verifies against what keyless now holds.
    claims = jwt.decode(
        cluster_token("B"), key=await keys.key(ISS, "B"), algorithms=["RS256"], audience=AUDIENCE
    )
    assert claims["iss"] == ISS


def _outage(api: FakeKubeApi, kubeconfig: Path) -> Callable[[], None]:
    api.outage = 503

    def heal() -> None:
        api.outage = None

    return heal


def _token_refused(api: FakeKubeApi, kubeconfig: Path) -> Callable[[], None]:
    api.bearer_tokens = {"another-token"}
    return lambda: api.bearer_tokens.add("fake-bearer-token")


def _issuer_changed(api: FakeKubeApi, kubeconfig: Path) -> Callable[[], None]:
    api.issuer = "https://another-cluster.example"

    def heal() -> None:
        api.issuer = ISS

    return heal


def _unreachable(api: FakeKubeApi, kubeconfig: Path) -> Callable[[], None]:
    good = kubeconfig.read_text()
    kubeconfig.write_text(good.replace(f":{api.port}", f":{free_port()}"))
    return lambda: kubeconfig.write_text(good)  # the kubeconfig is read again on every fetch


def _too_large(api: FakeKubeApi, kubeconfig: Path) -> Callable[[], None]:
    good = api.jwks
    api.jwks = {"keys": [{"kty": "RSA", "kid": f"k{i}", "n": "A" * 1000} for i in range(300)]}

    def heal() -> None:
        api.jwks = good

    return heal


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        pytest.param(_outage, "HTTP 503", id="api-answers-503"),
        pytest.param(
            _token_refused,
            "HTTP 401: the account needs the system:service-account-issuer-discovery ClusterRole",
            id="token-refused-401",
        ),
        pytest.param(
            _issuer_changed,
            "issuer mismatch: the Kubernetes API keyless runs against (kubeconfig",
            id="cluster-names-another-issuer",
        ),
        pytest.param(_unreachable, "unreachable (ConnectError)", id="api-unreachable"),
        pytest.param(_too_large, "larger than 262144 bytes", id="jwks-too-large"),
    ],
)
async def test_stale_while_the_api_fails_and_ok_once_it_recovers(
    api: FakeKubeApi,
    kubeconfig: Path,
    clock: ManualClock,
    fail: Callable[[FakeKubeApi, Path], Callable[[], None]],
    reason: str,
) -> None:
    keys = kube_keys(clock, KubeApiJwksFetcher(kubeconfig=kubeconfig))
    await keys.refresh_due()
    heal = fail(api, kubeconfig)
    clock.advance(3600)
    await keys.refresh_due()
    failed_at = clock.now()
    status = keys.status(ISS)
    assert (status.state, status.stale_since, status.kids) == ("stale", failed_at, ("A",))
    assert status.reason is not None and reason in status.reason, status.reason
    assert "fake-bearer-token" not in status.reason
    assert await keys.key(ISS, "A")  # the last good keys are still served
    clock.advance(60)  # the first retry after a failure
    await keys.refresh_due()
    assert keys.status(ISS).stale_since == failed_at  # still failing: since the first failure
    heal()
    clock.advance(120)
    await keys.refresh_due()
    status = keys.status(ISS)
    assert (status.state, status.stale_since, status.reason) == ("ok", None, None)


# -- in a pod: the service-account token and CA ----------------------------------------------


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[FakeKubeApi, dict[str, str], Path]]:
    """The fake API over HTTPS, and a pod's environment and service-account directory."""
    tls = ensure_tls(tmp_path / "api-tls", "https://localhost", "vault.localhost")
    fake = FakeKubeApi(issuer=ISS, jwks=key_set("A")).start(tls=(tls.cert, tls.key))
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(tls.ca_cert.read_bytes())
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(fake.port)}
    try:
        yield fake, environ, account
    finally:
        fake.stop()


async def test_in_cluster_rereads_the_rotating_token_on_every_fetch(
    pod: tuple[FakeKubeApi, dict[str, str], Path],
) -> None:
    api, environ, account = pod
    fetcher = KubeApiJwksFetcher(environ=environ, serviceaccount_dir=account)
    for token in ("token-1", "token-2\n", "token-3"):
        (account / "token").write_text(token)  # the kubelet rotates it
        api.bearer_tokens = {token.strip()}  # and the API accepts only the current one
        assert await fetcher.fetch(ISS) == key_set("A")
    api.bearer_tokens = {"token-4"}  # a token the API no longer accepts
    with pytest.raises(Unavailable) as err:
        await fetcher.fetch(ISS)
    assert "(in-cluster): HTTP 401" in err.value.message
    assert "token-3" not in err.value.message


async def test_in_cluster_verifies_the_api_server_with_the_pods_ca(
    pod: tuple[FakeKubeApi, dict[str, str], Path], tmp_path: Path
) -> None:
    _, environ, account = pod
    (account / "token").write_text("fake-bearer-token")
    other = ensure_tls(tmp_path / "other-ca", "https://localhost", "vault.localhost")
    (account / "ca.crt").write_bytes(other.ca_cert.read_bytes())
    with pytest.raises(Unavailable, match=r"\(in-cluster\): unreachable \(ConnectError\)"):
        await KubeApiJwksFetcher(environ=environ, serviceaccount_dir=account).fetch(ISS)


@pytest.mark.parametrize(
    ("environ", "token", "expected"),
    [
        pytest.param({}, "t", None, id="not-in-a-pod"),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            "t",
            "https://10.96.0.1:443",
            id="ipv4",
        ),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "6443"},
            "t",
            "https://[fd00:10:96::1]:6443",
            id="ipv6-bracketed",
        ),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "api.internal"},
            "t",
            "https://api.internal:443",
            id="default-port",
        ),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            None,
            "cannot read the service-account token",
            id="no-token-file",
        ),
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, " \n", "is empty", id="empty-token"),
    ],
)
def test_in_cluster_location(
    tmp_path: Path, environ: dict[str, str], token: str | None, expected: str | None
) -> None:
    """Only works out where the API server is; nothing is connected to."""
    if token is not None:
        (tmp_path / "token").write_text(token)
    if expected is None or expected.startswith("https://"):
        server = in_cluster(environ, tmp_path)
        assert (server.url if server else None) == expected
        if server is not None:
            assert server.origin == "in-cluster" and server.authorization == f"Bearer {token}"
            assert server.ca_file is None  # no ca.crt in this directory: the system roots
        return
    with pytest.raises(Unavailable, match=expected):
        in_cluster(environ, tmp_path)


async def test_no_cluster_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(Unavailable, match=r"keyless runs in no pod .* and has no kubeconfig"):
        await locate(environ={})


# -- the store keeps the source (SQLite and PostgreSQL) ---------------------------------------


async def test_store_keeps_the_key_source(store: SqlStore) -> None:
    from keyless.core.models import Tenant

    tenant = await store.create_tenant(Tenant("00000000-0000-0000-0000-00000000000a", "t", 1.0))
    kube = IssuerRecord(ISS, None, 5.0, kubernetes_api=True, updated_at=5.0)
    assert await store.add_issuer(tenant.id, kube)
    assert not await store.add_issuer(tenant.id, kube)  # idempotent
    [(_, stored)] = await store.list_issuers(tenant.id)
    assert (stored.source, stored.created_at, stored.updated_at) == ("kubernetes", 5.0, 5.0)
    for record in (
        IssuerRecord(ISS, key_set("A"), 9.0, updated_at=9.0),
        IssuerRecord(ISS, None, 10.0, updated_at=10.0),
        IssuerRecord(ISS, None, 11.0, kubernetes_api=True, updated_at=11.0),
    ):
        assert not await store.add_issuer(tenant.id, record)
        [(_, stored)] = await store.list_issuers(tenant.id)
        assert (stored.source, stored.jwks) == (record.source, record.jwks)
        assert (stored.created_at, stored.updated_at) == (5.0, record.updated_at)


# -- through a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(issuer=ISS, jwks=key_set("A")).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def keyless(
    cluster: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    """A keyless whose Kubernetes API (kubeconfig, as out of a pod) is the fake cluster, and
    the environment of a CLI run next to it (as with kubectl exec)."""
    tmp = tmp_path_factory.mktemp("trust")
    env = {"KUBECONFIG": str(cluster.kubeconfig(tmp / "kubeconfig")), "HOME": str(tmp)}
    factory = ServerFactory(tmp)
    try:
        yield factory.start(env=env), env
    finally:
        factory.stop_all()


def run(server: RunningServer, env: dict[str, str], *args: str) -> Any:
    result = cli(server, env, "--output", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli(server: RunningServer, env: dict[str, str], *args: str) -> Any:
    """The CLI in this process (tests/support/cli.py), ``env`` set while it runs."""
    return run_cli(["--data-dir", str(server.data_dir), *args], env=env)


def exchange(server: RunningServer, client_id: str, assertion: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": client_id,
        "client_assertion": assertion,
        "scope": f"https://vault.localhost:{server.port}/.default",
    }
    with server.client() as http:
        return http.post("/default/oauth2/v2.0/token", data=form)


def stale_gauge(server: RunningServer, issuer: str) -> dict[str, float]:
    """keyless_issuer_keys_stale and _age_seconds of ``issuer``, parsed from /metrics."""
    with server.client() as http:
        text = http.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("issuer") == issuer and family.name in (
                "keyless_issuer_keys_stale",
                "keyless_issuer_keys_age_seconds",
            ):
                found[family.name] = sample.value
    return found


def admin(server: RunningServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """The admin API over the socket (what the CLI calls, without a process per call)."""
    with server.admin() as http:
        answer = http.get(path) if body is None else http.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def identity_trusting(server: RunningServer, name: str, iss: str) -> str:
    ident = admin(server, "/v1/identities?tenant=default", {"name": name})
    fc = {"name": "cluster", "issuer": iss, "subject": SUBJECT}
    admin(server, f"/v1/identities/{name}/federated-credentials?tenant=default", fc)
    return str(ident["client_id"])


def refresh(server: RunningServer, iss: str) -> Any:
    return admin(server, "/v1/issuers/refresh?tenant=default", {"url": iss})


def listed(server: RunningServer, iss: str) -> Any:
    [status] = [i for i in admin(server, "/v1/issuers?tenant=default") if i["url"] == iss]
    return status


def test_in_cluster_trust_follows_the_cluster(
    cluster: FakeKubeApi, keyless: tuple[RunningServer, dict[str, str]]
) -> None:
    server, env = keyless
    added = run(server, env, "k8s", "trust", "--in-cluster")
    assert (added["url"], added["source"], added["state"]) == (ISS, "kubernetes", "ok"), added[
        "reason"
    ]
    assert added["kids"] == ["A"]
    client_id = identity_trusting(server, "in-cluster-app", ISS)
    assert exchange(server, client_id, cluster_token("A")).status_code == 200

    cluster.jwks = key_set("A", "B")  # the cluster rotates; no admin re-uploads anything
    # What the server's own refresh schedule does (tested above with a manual clock):
    assert refresh(server, ISS)["kids"] == ["A", "B"]
    assert exchange(server, client_id, cluster_token("B")).status_code == 200

    cluster.outage = 503
    refreshed = refresh(server, ISS)
    [shown] = [i for i in run(server, env, "issuer", "list") if i["url"] == ISS]  # the CLI's
    for status in (refreshed, shown):
        assert status["state"] == "stale" and "HTTP 503" in status["reason"]
        assert status["stale_since"] == pytest.approx(time.time(), abs=60)
    assert stale_gauge(server, ISS)["keyless_issuer_keys_stale"] == 1
    assert exchange(server, client_id, cluster_token("B")).status_code == 200  # last good keys

    cluster.outage = None
    assert refresh(server, ISS)["state"] == "ok"
    gauges = stale_gauge(server, ISS)
    assert gauges["keyless_issuer_keys_stale"] == 0
    assert 0 <= gauges["keyless_issuer_keys_age_seconds"] < 60
    people = cli(server, env, "issuer", "list")
    assert people.returncode == 0 and "kubernetes" in people.stdout and " ok " in people.stdout


def test_uploaded_jwks_warns_and_goes_stale_when_the_cluster_rotates(
    keyless: tuple[RunningServer, dict[str, str]], tmp_path: Path
) -> None:
    server, env = keyless
    iss = "https://private-cluster.example"
    private = FakeKubeApi(issuer=iss, jwks=key_set("A")).start()
    try:
        kubeconfig = str(private.kubeconfig(tmp_path / "private"))
        trusted = cli(server, env, "--output", "json", "k8s", "trust", "--kubeconfig", kubeconfig)
        assert trusted.returncode == 0, trusted.stderr
        assert "does not follow the cluster's key rotation" in trusted.stderr
        assert "keyless k8s trust --in-cluster" in trusted.stderr
        assert json.loads(trusted.stdout)["source"] == "file"
        client_id = identity_trusting(server, "uploaded-app", iss)
        assert exchange(server, client_id, cluster_token("A", iss)).status_code == 200
        assert stale_gauge(server, iss)["keyless_issuer_keys_stale"] == 0

        private.jwks = key_set("C")  # the cluster rotates; the upload does not follow
        assert exchange(server, client_id, cluster_token("C", iss)).status_code != 200
        status = listed(server, iss)
        assert status["state"] == "stale" and "key id 'C'" in status["reason"]
        assert status["stale_since"] == pytest.approx(time.time(), abs=60)
        assert stale_gauge(server, iss)["keyless_issuer_keys_stale"] == 1

        again = cli(server, env, "k8s", "trust", "--kubeconfig", kubeconfig)  # upload again
        assert again.returncode == 0, again.stderr
        status = listed(server, iss)
        assert (status["state"], status["kids"]) == ("ok", ["C"])
        assert exchange(server, client_id, cluster_token("C", iss)).status_code == 200
    finally:
        private.stop()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(("--in-cluster", "--context", "x"), "drop --context", id="in-cluster-context"),
        pytest.param(("--issuer", ISS), "go with --in-cluster", id="issuer-alone"),
        pytest.param(("--allow-unreachable",), "go with --in-cluster", id="allow-alone"),
    ],
)
def test_trust_refuses_mixed_modes(
    keyless: tuple[RunningServer, dict[str, str]], args: tuple[str, ...], error: str
) -> None:
    server, env = keyless
    result = cli(server, env, "k8s", "trust", *args)
    assert result.returncode != 0 and error in result.stderr


def test_in_cluster_trust_fails_when_the_server_cannot_read_the_keys(
    keyless: tuple[RunningServer, dict[str, str]],
) -> None:
    server, env = keyless
    wrong = "https://not-this-cluster.example"
    result = cli(server, env, "k8s", "trust", "--in-cluster", "--issuer", wrong)
    assert result.returncode == 1
    assert "issuer mismatch" in result.stderr and "issuer not added" in result.stderr
    assert result.stderr.count("\n") == 1
    listed = cli(server, env, "--output", "json", "issuer", "list")
    assert wrong not in listed.stdout


def test_in_cluster_trust_allow_unreachable_warns_when_the_server_cannot_read_the_keys(
    keyless: tuple[RunningServer, dict[str, str]],
) -> None:
    server, env = keyless
    wrong = "https://not-this-cluster.example"
    result = cli(
        server,
        env,
        "--output",
        "json",
        "k8s",
        "trust",
        "--in-cluster",
        "--issuer",
        wrong,
        "--allow-unreachable",
    )
    assert result.returncode == 0, result.stderr
    assert "warning: the server cannot read the cluster's keys yet: issuer mismatch" in (
        result.stderr
    )
    added = json.loads(result.stdout)
    assert (added["url"], added["source"], added["state"]) == (wrong, "kubernetes", "failing")
    assert stale_gauge(server, wrong) == {"keyless_issuer_keys_stale": 1}  # no age: no keys
