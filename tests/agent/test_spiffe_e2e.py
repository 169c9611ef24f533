"""``keyless agent --workload-api PATH --svid-dir DIR`` as a real process against a real keyless
(SVID lifetime 1m, the server's shortest): unmodified py-spiffe clients get the X.509-SVID (the
chain verified up to the bundle by ``cryptography``'s X.509 verifier), the bundles, a JWT-SVID
that ValidateJWTSVID accepts for its audience and refuses for another; a streaming client and
the files see the renewal at half-life (~30s); a token outside every trust policy gets nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from spiffe import JwtSource, TrustDomain, WorkloadApiClient
from spiffe.svid.jwt_svid import JwtSvid
from spiffe.workloadapi.errors import ValidateJwtSvidError

from tests.agent.conftest import AgentProcess, Vaults, prepare, start_agent
from tests.support.server import ServerFactory
from tests.support.waiting import eventually

TD = "default.keyless"
APP_ID = f"spiffe://{TD}/ns/demo/sa/app"
AUDIENCE = "billing-api"


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vaults]:
    tmp = tmp_path_factory.mktemp("spiffe-agent")
    factory = ServerFactory(tmp)
    try:
        yield prepare(factory.start("--svid-ttl", "1m", dev=True), tmp)
    finally:
        factory.stop_all()


@pytest.fixture
def spiffe_agent(kv: Vaults, tmp_path: Path) -> Iterator[tuple[AgentProcess, Path, Path]]:
    socket, out = tmp_path / "spiffe" / "agent.sock", tmp_path / "svid"
    running = start_agent(("--workload-api", str(socket), "--svid-dir", str(out)), kv.agent_env())
    try:
        assert running.wait_for("spiffe ready", stream="out"), running.log
        yield running, socket, out
    finally:
        assert running.stop() == 0, running.log


def _verify(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> None:
    """The X.509-SVID chains to the bundle (a client certificate: SPIFFE IDs are URI SANs)."""
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(APP_ID) in verified.subjects


def test_py_spiffe_gets_identities_from_the_agent(
    spiffe_agent: tuple[AgentProcess, Path, Path],
):
    _, socket, _ = spiffe_agent
    client = WorkloadApiClient(socket_path=f"unix://{socket}", default_timeout=20)
    try:
        context = client.fetch_x509_context()
        svid = context.default_svid
        assert str(svid.spiffe_id) == APP_ID
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TD))
        assert bundle is not None
        _verify(svid.cert_chain, list(bundle.x509_authorities))
        token = client.fetch_jwt_svid(audience={AUDIENCE}).token
        assert str(client.validate_jwt_svid(token, AUDIENCE).spiffe_id) == APP_ID
        with pytest.raises(ValidateJwtSvidError):
            client.validate_jwt_svid(token, "another-api")
        jwt_bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TrustDomain(TD))
        assert jwt_bundle is not None
        assert str(JwtSvid.parse_and_validate(token, jwt_bundle, {AUDIENCE}).spiffe_id) == APP_ID
    finally:
        client.close()
    source = JwtSource(socket_path=f"unix://{socket}", timeout_in_seconds=20)
    try:
        assert str(source.fetch_svid(audience={AUDIENCE}).spiffe_id) == APP_ID
    finally:
        source.close()


def test_renewal_at_half_life_reaches_streams_and_files(
    spiffe_agent: tuple[AgentProcess, Path, Path],
):
    _, socket, out = spiffe_agent
    client = WorkloadApiClient(socket_path=f"unix://{socket}")
    seen: list[tuple[float, x509.Certificate]] = []
    got = threading.Condition()

    def on_success(context) -> None:  # type: ignore[no-untyped-def]
        with got:
            seen.append((time.time(), context.default_svid.leaf))
            got.notify_all()

    handle = client.stream_x509_contexts(on_success, lambda exc: None)
    try:
        with got:
            assert got.wait_for(lambda: len(seen) >= 2, timeout=50)
    finally:
        handle.cancel()
        client.close()
    (t1, first), (t2, second) = seen[:2]
    # the CA backdates notBefore for clock skew: the half-life counts from receipt (~60s left)
    left = first.not_valid_after_utc.timestamp() - t1
    assert 0.35 * left < t2 - t1 < 0.75 * left  # at about half, neither at once nor at expiry
    assert second.public_key().public_numbers() != first.public_key().public_numbers()
    on_disk = lambda: x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]  # noqa: E731
    assert eventually(lambda: on_disk().serial_number == second.serial_number, timeout=10)
    roots = x509.load_pem_x509_certificates((out / "bundle.pem").read_bytes())
    _verify(x509.load_pem_x509_certificates((out / "svid.pem").read_bytes()), roots)


def test_token_outside_every_trust_policy_gets_no_svid(kv: Vaults, tmp_path: Path):
    env = kv.agent_env()
    outsider = kv.fed.dev_token("--service-account", "intruder")
    env["AZURE_FEDERATED_TOKEN_FILE"] = str(kv.fed.token_file(outsider))
    socket, out = tmp_path / "agent.sock", tmp_path / "svid"
    running = start_agent(("--workload-api", str(socket), "--svid-dir", str(out)), env)
    try:
        assert running.wait_for("refused", timeout=30), running.log
        assert not running.wait_for("spiffe ready", timeout=1, stream="out")
        assert not (out / "svid.pem").exists()
        assert outsider not in running.log
    finally:
        running.stop()
