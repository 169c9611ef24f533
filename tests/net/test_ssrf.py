"""No request to an address the operator did not mean: the address policy, the guarded network
backend, and the fetcher over real sockets (nothing ever connects to a refused address)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import pytest

from keyless.core.errors import AddressRefused, ConfigError, Unavailable
from keyless.net.addresses import Address, AddressPolicy, parse_ip_literal, parse_network
from keyless.net.connect import GuardedBackend
from keyless.net.fetch import HttpJwksFetcher
from keyless.settings import load_settings
from tests.net.test_fetch import JWKS, LocalServer, Reply
from tests.support.pki import Pki, make_pki

ip = ipaddress.ip_address


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def teredo(server: str, client: str) -> str:
    """A Teredo address: prefix 2001::/32, server, flags and port, then the client (inverted)."""
    value = (0x20010000 << 96) | (int(ip(server)) << 64) | (0x8000_FFFF << 32)
    return str(ipaddress.IPv6Address(value | (~int(ip(client)) & 0xFFFFFFFF)))


# -- the policy (pure) -------------------------------------------------------------------------

REFUSED = [
    # (address, fragment of the reason, fragment of the hint; "" = no hint at all)
    ("127.0.0.1", "loopback", "--dev"),
    ("127.8.9.1", "loopback", "--dev"),
    ("::1", "loopback", "--dev"),
    ("169.254.1.1", "link-local", "--allow-issuer-network"),
    ("fe80::1", "link-local", "--allow-issuer-network"),
    ("fe80::1%eth0", "link-local", "--allow-issuer-network"),
    ("169.254.169.254", "cloud metadata", "exactly 169.254.169.254/32"),
    ("169.254.170.2", "ECS task metadata", "exactly 169.254.170.2/32"),
    ("fd00:ec2::254", "AWS IPv6 metadata", "exactly fd00:ec2::254/128"),
    ("100.100.100.200", "Alibaba Cloud metadata", "exactly 100.100.100.200/32"),
    ("168.63.129.16", "Azure WireServer", "exactly 168.63.129.16/32"),
    ("fd20:ce::254", "Google Cloud IPv6 metadata", "exactly"),
    ("10.0.0.5", "private address (RFC 1918)", "--allow-issuer-network"),
    ("172.16.0.1", "RFC 1918", "--allow-issuer-network"),
    ("172.31.255.255", "RFC 1918", "--allow-issuer-network"),
    ("192.168.1.1", "RFC 1918", "--allow-issuer-network"),
    ("100.64.0.1", "carrier-grade NAT", "--allow-issuer-network"),
    ("100.127.255.254", "carrier-grade NAT", "--allow-issuer-network"),
    ("fc00::1", "unique local", "--allow-issuer-network"),
    ("fd12:3456::1", "unique local", "--allow-issuer-network"),
    ("224.0.0.1", "multicast", ""),
    ("239.255.255.250", "multicast", ""),
    ("ff02::1", "multicast", ""),
    ("0.0.0.0", "unspecified", ""),  # noqa: S104 - an address under test, not a bind
    ("0.1.2.3", "unspecified", ""),
    ("::", "unspecified", ""),
    ("255.255.255.255", "broadcast", ""),
    ("240.0.0.1", "reserved", "--allow-issuer-network"),
    ("192.0.2.1", "documentation", "--allow-issuer-network"),
    ("198.51.100.7", "documentation", "--allow-issuer-network"),
    ("203.0.113.9", "documentation", "--allow-issuer-network"),
    ("2001:db8::1", "documentation", "--allow-issuer-network"),
    ("3fff::1", "documentation", "--allow-issuer-network"),
    ("198.18.0.1", "benchmarking", "--allow-issuer-network"),
    ("198.19.255.255", "benchmarking", "--allow-issuer-network"),
    ("192.0.0.8", "IETF protocol assignment", "--allow-issuer-network"),
    ("100::1", "discard-only", "--allow-issuer-network"),
    ("::2", "reserved", "--allow-issuer-network"),
    ("4000::1", "reserved", "--allow-issuer-network"),
    ("fec0::1", "site-local", "--allow-issuer-network"),
    ("64:ff9b:1::1", "local-use NAT64", "--allow-issuer-network"),
    # IPv6 forms that lead to an IPv4 address are judged by it.
    ("::ffff:127.0.0.1", "IPv4-mapped address of 127.0.0.1, a loopback", "--dev"),
    ("::ffff:10.1.2.3", "IPv4-mapped address of 10.1.2.3, a private", "--allow-issuer-network"),
    ("::ffff:169.254.169.254", "of 169.254.169.254, the cloud metadata", "exactly"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254", "exactly 169.254.169.254/32"),
    ("64:ff9b::7f00:1", "NAT64 address of 127.0.0.1", "--dev"),
    ("2002:a00:5::1", "6to4 address of 10.0.0.5", "--allow-issuer-network"),
    ("2002:7f00:1::", "6to4 address of 127.0.0.1", "--dev"),
    (teredo("65.54.227.120", "127.0.0.1"), "Teredo address of 127.0.0.1", "--dev"),
    (teredo("65.54.227.120", "192.168.0.2"), "Teredo address of 192.168.0.2", "allow it"),
    (teredo("10.0.0.1", "8.8.8.8"), "Teredo address of 10.0.0.1", "allow it"),
]


@pytest.mark.parametrize(("address", "what", "hint"), REFUSED, ids=[r[0] for r in REFUSED])
def test_not_globally_routable_is_refused(address: str, what: str, hint: str) -> None:
    refusal = AddressPolicy().check(ip(address))
    assert refusal is not None
    assert what in refusal.what
    if hint:
        assert hint in refusal.hint
    else:
        assert refusal.hint == ""
    line = refusal.describe(address)
    assert "\n" not in line and line.isascii() and line.startswith(address.split("%")[0])


GLOBAL = [
    "8.8.8.8",
    "1.1.1.1",
    "140.82.112.3",
    "100.63.255.255",  # just below 100.64.0.0/10
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "169.253.255.255",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # DNS64 answers for a public IPv4-only issuer
    "2002:808:808::1",
    teredo("65.54.227.120", "8.8.4.4"),
]


@pytest.mark.parametrize("address", GLOBAL)
def test_globally_routable_is_allowed(address: str) -> None:
    assert AddressPolicy().check(ip(address)) is None


@pytest.mark.parametrize(
    ("allowed", "dev", "address", "verdict"),
    [
        pytest.param(["10.0.0.0/8"], False, "10.1.2.3", True, id="named-range"),
        pytest.param(["10.0.0.0/8"], False, "::ffff:10.1.2.3", True, id="named-range-mapped"),
        pytest.param(["10.0.0.0/8"], False, "64:ff9b::a01:203", True, id="named-range-nat64"),
        pytest.param(["10.0.0.0/8"], False, "172.16.0.1", False, id="other-range"),
        pytest.param(["10.0.0.0/8"], False, "127.0.0.1", False, id="not-loopback"),
        pytest.param(["fd00::/8"], False, "fd12::1", True, id="ula"),
        pytest.param(["fd00::/8"], False, "fc00::1", False, id="ula-outside"),
        pytest.param(["fd00::/8"], False, "fd00:ec2::254", False, id="ula-not-metadata"),
        pytest.param(["169.254.0.0/16"], False, "169.254.1.1", True, id="link-local"),
        pytest.param(["169.254.0.0/16"], False, "169.254.169.254", False, id="ll-not-meta"),
        pytest.param(["169.254.169.254/32"], False, "169.254.169.254", True, id="meta-exact"),
        pytest.param(["169.254.169.254/32"], False, "::ffff:169.254.169.254", True, id="meta-m"),
        pytest.param(["169.254.169.0/24"], False, "169.254.169.254", False, id="meta-wider"),
        pytest.param(["100.64.0.0/10"], False, "100.100.100.200", False, id="cgnat-not-meta"),
        pytest.param(["127.0.0.0/8"], False, "127.0.0.1", True, id="loopback-by-cidr"),
        pytest.param(["0.0.0.0/0"], False, "0.0.0.0", False, id="never-unspecified"),  # noqa: S104
        pytest.param(["0.0.0.0/0"], False, "224.0.0.1", False, id="never-multicast"),
        pytest.param(["0.0.0.0/0"], False, "255.255.255.255", False, id="never-broadcast"),
        pytest.param(["::/0"], False, "::", False, id="never-unspecified-v6"),
        pytest.param(["::/0"], False, "ff02::1", False, id="never-multicast-v6"),
        pytest.param([], True, "127.0.0.1", True, id="dev-loopback"),
        pytest.param([], True, "::1", True, id="dev-loopback-v6"),
        pytest.param([], True, "::ffff:127.0.0.1", True, id="dev-loopback-mapped"),
        pytest.param([], True, "10.0.0.1", False, id="dev-not-private"),
        pytest.param([], True, "169.254.169.254", False, id="dev-not-metadata"),
    ],
)
def test_allowed_networks_and_dev(
    allowed: list[str], dev: bool, address: str, verdict: bool
) -> None:
    policy = AddressPolicy(allow_loopback=dev, allowed=[net(n) for n in allowed])
    assert (policy.check(ip(address)) is None) is verdict


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("10.0.0.5.", "10.0.0.5"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("localhost", None),
        ("oidc.example.test", None),
        ("1.2.3.4.5", None),
        ("256.1.1.1", None),
        ("4294967296", None),
        ("08", None),
        ("0x7g", None),
        ("", None),
    ],
)
def test_ip_literals_in_every_form_resolvers_accept(host: str, expected: str | None) -> None:
    found = parse_ip_literal(host)
    assert found == (ip(expected) if expected else None)


def test_reasons_name_the_host_and_the_address() -> None:
    refusal = AddressPolicy().check(ip("10.0.0.5"))
    assert refusal is not None
    assert refusal.describe("oidc.corp.test") == (
        "oidc.corp.test resolves to 10.0.0.5, a private address (RFC 1918); "
        "allow it with --allow-issuer-network"
    )
    assert refusal.describe("10.0.0.5").startswith("10.0.0.5 is a private address")
    loop = AddressPolicy().check(ip("127.0.0.1"))
    assert loop is not None and loop.describe("2130706433").startswith(
        "2130706433 is 127.0.0.1, a loopback address"
    )


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        pytest.param({}, {}, [], id="default-none"),
        pytest.param({"allow_issuer_network": ["10.0.0.0/8"]}, {}, ["10.0.0.0/8"], id="flag"),
        pytest.param(
            {"allow_issuer_network": ["10.0.0.0/8", "fd00::/8"]},
            {},
            ["10.0.0.0/8", "fd00::/8"],
            id="repeated",
        ),
        pytest.param(
            {},
            {"KEYLESS_ALLOW_ISSUER_NETWORK": "10.0.0.0/8, 192.168.0.0/16,"},
            ["10.0.0.0/8", "192.168.0.0/16"],
            id="env-comma",
        ),
        pytest.param(
            {"allow_issuer_network": ["172.16.0.0/12"]},
            {"KEYLESS_ALLOW_ISSUER_NETWORK": "10.0.0.0/8"},
            ["172.16.0.0/12"],
            id="flag-over-env",
        ),
        pytest.param({"allow_issuer_network": ["10.1.2.3"]}, {}, ["10.1.2.3/32"], id="one-host"),
    ],
)
def test_allow_issuer_network_setting(
    flags: dict[str, Any], env: dict[str, str], expected: list[str]
) -> None:
    settings = load_settings(flags, env)
    assert settings.allow_issuer_networks == tuple(net(n) for n in expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.5/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not a CIDR"),
        ("ten", "not a CIDR"),
        ("fd00::/129", "not a CIDR"),
        ("10.0.0.0/8;rm", "not a CIDR"),
    ],
)
def test_invalid_cidr_fails_at_start_with_one_line(value: str, fragment: str) -> None:
    for flags, env in (
        ({"allow_issuer_network": [value]}, {}),
        ({}, {"KEYLESS_ALLOW_ISSUER_NETWORK": value}),
    ):
        with pytest.raises(ConfigError) as err:
            load_settings(flags, env)
        assert fragment in err.value.message and "\n" not in err.value.message
    with pytest.raises(ValueError, match="--x"):
        parse_network(value, "--x")


# -- the backend: resolve once, check every address, connect to the checked IP ----------------


class FakeResolver:
    """Answers from a table; each answer may be a list (same every time) or a callable."""

    def __init__(self, table: Mapping[str, list[str] | Callable[[], list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.calls.append(host)
        answer = self.table.get(host)
        if answer is None:
            raise OSError(f"no such host {host}")
        if callable(answer):
            answer = answer()
        return [ip(a) for a in answer]


class Recorder(httpcore.AsyncNetworkBackend):
    """An inner backend that records where it is asked to connect and never touches a socket."""

    def __init__(self, fail: Iterable[str] = ()) -> None:
        self.connects: list[tuple[str, int]] = []
        self.fail = set(fail)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host in self.fail:
            raise httpcore.ConnectError("refused")
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def backend(
    table: dict[str, Any] | None = None,
    *,
    allowed: Iterable[str] = (),
    dev: bool = False,
    fail: Iterable[str] = (),
) -> tuple[GuardedBackend, FakeResolver, Recorder]:
    resolver, inner = FakeResolver(table or {}), Recorder(fail)
    policy = AddressPolicy(allow_loopback=dev, allowed=[net(n) for n in allowed])
    return GuardedBackend(policy, resolver=resolver, inner=inner), resolver, inner


@pytest.mark.parametrize(
    ("host", "answers", "fragment"),
    [
        pytest.param("127.0.0.1", None, "127.0.0.1 is a loopback", id="v4-literal"),
        pytest.param("169.254.169.254", None, "metadata", id="metadata-literal"),
        pytest.param("::ffff:127.0.0.1", None, "IPv4-mapped", id="mapped-literal"),
        pytest.param("2130706433", None, "2130706433 is 127.0.0.1", id="decimal"),
        pytest.param("0251.0376.0251.0376", None, "is 169.254.169.254", id="octal"),
        pytest.param("0x7f.1", None, "0x7f.1 is 127.0.0.1", id="hex"),
        pytest.param("corp.test", ["10.0.0.5"], "corp.test resolves to 10.0.0.5", id="private"),
        pytest.param("meta.test", ["169.254.169.254"], "metadata", id="name-to-metadata"),
        pytest.param(
            "mixed.test", ["93.184.216.34", "10.0.0.5"], "resolves to 10.0.0.5", id="mixed"
        ),
        pytest.param("v6.test", ["2606:4700::1", "fd00::1"], "unique local", id="mixed-v6"),
    ],
)
async def test_refused_before_any_connection(
    host: str, answers: list[str] | None, fragment: str
) -> None:
    guarded, resolver, inner = backend({host: answers} if answers else {})
    with pytest.raises(AddressRefused) as err:
        await guarded.connect_tcp(host, 443, timeout=1)
    assert fragment in err.value.message and "\n" not in err.value.message
    assert inner.connects == []
    assert resolver.calls == ([host] if answers else [])  # literals are never looked up


async def test_connects_to_the_checked_ip_literal_not_the_name() -> None:
    guarded, resolver, inner = backend({"oidc.test": ["93.184.216.34", "2606:4700::1"]})
    await guarded.connect_tcp("oidc.test", 443, timeout=1)
    assert inner.connects == [("93.184.216.34", 443)]
    assert resolver.calls == ["oidc.test"]


async def test_next_checked_address_when_one_does_not_answer() -> None:
    guarded, _, inner = backend(
        {"oidc.test": ["2606:4700::1", "93.184.216.34"]}, fail=["2606:4700::1"]
    )
    await guarded.connect_tcp("oidc.test", 443, timeout=1)
    assert inner.connects == [("2606:4700::1", 443), ("93.184.216.34", 443)]


async def test_dns_rebinding_cannot_slip_between_check_and_connect() -> None:
    answers = iter([["127.0.0.1"], ["10.0.0.5"]])
    guarded, resolver, inner = backend(
        {"rebind.test": lambda: next(answers)}, allowed=["127.0.0.1/32"]
    )
    await guarded.connect_tcp("rebind.test", 443, timeout=1)
    assert inner.connects == [("127.0.0.1", 443)]  # the address checked, resolved once
    with pytest.raises(AddressRefused, match=r"resolves to 10\.0\.0\.5"):
        await guarded.connect_tcp("rebind.test", 443, timeout=1)
    assert inner.connects == [("127.0.0.1", 443)]
    assert resolver.calls == ["rebind.test", "rebind.test"]


async def test_name_resolution_failure_and_timeout() -> None:
    guarded, _, inner = backend({})
    with pytest.raises(httpcore.ConnectError, match=r"name resolution of nowhere\.test failed"):
        await guarded.connect_tcp("nowhere.test", 443, timeout=1)

    class Hanging(FakeResolver):
        """A resolver that never answers: only the connect timeout can end the wait."""

        async def resolve(self, host: str, port: int) -> list[Address]:
            self.calls.append(host)
            await asyncio.Event().wait()  # never set
            raise AssertionError("unreachable")

    never = Hanging({})
    hanging = GuardedBackend(AddressPolicy(), resolver=never, inner=inner)
    with pytest.raises(httpcore.ConnectTimeout):
        await hanging.connect_tcp("slow.test", 443, timeout=0.05)
    assert never.calls == ["slow.test"]  # it was asked, and the timeout cut the wait
    assert inner.connects == []


async def test_unix_sockets_are_never_used() -> None:
    guarded, _, _ = backend({})
    with pytest.raises(httpcore.ConnectError):
        await guarded.connect_unix_socket("/var/run/docker.sock")


# -- the fetcher over real sockets -------------------------------------------------------------


@dataclass
class Listener:
    """A plain TCP listener that counts the connections it accepts (and closes them)."""

    host: str
    accepts: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        writer.close()

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    made = await Listener("127.0.0.1").start()
    yield made
    await made.close()


@pytest.fixture
async def listener2() -> AsyncIterator[Listener]:
    made = await Listener("127.0.0.2").start()
    yield made
    await made.close()


@pytest.fixture
async def fetchers() -> AsyncIterator[Callable[..., HttpJwksFetcher]]:
    made: list[HttpJwksFetcher] = []

    def make(**kw: Any) -> HttpJwksFetcher:
        kw.setdefault("dev", False)
        kw.setdefault("timeout", 2.0)
        fetcher = HttpJwksFetcher(**kw)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


@pytest.mark.parametrize(
    ("url", "table", "fragment"),
    [
        pytest.param("https://127.0.0.1:{port}/c", {}, "127.0.0.1 is a loopback", id="literal"),
        pytest.param("https://2130706433:{port}/c", {}, "is 127.0.0.1", id="decimal"),
        pytest.param("https://[::ffff:127.0.0.1]:{port}/c", {}, "IPv4-mapped", id="mapped"),
        pytest.param(
            "https://evil.test:{port}/c",
            {"evil.test": ["127.0.0.1"]},
            "evil.test resolves to 127.0.0.1",
            id="name",
        ),
        pytest.param(
            "https://mixed.test:{port}/c",
            {"mixed.test": ["93.184.216.34", "127.0.0.1"]},
            "resolves to 127.0.0.1",
            id="mixed-answers",
        ),
        pytest.param("http://localhost:{port}/c", {}, "https only", id="http-outside-dev"),
    ],
)
async def test_no_tcp_connection_to_a_refused_address(
    listener: Listener,
    fetchers: Callable[..., HttpJwksFetcher],
    url: str,
    table: dict[str, list[str]],
    fragment: str,
) -> None:
    issuer = url.format(port=listener.port)
    fetcher = fetchers(resolver=FakeResolver(table) if table else None)
    with pytest.raises(Unavailable) as err:
        await fetcher.fetch(issuer)
    message = err.value.message
    assert fragment in message and "\n" not in message
    if "https only" not in message:
        assert isinstance(err.value, AddressRefused)
        assert message.startswith(f"issuer {issuer} refused: ")
    assert listener.accepts == 0
    # The same listener does count connections (the assertion above can fail): allowed, it
    # is reached, and the TLS handshake then fails on its closed connection.
    allowed = fetchers(
        allow_networks=[net("127.0.0.0/8")], resolver=FakeResolver(table) if table else None
    )
    if "https only" not in message:
        with pytest.raises(Unavailable, match="unreachable"):
            await allowed.fetch(issuer)
        assert listener.accepts >= 1


# -- TLS is verified for the URL's host name, while the connection goes to the checked IP ------


@pytest.fixture(scope="module")
def named_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for the name ``issuer.test`` only (no IP address SAN)."""
    return make_pki(
        tmp_path_factory.mktemp("named-pki"), ca_name="ssrf test CA", dns=["issuer.test"]
    )


