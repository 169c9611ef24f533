"""``keyless issuer add`` over real servers: refused addresses, the first fetch, idempotence.

Three servers: one as in production (no ``--dev``, no allowed network), one whose operator
allows loopback with ``--allow-issuer-network`` (an on-premises cluster stand-in: the issuer is
the server's own tenant, whose discovery document it serves), and one with ``--dev``. The many
address variants go through the admin API (what the command sends); the command itself is run
for its exit status, its one-line messages and its warning.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.jose import public_jwk
from tests.support.server import RunningServer, ServerFactory, free_port, keyless_cmd


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    made = ServerFactory(tmp_path_factory.mktemp("issuer-add"))
    yield made
    made.stop_all()


@pytest.fixture(scope="module")
def prod(factory: ServerFactory) -> RunningServer:
    return factory.start()


@pytest.fixture(scope="module")
def onprem(factory: ServerFactory) -> RunningServer:
    return factory.start(
        "--allow-issuer-network", "127.0.0.0/8", "--allow-issuer-network", "::1/128"
    )


@pytest.fixture(scope="module")
def dev(factory: ServerFactory) -> RunningServer:
    return factory.start(dev=True)


def own_issuer(server: RunningServer) -> str:
    """The server's default tenant as an OIDC issuer (it serves its discovery document)."""
    with server.admin() as admin:
        return str(admin.get("/v1/tenants/default").json()["issuer"])


