"""The OpenBao benchmark's Vault-API rows send both systems the same requests (pure: no server).

``bench/openbao.py`` builds each system's ``vault-login`` and ``vault-read`` payloads with
``session_for``; here two systems on different ports, one keyless and one OpenBao, get their
payloads the way the bench gets them, and the bytes are compared: identical but for the Host
header's port and, in the read, the client token each system issued.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Callable
from typing import cast

import h11
import pytest

from bench import openbao, vaultapi

KEYLESS_PORT, OPENBAO_PORT = 8443, 8200
# Kubernetes-token-shaped strings: the builders only copy them into the body.
K8S_TOKENS = [f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ{i}In0.c2ln{i:03d}" for i in range(5)]


def system(kind: str, port: int, client_token: str) -> openbao.System:
    """A System as start_keyless / start_openbao wire it, minus the process."""
    to = vaultapi.target(port, ssl.create_default_context())
    return openbao.System(
        f"{kind} test",
        kind,
        cast(subprocess.Popen[bytes], None),
        to,
        lambda tok: b"",
        b"",
        b"",
        b"",
        b"",
        b"",
        vault_target=to,
        vault_read=vaultapi.read_bytes(to, client_token),
        vault_read_ok=vaultapi.read_ok("v"),
    )


KEYLESS = system("keyless", KEYLESS_PORT, "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
OPENBAO = system("openbao", OPENBAO_PORT, "s.Xk3mM2n0tAtOkEn")


def payloads(s: openbao.System, workload: str) -> list[bytes]:
    return openbao.session_for(s, workload, K8S_TOKENS, mix=20).payloads


def parse(raw: bytes) -> tuple[bytes, bytes, dict[bytes, bytes], bytes]:
    """(method, target, headers, body) as an HTTP/1.1 server reads them; the whole input used."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    req = conn.next_event()
    assert isinstance(req, h11.Request)
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    assert conn.next_event() is h11.NEED_DATA  # nothing left over: one request, exactly
    headers = {bytes(k): bytes(v) for k, v in req.headers}
    assert len(headers) == len(req.headers)  # no header twice
    return bytes(req.method), bytes(req.target), headers, body


@pytest.mark.parametrize("i", range(len(K8S_TOKENS)))
def test_logins_are_the_same_bytes_but_the_port(i: int) -> None:
    ours = payloads(KEYLESS, "vault-login")[i]
    theirs = payloads(OPENBAO, "vault-login")[i]
    assert ours != theirs  # the ports differ ...
    assert ours.replace(b":8443\r\n", b":8200\r\n", 1) == theirs  # ... and only they
    assert vaultapi.same_but_port_and_token(ours, theirs)
    method, target, headers, body = parse(theirs)
    assert (method, target) == (b"PUT", b"/v1/auth/jwt/login")
    assert headers == {
        b"host": b"localhost:8200",
        b"x-vault-request": b"true",
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
    }
    assert json.loads(body) == {"role": "bench", "jwt": K8S_TOKENS[i]}


def test_logins_cycle_the_same_pool_in_the_same_order() -> None:
    ours, theirs = payloads(KEYLESS, "vault-login"), payloads(OPENBAO, "vault-login")
    assert [json.loads(parse(p)[3])["jwt"] for p in ours] == K8S_TOKENS
    assert [json.loads(parse(p)[3])["jwt"] for p in theirs] == K8S_TOKENS


def test_reads_are_the_same_bytes_but_the_port_and_the_token() -> None:
    [ours], [theirs] = payloads(KEYLESS, "vault-read"), payloads(OPENBAO, "vault-read")
    assert vaultapi.same_but_port_and_token(ours, theirs)
    ours_parsed, theirs_parsed = parse(ours), parse(theirs)
    assert ours_parsed[:2] == theirs_parsed[:2] == (b"GET", b"/v1/secret/data/app/db")
    assert ours_parsed[3] == theirs_parsed[3] == b""
    assert theirs_parsed[2] == {
        b"host": b"localhost:8200",
        b"x-vault-request": b"true",
        b"x-vault-token": b"s.Xk3mM2n0tAtOkEn",
    }
    assert ours_parsed[2] == theirs_parsed[2] | {
        b"host": b"localhost:8443",
        b"x-vault-token": b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    }


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda r: r.replace(b"PUT ", b"POST ", 1), id="method"),
        pytest.param(lambda r: r.replace(b"/jwt/", b"/kubernetes/", 1), id="path"),
        pytest.param(lambda r: r.replace(b"localhost:", b"127.0.0.1:", 1), id="host name"),
        pytest.param(lambda r: r.replace(b"\r\n\r\n", b"\r\nAccept: */*\r\n\r\n", 1), id="header"),
        pytest.param(lambda r: r.replace(b'"bench"', b'"bench2"', 1), id="body"),
    ],
)
def test_the_comparison_sees_any_other_difference(other: Callable[[bytes], bytes]) -> None:
    """``same_but_port_and_token`` (what the report's claim rests on) masks nothing else."""
    login = payloads(OPENBAO, "vault-login")[0]
    changed = other(login)
    assert changed != login
    assert not vaultapi.same_but_port_and_token(login, changed)


def test_each_systems_rows_check_the_answer_not_just_the_status() -> None:
    """A 200 without a client token, or without the secret's value, counts as an error."""
    login = openbao.session_for(OPENBAO, "vault-login", K8S_TOKENS, mix=20)
    read = openbao.session_for(OPENBAO, "vault-read", K8S_TOKENS, mix=20)
    assert login.check(200, b'{"auth":{"client_token":"s.x"}}')
    assert not login.check(200, b'{"errors":[]}')
    assert not login.check(403, b'{"auth":{"client_token":"s.x"}}')
    assert read.check(200, b'{"data":{"data":{"value":"v"}}}')
    assert not read.check(200, b'{"data":{"data":null}}')
    assert vaultapi.client_token(200, b'{"auth":{"client_token":"s.x"}}') == "s.x"
    with pytest.raises(RuntimeError, match="HTTP 403"):
        vaultapi.client_token(403, b'{"errors":["permission denied"]}')