@pytest.fixture
async def named_server(named_pki: Pki) -> AsyncIterator[LocalServer]:
    server = LocalServer(named_pki.server_context())
    await server.start()
    yield server
    await server.close()


def publish_named(server: LocalServer, host: str, jwks_host: str | None = None) -> str:
    issuer = f"https://{host}:{server.port}/cluster"
    server.routes["/cluster/.well-known/openid-configuration"] = Reply.json(
        {"issuer": issuer, "jwks_uri": f"https://{jwks_host or host}:{server.port}/keys"}
    )
    server.routes["/keys"] = Reply.json(JWKS)
    return issuer


async def test_tls_verifies_the_url_host_name_on_the_checked_ip(
    named_server: LocalServer, named_pki: Pki, fetchers: Callable[..., HttpJwksFetcher]
) -> None:
    resolver = FakeResolver({"issuer.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    fetcher = fetchers(
        extra_ca=named_pki.ca, allow_networks=[net("127.0.0.1/32")], resolver=resolver
    )
    issuer = publish_named(named_server, "issuer.test")
    assert await fetcher.fetch(issuer) == JWKS
    assert named_server.hits == ["/cluster/.well-known/openid-configuration", "/keys"]
    # The same server and address under a name its certificate does not hold: refused by TLS.
    other = publish_named(named_server, "other.test")
    with pytest.raises(Unavailable, match="TLS certificate verification failed"):
        await fetcher.fetch(other)


async def test_jwks_uri_is_checked_too(
    named_server: LocalServer,
    named_pki: Pki,
    listener2: Listener,
    fetchers: Callable[..., HttpJwksFetcher],
) -> None:
    resolver = FakeResolver({"issuer.test": ["127.0.0.1"], "keys.test": ["127.0.0.2"]})
    fetcher = fetchers(
        extra_ca=named_pki.ca, allow_networks=[net("127.0.0.1/32")], resolver=resolver
    )
    issuer = publish_named(named_server, "issuer.test")
    named_server.routes["/cluster/.well-known/openid-configuration"] = Reply.json(
        {"issuer": issuer, "jwks_uri": f"https://keys.test:{listener2.port}/keys"}
    )
    with pytest.raises(AddressRefused) as err:
        await fetcher.fetch(issuer)
    assert err.value.message.startswith(
        f"jwks_uri https://keys.test:{listener2.port}/keys of issuer {issuer} refused: "
        "keys.test resolves to 127.0.0.2, a loopback address"
    )
    assert listener2.accepts == 0
    for literal in ("127.0.0.2", "[::ffff:127.0.0.2]", "2130706434"):
        named_server.routes["/cluster/.well-known/openid-configuration"] = Reply.json(
            {"issuer": issuer, "jwks_uri": f"https://{literal}:{listener2.port}/keys"}
        )
        with pytest.raises(AddressRefused, match=r"jwks_uri .* refused"):
            await fetcher.fetch(issuer)
    assert listener2.accepts == 0


async def test_same_origin_redirect_after_rebinding_is_checked(
    named_server: LocalServer,
    named_pki: Pki,
    listener2: Listener,
    fetchers: Callable[..., HttpJwksFetcher],
) -> None:
    """The discovery document redirects within its origin; by then the name points elsewhere.

    Every request of the test server closes its connection, so the redirect needs a new one,
    which resolves again and is checked again.
    """
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    resolver = FakeResolver({"issuer.test": lambda: next(answers)})
    fetcher = fetchers(
        extra_ca=named_pki.ca, allow_networks=[net("127.0.0.1/32")], resolver=resolver
    )
    issuer = publish_named(named_server, "issuer.test")
    named_server.routes["/cluster/.well-known/openid-configuration"] = Reply.redirect("/moved")
    with pytest.raises(AddressRefused, match=r"issuer\.test resolves to 127\.0\.0\.2"):
        await fetcher.fetch(issuer)
    assert named_server.hits == ["/cluster/.well-known/openid-configuration"]
    assert listener2.accepts == 0
    assert resolver.calls == ["issuer.test", "issuer.test"]


async def test_dev_allows_loopback_but_nothing_else(
    fetchers: Callable[..., HttpJwksFetcher], listener: Listener
) -> None:
    dev = fetchers(dev=True, resolver=FakeResolver({"corp.test": ["10.0.0.5"]}))
    with pytest.raises(AddressRefused, match="private"):
        await dev.fetch("https://corp.test/c")
    with pytest.raises(AddressRefused, match="metadata"):
        await dev.fetch("https://169.254.169.254/latest")
    with pytest.raises(Unavailable, match="unreachable") as err:  # allowed: it connects
        await dev.fetch(f"http://127.0.0.1:{listener.port}/c")
    assert not isinstance(err.value, AddressRefused)
    assert listener.accepts == 1