def post(server: RunningServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with server.admin() as admin:
        answer = admin.post("/v1/issuers", json=body)
    return answer.status_code, answer.json()


def registered(server: RunningServer) -> set[str]:
    with server.admin() as admin:
        return {entry["url"] for entry in admin.get("/v1/issuers").json()}


def add(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("--output", "json", "issuer", "add", *args, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keyless: error: ")
    assert result.stdout == ""
    return lines[0].removeprefix("keyless: error: ")


# -- refused by the address policy -------------------------------------------------------------

REFUSED = [
    pytest.param("{own}", "localhost resolves to |, a loopback address", False, id="own-name"),
    pytest.param(
        "https://127.0.0.1:{port}/x", "127.0.0.1 is a loopback address", False, id="loopback"
    ),
    pytest.param(
        "https://127.0.0.1:{port}/x", "127.0.0.1 is a loopback", True, id="loopback-anyway"
    ),
    pytest.param("https://[::1]:{port}/x", "::1 is a loopback address", False, id="loopback-v6"),
    pytest.param("https://[::ffff:127.0.0.1]:{port}/x", "IPv4-mapped address", False, id="mapped"),
    pytest.param("https://2130706433:{port}/x", "2130706433 is 127.0.0.1", False, id="decimal"),
    pytest.param("https://0x7f.1:{port}/x", "0x7f.1 is 127.0.0.1", False, id="hex"),
    pytest.param("https://169.254.169.254/latest", "cloud metadata address", True, id="metadata"),
    pytest.param("https://[fd00:ec2::254]/", "AWS IPv6 metadata address", False, id="metadata-v6"),
    pytest.param("https://100.100.100.200/", "Alibaba Cloud metadata", True, id="metadata-alibaba"),
    pytest.param("https://10.0.0.5/cluster", "a private address (RFC 1918)", False, id="rfc1918"),
    pytest.param(
        "https://192.168.1.10:6443/c", "a private address (RFC 1918)", True, id="rfc1918-b"
    ),
    pytest.param("https://100.64.0.1/cluster", "carrier-grade NAT", False, id="cgnat"),
    pytest.param("https://[fe80::1]/cluster", "a link-local address", False, id="link-local-v6"),
    pytest.param("https://[fd12::1]/cluster", "a unique local address", False, id="ula"),
    pytest.param("https://0.0.0.0:{port}/x", "unspecified", False, id="unspecified"),
]


@pytest.mark.parametrize(("template", "reason", "anyway"), REFUSED)
def test_refused_address_registers_nothing(
    prod: RunningServer, template: str, reason: str, anyway: bool
) -> None:
    """Refused whatever ``allow_unreachable`` (``anyway``) says: retrying cannot help."""
    url = template.format(own=own_issuer(prod), port=prod.port)
    status, body = post(prod, {"url": url, "allow_unreachable": anyway})
    assert status == 400, body
    message = body["error"]["message"]
    assert message.startswith(f"issuer {url} refused: "), message
    assert all(fragment in message for fragment in reason.split("|")), message
    assert "\n" not in message
    assert url not in registered(prod)


def test_cli_refusal_is_one_line_and_exit_1(prod: RunningServer) -> None:
    for args in ([], ["--allow-unreachable"]):
        message = one_line_error(add(prod, "https://10.0.0.5/cluster", *args))
        assert message == (
            "issuer https://10.0.0.5/cluster refused: 10.0.0.5 is a private address "
            "(RFC 1918); allow it with --allow-issuer-network"
        )
    text = prod.cli("issuer", "add", "https://169.254.169.254/", check=False, process=True)
    assert text.returncode == 1 and len(text.stderr.strip().splitlines()) == 1
    assert text.stderr.strip().endswith(
        "refused unless --allow-issuer-network names exactly 169.254.169.254/32"
    )
    assert registered(prod) & {"https://10.0.0.5/cluster", "https://169.254.169.254/"} == set()


def test_uploaded_jwks_is_never_fetched_so_never_refused(prod: RunningServer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [public_jwk(key.public_key(), "k1", "ES256")]}
    status, body = post(prod, {"url": "https://10.0.0.9/private-cluster", "jwks": jwks})
    assert status == 200, body
    assert body["kids"] == ["k1"] and "warning" not in body


def test_operator_allowed_range_is_fetched(onprem: RunningServer) -> None:
    url = own_issuer(onprem)
    first = add(onprem, url)
    assert first.returncode == 0, first.stderr
    view = json.loads(first.stdout)
    assert view["created"] is True and view["kids"] and view["last_error"] is None
    assert "warning" not in view and first.stderr == ""
    status, again = post(onprem, {"url": url})  # idempotent
    assert status == 200 and again["created"] is False and again["kids"] == view["kids"]
    # Allowing loopback opens nothing else.
    for other, reason in (("https://169.254.169.254/", "metadata"), ("https://10.1.1.1/", "1918")):
        status, body = post(onprem, {"url": other})
        assert status == 400 and reason in body["error"]["message"]


# -- the first fetch ---------------------------------------------------------------------------


def test_dev_cluster_can_be_trusted_before_its_first_token(dev: RunningServer) -> None:
    """The README adds the dev issuer before ``keyless dev token`` first makes the cluster."""
    url = f"{dev.url}/dev/clusters/dev"
    result = add(dev, url)
    assert result.returncode == 0, result.stderr
    kids = json.loads(result.stdout)["kids"]
    assert len(kids) == 1
    token = dev.cli("dev", "token", "--namespace", "a", "--service-account", "b").stdout
    assert jwt.get_unverified_header(token.strip())["kid"] == kids[0]  # made once
    status, other = post(dev, {"url": f"{dev.url}/dev/clusters/ci"})
    assert status == 200 and len(other["kids"]) == 1 and other["kids"] != kids
    status, again = post(dev, {"url": url})
    assert status == 200 and again["created"] is False and again["kids"] == kids


def test_unreachable_issuer_is_not_added_unless_asked(dev: RunningServer) -> None:
    url = f"https://127.0.0.1:{free_port()}/dead-cluster"  # nothing listens there
    message = one_line_error(add(dev, url))
    assert message.startswith(f"issuer {url} unreachable: ConnectError")
    assert message.endswith("issuer not added (--allow-unreachable adds it anyway)")
    assert url not in registered(dev)

    added = add(dev, url, "--allow-unreachable")
    assert added.returncode == 0, added.stderr
    view = json.loads(added.stdout)
    assert view["created"] is True and view["kids"] == []
    assert view["warning"].startswith(f"issuer {url} added, but its keys cannot be fetched now")
    assert view["warning"].endswith("keyless keeps retrying")
    assert added.stderr.strip() == f"keyless: warning: {view['warning']}"
    assert url in registered(dev)

    # Re-adding stays idempotent, but says when the keys are unavailable.
    message = one_line_error(add(dev, url))
    assert message.startswith(f"issuer {url} is already registered, but its keys cannot be")
    status, again = post(dev, {"url": url, "allow_unreachable": True})
    assert status == 200 and again["created"] is False
    assert "already registered, but its keys cannot be fetched now" in again["warning"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        pytest.param("/nowhere", "returned HTTP 404", id="no-discovery-document"),
        pytest.param("/dev/clusters/Not_A_Label", "returned HTTP 404", id="not-a-dev-cluster"),
        pytest.param("/default/v2.0", "issuer mismatch", id="wrong-issuer-in-document"),
    ],
)
def test_broken_discovery_is_not_added(dev: RunningServer, path: str, fragment: str) -> None:
    url = dev.url + path
    status, body = post(dev, {"url": url})
    assert status == 400 and body["error"]["code"] == "issuer_unreachable", body
    message = body["error"]["message"]
    assert fragment in message and message.endswith(
        "issuer not added (--allow-unreachable adds it anyway)"
    )
    assert url not in registered(dev)


@pytest.mark.parametrize("value", [1, "yes", None, [True]], ids=["int", "str", "null", "list"])
def test_allow_unreachable_must_be_a_boolean(dev: RunningServer, value: object) -> None:
    status, body = post(dev, {"url": dev.url + "/x", "allow_unreachable": value})
    assert status == 400 and "allow_unreachable" in body["error"]["message"]


# -- start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["--allow-issuer-network", "10.0.0.0/8", "--allow-issuer-network", "10.0.0.5/8"],
            {},
            "--allow-issuer-network: '10.0.0.5/8' has host bits set; did you mean 10.0.0.0/8?",
            id="flag",
        ),
        pytest.param(
            [],
            {"KEYLESS_ALLOW_ISSUER_NETWORK": "10.0.0.0/8,fd00::/200"},
            "KEYLESS_ALLOW_ISSUER_NETWORK: 'fd00::/200' is not a CIDR like 10.0.0.0/8 or fd00::/8",
            id="env",
        ),
    ],
)
def test_invalid_cidr_fails_at_start(
    tmp_path,  # type: ignore[no-untyped-def]
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    listen = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*keyless_cmd(), "--data-dir", str(tmp_path / "d"), "serve", "--listen", listen, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"keyless: error: {message}"
