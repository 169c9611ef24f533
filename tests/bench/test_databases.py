"""bench/databases.py: the request it replays is what hvac sends for database creds, and its
cells are a list a second study cell (the agent's proxy) can join."""

from __future__ import annotations

from bench import databases, loadgen


def test_creds_request_is_a_vault_get_with_the_token() -> None:
    target = loadgen.Target("127.0.0.1", 8443, host_header="localhost:8443")
    head = databases.creds_bytes(target, "tok").decode()
    assert head.startswith("GET /v1/database/creds/bench.bench HTTP/1.1\r\n")
    assert "\r\nHost: localhost:8443\r\n" in head and "\r\nX-Vault-Token: tok\r\n" in head
    assert head.endswith("\r\n\r\n")


def test_cells_are_named_coroutines() -> None:
    assert databases.CELLS[0][0] == "creds issued"
    assert all(callable(cell) for _, cell in databases.CELLS)
