"""The HTTP stack study's helpers (no server started, no timing asserted).

What makes ``python -m bench stack`` a fair comparison: its uvicorn servers are configured as
keyless's public listener is, every layer answers keyless's hello bytes, the slices alternate,
and the layer table subtracts the right rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bench import loadgen, report, stack, stackapps
from keyless.server import run
from keyless.server.limits import BodyLimit, LimitedHttpTools
from keyless.server.tls import TlsFiles

SAME = (
    "h11_max_incomplete_event_size",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "access_log",
    "lifespan",
    "server_header",
    "date_header",
    "proxy_headers",
    "log_config",
    "limit_concurrency",
    "backlog",
)


def test_uvicorn_servers_are_configured_as_keyless_public_listener(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server-key.pem"
    ours = stackapps.uvicorn_config(stackapps.asgi_hello, cert, key)
    keyless = run._config(stackapps.asgi_hello, "httptools", TlsFiles(cert, cert, key))
    for attr in SAME:
        assert getattr(ours, attr) == getattr(keyless, attr), attr
    assert issubclass(ours.http, LimitedHttpTools) and issubclass(keyless.http, LimitedHttpTools)
    for attr in ("header_timeout", "body_timeout", "header_limit"):
        assert getattr(ours.http, attr) == getattr(keyless.http, attr), attr
    # keyless wraps its app in BodyLimit; the study adds it as a layer of its own.
    assert isinstance(keyless.app, BodyLimit) and ours.app is stackapps.asgi_hello
    assert isinstance(stackapps.layer_app("bodylimit"), BodyLimit)


def test_the_stock_layer_runs_uvicorns_own_protocol(tmp_path: Path) -> None:
    config = stackapps.uvicorn_config(stackapps.asgi_hello, tmp_path / "c", tmp_path / "k", True)
    assert config.http is HttpToolsProtocol


def test_every_layer_has_a_description_and_an_app() -> None:
    assert list(stackapps.LAYERS)[:2] == ["asgi-stock", "asgi"]
    with pytest.raises(ValueError, match="unknown layer"):
        stackapps.layer_app("nginx")


async def _call(
    app: Any, host: bytes = b"localhost:8443", path: str = stackapps.HELLO_PATH
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


@pytest.mark.parametrize("layer", [layer for layer in stackapps.LAYERS if layer != "+access-log"])
async def test_every_layer_answers_keylesss_hello_bytes(layer: str) -> None:
    status, headers, body = await _call(stackapps.layer_app(layer))
    assert (status, body) == (200, stackapps.HELLO_BODY)
    assert headers[b"content-type"] == stackapps.HELLO_TYPE


async def test_the_keyless_stack_layer_keeps_keylesss_host_check() -> None:
    status, _, body = await _call(stackapps.layer_app("keyless-stack"), host=b"a b")
    assert status == 400 and b"Host" in body


async def test_granian_gets_the_keyless_stack_with_lifespan_answered() -> None:
    app = stackapps.granian_asgi_keyless()
    status, _, body = await _call(app)
    assert (status, body) == (200, stackapps.HELLO_BODY)
    inbox = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(inbox)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_the_fast_path_leaves_other_requests_to_keylesss_stack() -> None:
    app = stackapps.layer_app("fast-path")
    status, headers, body = await _call(app)
    assert (status, body) == (200, stackapps.HELLO_BODY) and len(headers[b"x-request-id"]) == 16
    other = stackapps.HELLO_PATH + "/not-here"
    status, _, body = await _call(app, path=other)
    assert status == 404
    status, _, body = await _call(stackapps.granian_asgi_fast_path())
    assert (status, body) == (200, stackapps.HELLO_BODY)


def test_slices_alternate_their_order() -> None:
    cells = ["keyless", "uvicorn asgi", "granian rsgi"]
    assert stack.slice_order(cells, 0) == cells
    assert stack.slice_order(cells, 1) == cells[::-1]
    assert stack.slice_order(cells, 2) == cells


def _row(server: str, group: str, cpu_us: float, conc: int = 64) -> stack.Row:
    result = loadgen.RunResult(1000, 0, 1.0, [0.001] * 10, cpu_us / 1000.0, 0.5)
    return stack.Row(server, group, "hello", "", conc, result, 50.0)


def test_the_layer_table_subtracts_each_step_from_the_one_above() -> None:
    rows = [
        _row("keyless", "keyless", 200.0),
        _row("uvicorn asgi-stock", "layers", 40.0),
        _row("uvicorn asgi", "layers", 50.0),
        _row("uvicorn keyless-stack", "layers", 180.0),
        _row("uvicorn +access-log", "layers", 230.0),
        _row("uvicorn asgi", "layers", 90.0, conc=1),
        _row("uvicorn fast-path", "layers", 60.0),
    ]
    lines = stack.layer_table(rows, 64).splitlines()[2:]
    assert lines == [
        "| asgi-stock | 40.0 |  | 20% |",
        "| asgi | 50.0 | +10.0 (vs asgi-stock) | 25% |",
        "| keyless-stack | 180.0 | +130.0 (vs asgi) | 90% |",
        "| keyless /healthz (the real server) | 200.0 | +20.0 (vs keyless-stack) | 100% |",
        "| keyless-stack +access-log (level info) | 230.0 | +50.0 (vs keyless-stack) | 115% |",
        "| fast-path (proposal, instead of starlette ... keyless-stack) | 60.0 |  | 30% |",
    ]


def test_the_report_renders_from_its_json_alone() -> None:
    rows = [_row("keyless", "keyless", 200.0), _row("granian rsgi", "granian", 30.0)]
    costs = [stack.JsonCost("healthz", 15, 2.0, 2.2, 0.1)]
    args = argparse.Namespace(concurrency=[64], seconds=4.0, max_requests=10, rounds=2, warmup=0.5)
    meta = {"header": "HEADER", "command": "CMD", "wall": 1.0, "load_start": "1", "load_end": "2"}
    data = {"meta": meta, "args": vars(args), "rows": rows, "json": costs, "skipped": ["x"]}
    text = stack.render(json.loads(json.dumps(report.jsonable(data))))
    assert "| granian rsgi | hello | **30.0** | 1,000 |" in text
    assert "| healthz | 15 | 2.00 | 2.20 | 0.10 | 2.10 |" in text
    assert "- x\n" in text
