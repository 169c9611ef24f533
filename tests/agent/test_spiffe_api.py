"""The agent's SPIFFE Workload API (agent/spiffe_api.py) driven by unmodified py-spiffe clients
and a raw gRPC client over its Unix socket; SVIDs from ``LocalIssuer`` (tests/agent/
spiffe_support.py), the stand-in for keyless's SVID API.
"""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from spiffe import JwtSource, SpiffeId, TrustDomain, WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2 as spec
from spiffe.svid.jwt_svid import JwtSvid
from spiffe.workloadapi.errors import ValidateJwtSvidError

from tests.agent.spiffe_support import TRUST_DOMAIN, WORKLOAD_ID, AgentThread, LocalIssuer
from tests.support.waiting import eventually

AUDIENCE = "billing-api"


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "spiffe" / "agent.sock"


@pytest.fixture
def issuer() -> LocalIssuer:
    return LocalIssuer()


@pytest.fixture
def agent(issuer: LocalIssuer, socket_path: Path) -> Iterator[AgentThread]:
    running = AgentThread(issuer, socket=socket_path)
    assert eventually(socket_path.exists, timeout=10)
    yield running
    running.stop()


@pytest.fixture
def client(agent: AgentThread) -> Iterator[WorkloadApiClient]:
    c = WorkloadApiClient(socket_path=f"unix://{agent.socket}", default_timeout=10)
    yield c
    c.close()


def test_x509_svid_and_bundle_for_py_spiffe(client: WorkloadApiClient, issuer: LocalIssuer):
    svid = client.fetch_x509_svid()
    assert str(svid.spiffe_id) == WORKLOAD_ID
    leaf = svid.leaf
    leaf.verify_directly_issued_by(issuer.ca)
    assert leaf.public_key().public_numbers() == svid.private_key.public_key().public_numbers()
    bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    assert [c.fingerprint(c.signature_hash_algorithm) for c in bundle.x509_authorities] == [
        issuer.ca.fingerprint(issuer.ca.signature_hash_algorithm)
    ]
    # the CSR the agent sent carried no name and a fresh P-256 key
    assert len(issuer.csrs) == 1 and issuer.csrs[0].subject == x509.Name([])


def test_x509_source_from_the_environment(agent: AgentThread, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{agent.socket}")
    source = X509Source(timeout_in_seconds=10)
    try:
        assert str(source.get_x509_context().default_svid.spiffe_id) == WORKLOAD_ID
        assert source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN)) is not None
    finally:
        source.close()


def test_jwt_svid_validates_and_wrong_audience_is_refused(client: WorkloadApiClient):
    svid = client.fetch_jwt_svid(audience={AUDIENCE})
    assert str(svid.spiffe_id) == WORKLOAD_ID
    checked = client.validate_jwt_svid(svid.token, AUDIENCE)
    assert str(checked.spiffe_id) == WORKLOAD_ID
    with pytest.raises(ValidateJwtSvidError, match=r"(?i)audience"):
        client.validate_jwt_svid(svid.token, "another-api")
    # the bundle the API streams verifies it too (the client-side check py-spiffe offers)
    bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    local = JwtSvid.parse_and_validate(svid.token, bundle, {AUDIENCE})
    assert local.spiffe_id == SpiffeId(WORKLOAD_ID)
    with pytest.raises(ValidateJwtSvidError):
        client.validate_jwt_svid(svid.token[:-4] + "AAAA", AUDIENCE)


def test_jwt_source(agent: AgentThread):
    source = JwtSource(socket_path=f"unix://{agent.socket}", timeout_in_seconds=10)
    try:
        svid = source.fetch_svid(audience={AUDIENCE, "second"})
        assert svid.audience == {AUDIENCE, "second"}
        assert source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN)) is not None
    finally:
        source.close()


CALLS = [
    ("FetchX509SVID", "stream", spec.X509SVIDRequest(), spec.X509SVIDResponse),
    ("FetchX509Bundles", "stream", spec.X509BundlesRequest(), spec.X509BundlesResponse),
    ("FetchJWTBundles", "stream", spec.JWTBundlesRequest(), spec.JWTBundlesResponse),
    ("FetchJWTSVID", "unary", spec.JWTSVIDRequest(audience=[AUDIENCE]), spec.JWTSVIDResponse),
    (
        "ValidateJWTSVID",
        "unary",
        spec.ValidateJWTSVIDRequest(audience=AUDIENCE, svid="x.y.z"),
        spec.ValidateJWTSVIDResponse,
    ),
]


@pytest.mark.parametrize(("method", "kind", "request_msg", "reply"), CALLS)
def test_security_header_is_required(agent: AgentThread, method, kind, request_msg, reply):
    with grpc.insecure_channel(agent.endpoint) as channel:
        path = f"/SpiffeWorkloadAPI/{method}"
        ser, de = type(request_msg).SerializeToString, reply.FromString
        call = (channel.unary_stream if kind == "stream" else channel.unary_unary)(
            path, request_serializer=ser, response_deserializer=de
        )
        for metadata in ((), (("workload.spiffe.io", "false"),)):
            with pytest.raises(grpc.RpcError) as refused:
                answer = call(request_msg, metadata=metadata, timeout=10)
                if kind == "stream":
                    next(iter(answer))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == "security header missing from request"
        if kind == "stream":  # with the header: the first message arrives
            stream = call(request_msg, metadata=(("workload.spiffe.io", "true"),), timeout=10)
            assert next(iter(stream)).ByteSize() > 0
            stream.cancel()


def test_fetch_jwt_svid_needs_an_audience(agent: AgentThread):
    with grpc.insecure_channel(agent.endpoint) as channel:
        call = channel.unary_unary(
            "/SpiffeWorkloadAPI/FetchJWTSVID",
            request_serializer=spec.JWTSVIDRequest.SerializeToString,
            response_deserializer=spec.JWTSVIDResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(spec.JWTSVIDRequest(), metadata=(("workload.spiffe.io", "true"),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_socket_mode(agent: AgentThread):
    mode = agent.socket.stat().st_mode  # type: ignore[union-attr]
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o770


def test_rotation_at_half_life_reaches_a_streaming_client(socket_path: Path):
    issuer = LocalIssuer(ttl=4.0)
    running = AgentThread(issuer, socket=socket_path)
    try:
        assert eventually(socket_path.exists, timeout=10)
        client = WorkloadApiClient(socket_path=f"unix://{socket_path}")
        seen: list[tuple[float, x509.Certificate]] = []
        got = threading.Condition()

        def on_success(context) -> None:
            with got:
                seen.append((time.monotonic(), context.default_svid.leaf))
                got.notify_all()

        handle = client.stream_x509_contexts(on_success, lambda exc: None)
        try:
            with got:
                assert got.wait_for(lambda: len(seen) >= 3, timeout=15)
        finally:
            handle.cancel()
            client.close()
        (t0, first), (t1, second), (t2, third) = seen[:3]
        assert 1.0 < t1 - t0 < 3.8 and 1.0 < t2 - t1 < 3.8  # ~half of 4s, before expiry
        keys = {c.public_key().public_numbers() for c in (first, second, third)}
        assert len(keys) == 3  # a new key each time
        assert len({c.serial_number for c in (first, second, third)}) == 3
    finally:
        running.stop()


def test_jwt_svids_reused_per_audience_set(client: WorkloadApiClient):
    first = client.fetch_jwt_svid(audience={AUDIENCE, "second"}).token
    assert client.fetch_jwt_svid(audience={"second", AUDIENCE}).token == first
    assert client.fetch_jwt_svid(audience={"third"}).token != first


PARTNER_TD = "partner.keyless"


def test_federated_bundles_are_served_and_trusted(socket_path: Path):
    partner = LocalIssuer(spiffe_id=f"spiffe://{PARTNER_TD}/ns/shop/sa/web")
    issuer = LocalIssuer(federated={PARTNER_TD: partner.bundle()})
    running = AgentThread(issuer, socket=socket_path)
    client = None
    try:
        assert eventually(socket_path.exists, timeout=10)
        client = WorkloadApiClient(socket_path=f"unix://{socket_path}", default_timeout=10)
        context = client.fetch_x509_context()
        theirs = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(PARTNER_TD))
        assert theirs is not None and len(theirs.x509_authorities) == 1
        bundles = client.fetch_x509_bundles()
        for td in (TRUST_DOMAIN, PARTNER_TD):
            assert bundles.get_bundle_for_trust_domain(TrustDomain(td)) is not None
        jwt_bundles = client.fetch_jwt_bundles()
        assert jwt_bundles.get_bundle_for_trust_domain(TrustDomain(PARTNER_TD)) is not None
        # a partner's JWT-SVID validates against its bundle, not against ours (same kid)
        token = asyncio.run(partner.jwt_svid([AUDIENCE])).token
        assert str(client.validate_jwt_svid(token, AUDIENCE).spiffe_id).startswith(
            f"spiffe://{PARTNER_TD}/"
        )
        impostor = LocalIssuer(spiffe_id=f"spiffe://{PARTNER_TD}/ns/shop/sa/web")
        impostor.jwt_key = issuer.jwt_key  # our trust domain's key, the partner's name
        forged = asyncio.run(impostor.jwt_svid([AUDIENCE])).token
        with pytest.raises(ValidateJwtSvidError):
            client.validate_jwt_svid(forged, AUDIENCE)
    finally:
        if client is not None:
            client.close()
        running.stop()
